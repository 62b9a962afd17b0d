"""The baseline: migexporter's collector on the same simulated fleet, served the common way.

Usage: python benchmarks/baseline_server.py SPEC PORT [INTERVAL]

The collector samples exactly as in the exporter and the HTTP server is the same aiohttp, but
/metrics runs prometheus-client's ``generate_latest`` over a registry on every request (and
gzips per request when asked), as most Python exporters do. Only the rendering strategy differs
from the exporter under test. (prometheus-client's own ``start_http_server`` would be slower
still: no keep-alive and a listen backlog of 5 that drops connects under concurrency.)
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from migexporter import sim
from migexporter.backends.nvml import NvmlBackend
from migexporter.collector import Collector
from migexporter.config import parse_duration
from migexporter.exposition import BuildInfo
from migexporter.server import start_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

LOOPBACK = "127.0.0.1"


class _PerRequest:
    """A registry collector that turns the collector's latest state into families per request."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        return self._collector.snapshot().collect()


async def serve(spec: str, port: int, interval: float) -> None:
    fleet = sim.Fleet.from_spec(spec)
    backend = NvmlBackend(sim.FakeNvml(fleet))
    collector = Collector(backend, BuildInfo("baseline"), interval=interval)
    await collector.start()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PerRequest(collector))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    await start_server(app, LOOPBACK, port)  # the exporter's own server setup
    await asyncio.Event().wait()  # until terminated


def main() -> int:
    spec, port = sys.argv[1], int(sys.argv[2])
    interval = parse_duration(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    asyncio.run(serve(spec, port, interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
