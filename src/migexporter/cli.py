"""Entry point: parse settings, choose the vendor library, run collector and server until signalled.

This is the only module that exits the process or decides between real and simulated GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migexporter import __version__, compat, privileges, webconfig
from migexporter.backends import dcgm_bindings
from migexporter.backends.base import BackendUnavailableError
from migexporter.backends.dcgm import DcgmBackend
from migexporter.backends.nvml import NvmlBackend
from migexporter.collector import Collector
from migexporter.config import Config, ConfigError, OneLineParser, build_parser, parse_config
from migexporter.exposition import BuildInfo
from migexporter.pods import PodResourcesWatcher
from migexporter.server import create_app, start_server
from migexporter.webconfig import WebState

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from aiohttp import web

    from migexporter.backends.base import Backend

log = logging.getLogger("migexporter")

EXIT_USAGE = 2
SWITCH_INTERVAL_S = 0.001


class StartupError(Exception):
    """The exporter cannot start; the message is one line for the operator."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; return the process exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    generator = _GENERATORS.get(args[0]) if args else None
    if generator is not None:
        return generator(args[1:])
    if args[:1] == ["help"]:
        print(build_parser(__version__, _SUBCOMMANDS).format_help(), end="")  # noqa: T201
        return 0
    try:
        config = parse_config(args, os.environ, __version__, epilog=_SUBCOMMANDS)
    except ConfigError as error:
        print(f"migexporter: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Sampling and rendering run in worker threads; a short switch interval bounds how long a
    # scrape on the event loop waits for the interpreter lock (p99 at 8x7 GIs: 20 -> 6 ms).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config))
    except StartupError as error:
        print(f"migexporter: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return 0


def _dashboards(args: list[str]) -> int:
    """``migexporter dashboards``: write the Grafana dashboards and, if asked, their previews."""
    parser = OneLineParser(
        prog="migexporter dashboards",
        description="Write the Grafana dashboards, generated from the metric catalog, as JSON.",
    )
    parser.add_argument("--out", type=Path, default=Path("dashboards"), help="(dashboards)")
    parser.add_argument(
        "--preview", type=Path, metavar="DIR", help="also draw each dashboard as DIR/NAME.png"
    )
    parser.add_argument(
        "--prometheus",
        default="http://localhost:9090",
        metavar="URL",
        help="the Prometheus the previews query (http://localhost:9090)",
    )

    def generate(options: argparse.Namespace) -> list[Path]:
        from migexporter.mixin import dashboards, preview  # noqa: PLC0415  (see _GENERATORS)

        written = _write(options.out, dashboards.files())
        if options.preview is not None:
            try:
                written += preview.draw_all(preview.Prometheus(options.prometheus), options.preview)
            except preview.PreviewError as error:
                raise ConfigError(str(error)) from error
        return written

    return _generate(parser, args, generate)


def _alerts(args: list[str]) -> int:
    """``migexporter alerts``: write the alert rules and their PrometheusRule."""
    parser = OneLineParser(
        prog="migexporter alerts",
        description="Write the alert rules, generated from the metric and XID catalogs.",
    )
    parser.add_argument("--out", type=Path, default=Path("alerts"), help="(alerts)")
    from migexporter.mixin import alerts  # noqa: PLC0415  (see _GENERATORS)

    return _generate(parser, args, lambda options: _write(options.out, alerts.files()))


def _kubernetes(args: list[str]) -> int:
    """``migexporter kubernetes``: write the kustomize base."""
    parser = OneLineParser(
        prog="migexporter kubernetes",
        description="Write the Kubernetes kustomize base, with the rules and dashboards in it.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("deploy/kubernetes"), help="(deploy/kubernetes)"
    )
    from migexporter.mixin import manifests  # noqa: PLC0415  (see _GENERATORS)

    return _generate(parser, args, lambda options: _write(options.out, manifests.files()))


def _sim(args: list[str]) -> int:
    """``migexporter sim run``: run a program on a simulated fleet's pynvml."""
    from migexporter.sim import runner  # noqa: PLC0415  (see _GENERATORS)

    if args[:1] != ["run"]:
        message = "the subcommand is `sim run [--fleet SPEC] -- COMMAND`"
        print(f"migexporter sim: error: {message}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    try:
        runner.run(args[1:])
    except ConfigError as error:
        print(f"migexporter sim run: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    return 0  # not reached: the command replaced this process


# Subcommands that write generated files; without one, the command serves metrics. Their modules
# (grafanalib, matplotlib) are imported only when one runs: the exporter never needs them.
_GENERATORS: dict[str, Callable[[list[str]], int]] = {
    "dashboards": _dashboards,
    "alerts": _alerts,
    "kubernetes": _kubernetes,
    "sim": _sim,
}


_SUBCOMMANDS = """subcommands (each takes --help):
  dashboards --out DIR   write the Grafana dashboards (and --preview PNGs)
  alerts --out DIR       write the Prometheus alerting and recording rules
  kubernetes --out DIR   write the kustomize manifests
  sim run [--fleet SPEC] [--control HOST:PORT] -- COMMAND
                         run COMMAND with `import pynvml` answered by a simulated fleet
  help                   this text
"""


def _write(out: Path, files: dict[str, str]) -> list[Path]:
    """Write generated files (name under ``out`` -> text); the paths written."""
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _generate(
    parser: argparse.ArgumentParser,
    args: list[str],
    generate: Callable[[argparse.Namespace], list[Path]],
) -> int:
    """Parse ``args``, generate, list what was written; one line and status 2 on bad input."""
    try:
        for path in generate(parser.parse_args(args)):
            print(path)  # noqa: T201
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except OSError as error:
        where = f"{error.filename}: {error.strerror}"
        print(f"{parser.prog}: error: cannot write {where}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The uvloop loop where installed (about 1.5x the scrapes per second), else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def _simulated(config: Config) -> tuple[Any, Any, Any, Any, Config]:
    """What --simulate runs on: fake pynvml, fleet, scenario (or None), DRA node, config.

    The node (the DRA driver and kubelet) is there when the scenario claims devices, else None,
    and the config returned then asks that kubelet for pods. Installs the fake DCGM engine.
    """
    from migexporter import sim  # noqa: PLC0415  (only simulation needs the simulator)

    spec = config.simulate or "default"
    try:
        if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
            scenario = sim.load_scenario(spec)
            fleet = sim.Fleet.from_spec(scenario.fleet, seed=scenario.seed)
        else:
            scenario, fleet = None, sim.Fleet.from_spec(spec)
    except sim.SimError as error:
        raise StartupError(f"--simulate: {error}") from error
    # The simulated node runs a host engine too, at --dcgm-address when one is given.
    addresses = [config.dcgm_address] if config.dcgm_address else []
    sim.install_dcgm(sim.SimHostEngine(fleet, addresses=addresses))
    node = None
    if scenario is not None and scenario.uses_dra:
        node, config = _simulated_kubelet(config, fleet)
    return sim.FakeNvml(fleet), fleet, scenario, node, config


async def _choose_backend(config: Config, nvml: Any, simulated: bool) -> Backend:
    """The backend --backend asks for; auto tries DCGM first and says why it falls back.

    Raises:
        StartupError: when DCGM was asked for and cannot be used.
    """
    if config.backend == "nvml":
        return NvmlBackend(nvml)
    bindings_dir = config.dcgm_bindings
    if bindings_dir is None and simulated:
        from migexporter import sim  # noqa: PLC0415

        bindings_dir = str(sim.BINDINGS_DIR)
    try:
        bindings = dcgm_bindings.load(bindings_dir)
        backend = DcgmBackend(
            bindings,
            address=config.dcgm_address,
            interval=config.interval,
            nvml=NvmlBackend(nvml),
        )
        await asyncio.to_thread(backend.open)
    except (dcgm_bindings.DcgmNotFoundError, BackendUnavailableError) as error:
        if config.backend == "dcgm":
            raise StartupError(str(error)) from error
        log.info("backend auto: using NVML, because %s", error)
        return NvmlBackend(nvml)
    log.info(
        "backend %s: using DCGM %d (bindings in %s, %s)",
        config.backend,
        bindings.major,
        bindings.path,
        backend.where,
    )
    return backend


async def serve(config: Config) -> None:
    """Start collector and server, run until SIGINT or SIGTERM, then shut down cleanly.

    Raises:
        StartupError: when there is no driver, the fleet is invalid or the port is taken.
    """
    web_state = _web_state(config)
    _say_what_privileges_leave_out(config)
    await _check_listen(config.listen)  # before the GPUs: a taken port fails in a second
    fleet = scenario = node = None
    if config.simulate:
        nvml, fleet, scenario, node, config = _simulated(config)
    else:
        nvml = import_module("pynvml")
    backend = await _choose_backend(config, nvml, fleet is not None)
    bindings_version = "simulated" if fleet else _bindings_version()
    pods = await _pod_watcher(config)
    collector = Collector(
        backend,
        BuildInfo(__version__, bindings_version),
        interval=config.interval,
        topology_refresh=config.topology_refresh,
        pods=pods,
        compat_views=compat.Views(
            tuple(compat.PROFILES[name] for name in config.compat), compat.host_label()
        ),
    )
    try:
        await collector.start()
    except BackendUnavailableError as error:
        if backend.name == "dcgm":
            raise StartupError(str(error)) from error
        raise StartupError(
            f"no NVIDIA driver found ({error}): looked for libnvidia-ml.so.1 through NVML; "
            "run with --simulate to serve a simulated fleet"
        ) from error
    app = create_app(collector, web_state, simulated=fleet is not None)
    background: list[asyncio.Task[None]] = []
    if web_state is not None:
        background.append(asyncio.create_task(web_state.watch(), name="migexporter-web-config"))
    if pods is not None:
        background.append(asyncio.create_task(pods.run(), name="migexporter-pods"))
    if fleet is not None:
        _add_simulation(app, fleet, scenario, background, node)
    host, port = config.listen
    try:
        tls = web_state.listener if web_state is not None else None
        server = await start_server(app, host, port, tls)
    except OSError as error:
        await collector.stop()
        raise _listen_error(config.listen, error) from error
    log.info("serving %d GPUs on %s/metrics", len(collector.topology.gpus), server.url)
    try:
        await _until_signalled()
    finally:
        log.info("shutting down")
        for task in background:
            task.cancel()
        await server.close()
        await collector.stop()
        if node is not None:
            node.kubelet.stop()


def _simulated_kubelet(config: Config, fleet: Any) -> tuple[Any, Config]:
    """The simulated node's kubelet and DRA driver, for a scenario's claims.

    The config returned asks that kubelet for pods.
    """
    import tempfile  # noqa: PLC0415

    from migexporter.sim.kubelet import DraNode, FakeKubelet  # noqa: PLC0415

    socket = str(Path(tempfile.mkdtemp(prefix="migexporter-kubelet-")) / "kubelet.sock")
    node = DraNode(fleet, FakeKubelet(socket).start(), compat.host_label())
    log.info("simulated kubelet with NVIDIA's DRA driver at %s", socket)
    return node, dataclasses.replace(config, pod_resources_socket=socket)


async def _check_listen(listen: tuple[str, int]) -> None:
    """Bind the address once, as the server will, and let it go; StartupError if it cannot."""
    host, port = listen
    try:
        probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, host or None, port)
    except OSError as error:
        raise _listen_error(listen, error) from error
    probe.close()
    await probe.wait_closed()


def _listen_error(listen: tuple[str, int], error: OSError) -> StartupError:
    host, port = listen
    reason = {
        errno.EADDRINUSE: "the port is in use by another process (another exporter?); "
        "choose one with --listen",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
        errno.EADDRNOTAVAIL: "no interface of this machine has that address",
    }.get(error.errno or 0, error.strerror or str(error))
    return StartupError(f"cannot listen on {host or '*'}:{port}: {reason}")


async def _pod_watcher(config: Config) -> PodResourcesWatcher | None:
    """The kubelet watcher, after its first refresh, so the first exposition has the pods."""
    if config.pod_resources_socket is None:
        return None
    pods = PodResourcesWatcher(
        config.pod_resources_socket, refresh=config.pod_refresh, max_age=config.pod_max_age
    )
    await pods.refresh()
    return pods


def _say_what_privileges_leave_out(config: Config) -> None:
    """One line at start naming the features this process is not privileged enough for."""
    if config.simulate:  # the simulator needs no privileges
        return
    embedded_dcgm = config.backend != "nvml" and config.dcgm_address is None
    off = privileges.features_off(embedded_dcgm=embedded_dcgm)
    if off:
        log.warning("without root or CAP_SYS_ADMIN these are off: %s", "; ".join(off))


def _web_state(config: Config) -> WebState | None:
    """The --web-config in force, checked (certificates loaded) before anything starts."""
    if config.web_config is None:
        return None
    try:
        return WebState(webconfig.load(config.web_config))
    except ConfigError as error:
        raise StartupError(str(error)) from error


def _add_simulation(
    app: web.Application,
    fleet: Any,
    scenario: Any,
    background: list[asyncio.Task[None]],
    node: Any = None,
) -> None:
    from migexporter import sim  # noqa: PLC0415

    sim.add_routes(app, fleet)
    if scenario is not None:
        background.append(asyncio.create_task(sim.run_scenario(scenario, fleet, dra=node)))


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
