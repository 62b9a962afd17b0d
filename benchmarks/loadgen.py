"""A closed-loop HTTP load generator for the benchmarks, run in its own process.

Usage: python benchmarks/loadgen.py URL --clients C --requests N [--gzip]

C keep-alive connections each send GET requests one after another until N requests have been
answered in all; every request's latency (send to last body byte) is measured. Prints one JSON
object: latencies in seconds (sorted), wall time, bytes received, and the non-200 count. Runs in
a process of its own so that its work never shares an interpreter lock with the server's.
Loopback only: it refuses any other host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


@dataclass
class _Load:
    """What all clients of one run share: the request, what is left to send, what came back."""

    host: str
    port: int
    request: bytes
    left: int
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    errors: int = 0


async def _client(load: _Load) -> None:
    reader = writer = None
    try:
        while load.left > 0:
            load.left -= 1
            started = time.perf_counter()
            if writer is None:  # servers that close after each response cost a connect each
                reader, writer = await asyncio.open_connection(load.host, load.port)
            assert reader is not None
            writer.write(load.request)
            head = await reader.readuntil(b"\r\n\r\n")
            fields = {
                name.strip().lower(): value.strip().lower()
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
            }
            if b"content-length" in fields:
                body = await reader.readexactly(int(fields[b"content-length"]))
            else:
                body = await reader.read()
            load.latencies.append(time.perf_counter() - started)
            load.bytes += len(body)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                load.errors += 1
            if fields.get(b"connection") == b"close" or head.startswith(b"HTTP/1.0"):
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def run(url: str, clients: int, requests: int, gzip: bool) -> dict[str, object]:
    """Send ``requests`` GETs to ``url`` over ``clients`` connections; the figures as a dict."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname != LOOPBACK or parts.port is None:
        raise SystemExit(f"loadgen: only {LOOPBACK}:PORT URLs, not {url}")
    encoding = b"Accept-Encoding: gzip\r\n" if gzip else b""
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode()
        + encoding
        + b"Connection: keep-alive\r\n\r\n"
    )
    load = _Load(LOOPBACK, parts.port, request, requests)
    started = time.perf_counter()
    await asyncio.gather(*(_client(load) for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "latencies_s": sorted(load.latencies),
        "wall_s": wall,
        "bytes": load.bytes,
        "errors": load.errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < args.clients:
        parser.error("need at least one client and at least one request per client")
    try:  # a faster loop, where installed, keeps the client from being what is measured
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.clients, args.requests, args.gzip))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
