"""Entry point: parse settings, choose the vendor library, run collector and server until signalled.

This is the only module that exits the process or decides between real and simulated GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migexporter import __version__
from migexporter.backends.base import BackendUnavailableError
from migexporter.backends.nvml import NvmlBackend
from migexporter.collector import Collector
from migexporter.config import Config, ConfigError, parse_config
from migexporter.exposition import BuildInfo
from migexporter.server import create_app, start_server

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp import web

log = logging.getLogger("migexporter")

EXIT_USAGE = 2


class StartupError(Exception):
    """The exporter cannot start; the message is one line for the operator."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; return the process exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_config(args, os.environ, __version__)
    except ConfigError as error:
        print(f"migexporter: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except StartupError as error:
        print(f"migexporter: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return 0


def _simulated(spec: str) -> tuple[Any, Any, Any]:
    """(fake pynvml, fleet, scenario or None) for a --simulate value."""
    from migexporter import sim  # noqa: PLC0415  (only simulation needs the simulator)

    try:
        if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
            scenario = sim.load_scenario(spec)
            fleet = sim.Fleet.from_spec(scenario.fleet, seed=scenario.seed)
        else:
            scenario, fleet = None, sim.Fleet.from_spec(spec)
    except sim.SimError as error:
        raise StartupError(f"--simulate: {error}") from error
    return sim.FakeNvml(fleet), fleet, scenario


def _vendor_library(config: Config) -> tuple[Any, Any, Any]:
    """(pynvml or its fake, fleet, scenario); the one place that picks real or simulated GPUs."""
    if config.simulate:
        return _simulated(config.simulate)
    if config.backend == "auto":
        log.info("backend auto: using NVML (the DCGM backend is not part of this build)")
    return import_module("pynvml"), None, None


async def serve(config: Config) -> None:
    """Start collector and server, run until SIGINT or SIGTERM, then shut down cleanly.

    Raises:
        StartupError: when there is no driver, the fleet is invalid or the port is taken.
    """
    nvml, fleet, scenario = _vendor_library(config)
    bindings_version = "simulated" if fleet else _bindings_version()
    collector = Collector(
        NvmlBackend(nvml),
        BuildInfo(__version__, bindings_version),
        interval=config.interval,
        topology_refresh=config.topology_refresh,
    )
    try:
        await collector.start()
    except BackendUnavailableError as error:
        raise StartupError(
            f"no NVIDIA driver found ({error}): looked for libnvidia-ml.so.1 through NVML; "
            "run with --simulate to serve a simulated fleet"
        ) from error
    app = create_app(collector)
    background: list[asyncio.Task[None]] = []
    if fleet is not None:
        _add_simulation(app, fleet, scenario, background)
    host, port = config.listen
    try:
        server = await start_server(app, host, port)
    except OSError as error:
        await collector.stop()
        raise StartupError(f"cannot listen on {host or '*'}:{port}: {error.strerror}") from error
    log.info("serving %d GPUs on %s/metrics", len(collector.topology.gpus), server.url)
    try:
        await _until_signalled()
    finally:
        log.info("shutting down")
        for task in background:
            task.cancel()
        await server.close()
        await collector.stop()


def _add_simulation(
    app: web.Application, fleet: Any, scenario: Any, background: list[asyncio.Task[None]]
) -> None:
    from migexporter import sim  # noqa: PLC0415

    sim.add_routes(app, fleet)
    if scenario is not None:
        background.append(asyncio.create_task(sim.run_scenario(scenario, fleet)))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def _bindings_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("nvidia-ml-py")
    except PackageNotFoundError:
        return ""
