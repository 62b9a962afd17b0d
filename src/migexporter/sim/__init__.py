"""The simulator behind ``--simulate``: fake ``pynvml`` and DCGM backed by a simulated fleet."""

from __future__ import annotations

from migexporter.sim.control import add_routes
from migexporter.sim.dcgm_engine import BINDINGS_DIR, SimHostEngine
from migexporter.sim.dcgm_engine import install as install_dcgm
from migexporter.sim.dcgm_engine import uninstall as uninstall_dcgm
from migexporter.sim.fleet import Fleet
from migexporter.sim.nvml import FakeNvml
from migexporter.sim.profiles import SimError
from migexporter.sim.scenario import Scenario, load_scenario, run_scenario

__all__ = [
    "BINDINGS_DIR",
    "FakeNvml",
    "Fleet",
    "Scenario",
    "SimError",
    "SimHostEngine",
    "add_routes",
    "install_dcgm",
    "load_scenario",
    "run_scenario",
    "uninstall_dcgm",
]
