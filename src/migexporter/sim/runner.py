"""``migexporter sim run``: any program's ``import pynvml`` answered by a simulated fleet.

The program runs in place of this process with the folder of a stand-in ``pynvml`` package first
on PYTHONPATH; the stand-in builds the fleet that the environment describes and installs the
simulated module (``pynvml_module``), and with ``--control`` serves the fleet's control API from
a thread of the program's process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from pathlib import Path

from aiohttp import web

from migexporter.config import ConfigError, OneLineParser, parse_listen
from migexporter.sim import control
from migexporter.sim.fleet import Fleet
from migexporter.sim.profiles import SimError
from migexporter.sim.pynvml_module import install

SHIM = Path(__file__).resolve().parent / "shim"  # holds the stand-in pynvml package
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where migexporter itself is imported from
FLEET_ENV = "MIGEXPORTER_SIM_FLEET"
SEED_ENV = "MIGEXPORTER_SIM_SEED"
CONTROL_ENV = "MIGEXPORTER_SIM_CONTROL"


def parser() -> argparse.ArgumentParser:
    """The command line of ``migexporter sim run``."""
    found = OneLineParser(
        prog="migexporter sim run",
        description="Run COMMAND with `import pynvml` answered by a simulated fleet.",
    )
    found.add_argument("--fleet", default="default", help="a fleet spec, or 'default'")
    found.add_argument("--seed", type=int, default=0, help="the simulated workloads' seed (0)")
    found.add_argument(
        "--control",
        metavar="HOST:PORT",
        help="serve the fleet's control API (/api/sim/...) there, from the program's process",
    )
    found.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return found


def run(args: list[str]) -> None:
    """Replace this process with the command.

    Raises:
        ConfigError: the command line is wrong or the command cannot be run (one line).
    """
    options = parser().parse_args(args)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        raise ConfigError("give the command to run after --, for example -- nvitop --once")
    try:
        Fleet.from_spec(options.fleet, seed=options.seed)  # a bad spec fails here, in one line
        if options.control is not None:
            parse_listen(options.control)
    except (SimError, ValueError) as error:
        raise ConfigError(str(error)) from None
    # The stand-in first; migexporter last, for a program whose Python lacks it on its own path.
    pythonpath = [str(SHIM), *filter(None, [os.environ.get("PYTHONPATH")]), str(PACKAGE_ROOT)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(pythonpath),
        FLEET_ENV: options.fleet,
        SEED_ENV: str(options.seed),
    }
    if options.control is not None:
        env[CONTROL_ENV] = options.control
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 (running the user's command is the point)
    except OSError as error:
        raise ConfigError(f"cannot run {command[0]}: {error.strerror}") from None


def install_from_environment() -> None:
    """In the program: install the simulated module over the fleet the environment names."""
    seed = int(os.environ.get(SEED_ENV, "0"))
    fleet = Fleet.from_spec(os.environ.get(FLEET_ENV, "default"), seed=seed)
    install(fleet)
    listen = os.environ.get(CONTROL_ENV)
    if listen:
        host, port = parse_listen(listen)
        threading.Thread(target=_serve_control, args=(fleet, host, port), daemon=True).start()


def _serve_control(fleet: Fleet, host: str, port: int) -> None:
    app = web.Application()
    control.add_routes(app, fleet)
    asyncio.run(_serve(app, host, port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or None, port).start()
    await asyncio.Event().wait()  # until the program exits (a daemon thread)
