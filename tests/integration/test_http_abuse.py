"""Abuse of the exporter's HTTP server: every answer is a well-formed 2xx or 4xx, it stays up,
and its memory and file descriptors come back once the abuse stops.

Raw sockets send what no HTTP client would: garbage, huge request lines and headers, odd
methods and paths; then 1,000 scrapes arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from harness import LOOPBACK, Service, start_exporter, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*\r\n")
CONCURRENT = 1000
RSS_SLACK_KIB = 32 * 1024  # allocator arenas may keep some of what a burst used


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_exporter(tmp_path_factory.mktemp("abuse"))
    yield service
    service.stop()


def _port(exporter: Service) -> int:
    return int(exporter.url.rsplit(":", 1)[1])


def _exchange(exporter: Service, raw: bytes) -> int:
    """Send raw bytes on a fresh connection; the status code of the answer."""
    answer = _send(exporter, raw)
    match = STATUS_LINE.match(answer)
    assert match, f"not an HTTP answer to {raw[:60]!r}: {answer[:200]!r}"
    return int(match[1])


def _send(exporter: Service, raw: bytes) -> bytes:
    """What the server answers to ``raw`` until it closes or falls silent for a second."""
    answer = b""
    with socket.create_connection((LOOPBACK, _port(exporter)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # it may answer and close before taking everything
            sock.sendall(raw)
        sock.settimeout(1.0)
        # A reset comes when it closed with unread data of ours; what it sent first is here.
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _proc(exporter: Service) -> tuple[int, int]:
    """(resident KiB, open file descriptors) of the exporter process."""
    pid = exporter.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


@pytest.mark.parametrize(
    ("raw", "statuses"),
    [
        (b"GARBAGE\r\n\r\n", {400}),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), {400}),  # TLS to plain
        (b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n", {400, 505}),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {400, 414}),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n", {400, 431}),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            {400, 431},
        ),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", {400}),
        (b"GET /metrics\x00 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
        (b"POST /api/sim/xid HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{", {413}),
    ],
)
def test_malformed_requests_get_a_4xx(exporter: Service, raw: bytes, statuses: set[int]) -> None:
    assert _exchange(exporter, raw) in statuses


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
@pytest.mark.parametrize("path", ["/metrics", "/-/ready", "/api/events", "/"])
def test_only_get_and_head_on_read_endpoints(exporter: Service, method: str, path: str) -> None:
    """A known method is not allowed (405); one HTTP does not know is a bad request (400)."""
    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    assert _exchange(exporter, raw) == (400 if method == "FOO" else 405)


@pytest.mark.parametrize(
    "path",
    ["/../../etc/passwd", "/metrics/../../../etc/shadow", "/%00", "/%ff%fe", "/metrics%2f..",
     "//metrics", "/api/sim/../../etc", "/metrics?" + "q=1&" * 500, "/\u00e9t\u00e9"],
)  # fmt: skip
def test_odd_paths_are_404_or_served(exporter: Service, path: str) -> None:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    assert _exchange(exporter, raw) in {200, 400, 404}


def test_head_answers_without_a_body(exporter: Service) -> None:
    raw = b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head, _, body = _send(exporter, raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b""


def test_a_thousand_concurrent_scrapes(exporter: Service) -> None:
    """Each answer is 200, or 429 past the connection cap; afterwards the exporter is up and
    its memory and descriptors are back near where they were."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONCURRENT + 200:  # this process holds every client socket at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CONCURRENT * 4), hard))
    assert exporter.get("/metrics").status == 200  # warm: first-scrape caches exist
    rss_before, fds_before = _proc(exporter)

    async def burst() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def scrape() -> int:
                headers = {"Accept-Encoding": "gzip"}
                async with session.get(exporter.url + "/metrics", headers=headers) as reply:
                    await reply.read()
                    return reply.status

            return await asyncio.gather(*(scrape() for _ in range(CONCURRENT)))

    for _ in range(3):
        statuses = asyncio.run(burst())
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) >= 100
    assert exporter.process.poll() is None
    assert exporter.get("/metrics").status == 200
    fds = wait_for(
        lambda: _proc(exporter)[1], until=lambda n: n <= fds_before + 2, what="descriptors back"
    )
    rss_after, _ = _proc(exporter)
    assert rss_after <= rss_before + RSS_SLACK_KIB, (rss_before, rss_after, fds_before, fds)
