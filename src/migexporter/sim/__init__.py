"""The simulator behind ``--simulate``: a fake ``pynvml`` backed by a simulated MIG fleet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migexporter.sim.fleet import Fleet
from migexporter.sim.nvml import FakeNvml
from migexporter.sim.profiles import SimError
from migexporter.sim.scenario import Scenario, load_scenario, run_scenario

if TYPE_CHECKING:
    from migexporter.sim.control import add_routes

__all__ = [
    "FakeNvml",
    "Fleet",
    "Scenario",
    "SimError",
    "add_routes",
    "load_scenario",
    "run_scenario",
]


def __getattr__(name: str) -> Any:
    # aiohttp is only needed by the control API: import it when someone asks for it.
    if name == "add_routes":
        from migexporter.sim.control import add_routes  # noqa: PLC0415

        return add_routes
    raise AttributeError(name)
