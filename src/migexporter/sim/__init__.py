"""The simulator behind ``--simulate``: a fake ``pynvml`` backed by a simulated MIG fleet."""

from __future__ import annotations

from migexporter.sim.control import add_routes
from migexporter.sim.fleet import Fleet
from migexporter.sim.nvml import FakeNvml
from migexporter.sim.profiles import SimError
from migexporter.sim.scenario import Scenario, load_scenario, run_scenario

__all__ = [
    "FakeNvml",
    "Fleet",
    "Scenario",
    "SimError",
    "add_routes",
    "load_scenario",
    "run_scenario",
]
