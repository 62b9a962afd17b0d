"""--backend: auto prefers DCGM and says why it falls back; an explicit dcgm fails in one line."""

from __future__ import annotations

import logging
import sys

import pytest

from migexporter.backends import dcgm_bindings
from migexporter.backends.dcgm import DcgmBackend
from migexporter.backends.nvml import NvmlBackend
from migexporter.cli import StartupError, _choose_backend, _simulated
from migexporter.config import parse_config
from migexporter.sim import uninstall_dcgm


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No real install paths, no environment, and the bindings' modules put back afterwards."""
    monkeypatch.setattr(dcgm_bindings, "INSTALL_PATHS", ())
    monkeypatch.delenv(dcgm_bindings.ENV_VARIABLE, raising=False)
    saved = {name: sys.modules.get(name) for name in dcgm_bindings.MODULES}
    yield
    uninstall_dcgm()
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


async def choose(*args: str, before=None):
    config = parse_config(["--simulate", *args], {})
    nvml, fleet, *_ = _simulated(config)
    if before is not None:
        before(fleet)
    return await _choose_backend(config, nvml, simulated=True)


async def test_auto_picks_dcgm_when_bindings_load_and_the_engine_answers(caplog):
    caplog.set_level(logging.INFO, logger="migexporter")
    backend = await choose("--backend", "auto")
    try:
        assert isinstance(backend, DcgmBackend)
        assert any("using DCGM 4" in r.getMessage() for r in caplog.records)
    finally:
        backend.close()


async def test_auto_falls_back_to_nvml_naming_the_missing_bindings(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="migexporter")
    backend = await choose("--backend", "auto", "--dcgm-bindings", str(tmp_path))
    assert isinstance(backend, NvmlBackend)
    [line] = [r.getMessage() for r in caplog.records if "using NVML" in r.getMessage()]
    assert str(tmp_path) in line
    assert "dcgm_structs.py" in line


async def test_auto_falls_back_to_nvml_when_no_host_engine_answers(caplog):
    caplog.set_level(logging.INFO, logger="migexporter")
    backend = await choose(
        "--backend",
        "auto",
        "--dcgm-address",
        "127.0.0.1:5555",
        before=lambda fleet: fleet.fault(None, "hostengine_down"),
    )
    assert isinstance(backend, NvmlBackend)
    [line] = [r.getMessage() for r in caplog.records if "using NVML" in r.getMessage()]
    assert "127.0.0.1:5555" in line


async def test_explicit_dcgm_without_bindings_is_a_startup_error(tmp_path):
    with pytest.raises(StartupError, match="no DCGM Python bindings in"):
        await choose("--backend", "dcgm", "--dcgm-bindings", str(tmp_path))


async def test_explicit_nvml_never_touches_dcgm():
    backend = await choose("--backend", "nvml", "--dcgm-bindings", "/")
    assert isinstance(backend, NvmlBackend)
