"""The exporter on a real GPU (MIG disabled): identity, GR-engine activity under load, memory.

Run on a machine with an NVIDIA driver; everything here only reads the GPU. The load comes from
helper scripts run as child processes with torch, on the GPU whose series the test reads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu, Helper

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import ModuleType

pytestmark = pytest.mark.gpu

POLL_S = 0.1
HELPER_START_TIMEOUT_S = 120.0  # importing torch and creating a context can be slow when cold
GR_ACTIVE = "nvidia_gpu_gr_engine_active_ratio"
BUSY_RATIO = 0.8
IDLE_RATIO = 0.1
LOAD_S = 10.0
FALL_LIMIT_S = 5.0
MEMORY_USED = "nvidia_gpu_memory_used_bytes"
ALLOCATION_BYTES = 10 * 2**30  # what hold_memory.py allocates
ALLOCATION_TOLERANCE = 0.02
SETTLED_S = 1.0  # four exporter cycles with the same value
SETTLE_TIMEOUT_S = 20.0


def test_gpu_info_shows_the_gpu_with_mig_disabled_and_no_instances(
    exporter: Exporter, nvml: ModuleType, gpu0: Gpu, figures: dict[str, Any]
) -> None:
    """nvidia_gpu_info describes each GPU as NVML does, MIG disabled, with no instance series."""
    current_mig, _pending = _mig_mode(nvml, gpu0)
    assert current_mig == 0, "this test needs MIG disabled on GPU 0; it never changes MIG mode"
    samples = exporter.samples()
    info = {s.labels["gpu_uuid"]: s.labels for s in samples if s.name == "nvidia_gpu_info"}
    figures["gpus"] = len(info)
    figures["info"] = info.get(gpu0.uuid)
    assert len(info) == nvml.nvmlDeviceGetCount()
    labels = info[gpu0.uuid]
    assert labels["gpu"] == "0"
    assert labels["name"] == str(nvml.nvmlDeviceGetName(gpu0.handle))
    # GPM, which the activity test reads, is Hopper's and later: H100, H200, ...
    assert nvml.nvmlDeviceGetArchitecture(gpu0.handle) >= nvml.NVML_DEVICE_ARCH_HOPPER
    assert labels["driver_version"] == str(nvml.nvmlSystemGetDriverVersion())
    assert labels["mig_mode"] == "disabled"
    instance_series = sorted(
        {s.name for s in samples if s.name.startswith(("nvidia_gpu_instance", "nvidia_compute"))}
    )
    assert instance_series == []
    up = [s.value for s in samples if s.name == "nvidia_gpu_up" and s.labels["gpu"] == "0"]
    assert up == [1.0]


def test_gr_engine_activity_follows_a_matmul_load(
    exporter: Exporter, gpu0: Gpu, figures: dict[str, Any], tmp_path: Path
) -> None:
    """GR-engine activity exceeds 0.8 under bf16 matmuls and drops below 0.1 within 5 s after."""
    idle = _first_below(exporter, gpu0, IDLE_RATIO, SETTLE_TIMEOUT_S)
    figures["ratio_before_load"] = idle
    assert idle is not None, "GPU 0 is busy before the load starts: is another process on it?"
    helper = Helper("matmul_load.py", ("--seconds", str(LOAD_S)), tmp_path / "load.log", gpu0.uuid)
    with helper as load:
        load.expect("started", HELPER_START_TIMEOUT_S)
        ratios: list[float] = []
        deadline = time.monotonic() + LOAD_S + 30
        while (stopped := load.said("stopped")) is None and time.monotonic() < deadline:
            value = exporter.value(GR_ACTIVE, gpu0.uuid)
            if value is not None:
                ratios.append(value)
            time.sleep(POLL_S)
        figures["max_ratio_under_load"] = max(ratios, default=None)
        figures["samples_under_load"] = len(ratios)
        assert stopped is not None, f"the load did not stop within {LOAD_S + 30:g}s"
        after = _first_below(exporter, gpu0, IDLE_RATIO, FALL_LIMIT_S * 3)
        fall_s = None if after is None else round(time.monotonic() - stopped, 3)
        figures["seconds_to_fall_below_0_1"] = fall_s
    assert ratios, f"no {GR_ACTIVE} for GPU 0 while loaded"
    assert max(ratios) > BUSY_RATIO
    assert fall_s is not None, f"{GR_ACTIVE} stayed >= {IDLE_RATIO} for {FALL_LIMIT_S * 3:g}s"
    assert fall_s <= FALL_LIMIT_S


def test_memory_used_rises_by_a_10_gib_allocation(
    exporter: Exporter, nvml: ModuleType, gpu0: Gpu, figures: dict[str, Any], tmp_path: Path
) -> None:
    """nvidia_gpu_memory_used_bytes rises by 10 GiB, within 2 %, when a process allocates that."""
    with Helper("hold_memory.py", (), tmp_path / "memory.log", gpu0.uuid) as holder:
        holder.expect("ctx", HELPER_START_TIMEOUT_S)
        before = _settled(exporter, gpu0, lambda _: True)
        nvml_before = nvml.nvmlDeviceGetMemoryInfo(gpu0.handle).used
        holder.send()
        holder.expect("alloc", HELPER_START_TIMEOUT_S)
        after = _settled(exporter, gpu0, lambda value: value > before + ALLOCATION_BYTES / 2)
        nvml_after = nvml.nvmlDeviceGetMemoryInfo(gpu0.handle).used
    delta = after - before
    figures["memory_used_before_bytes"] = before
    figures["memory_used_after_bytes"] = after
    figures["memory_delta_bytes"] = delta
    figures["nvml_delta_bytes"] = nvml_after - nvml_before  # for comparison, read directly
    assert abs(delta - ALLOCATION_BYTES) <= ALLOCATION_TOLERANCE * ALLOCATION_BYTES


def _mig_mode(nvml: ModuleType, gpu: Gpu) -> tuple[int, int]:
    """(current, pending) MIG mode; a GPU without MIG support counts as disabled."""
    try:
        current, pending = nvml.nvmlDeviceGetMigMode(gpu.handle)
    except nvml.NVMLError_NotSupported:
        return 0, 0
    return int(current), int(pending)


def _first_below(exporter: Exporter, gpu: Gpu, limit: float, timeout: float) -> float | None:
    """Poll GR-engine activity until it is below ``limit``; that value, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = exporter.value(GR_ACTIVE, gpu.uuid)
        if value is not None and value < limit:
            return value
        time.sleep(POLL_S)
    return None


def _settled(exporter: Exporter, gpu: Gpu, accept: Callable[[float], bool]) -> float:
    """Memory used once it has held one accepted value for SETTLED_S; fail after a bound."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    value, since = None, time.monotonic()
    while time.monotonic() < deadline:
        current = exporter.value(MEMORY_USED, gpu.uuid)
        if current != value:
            value, since = current, time.monotonic()
        elif value is not None and accept(value) and time.monotonic() - since >= SETTLED_S:
            return value
        time.sleep(POLL_S)
    pytest.fail(f"{MEMORY_USED} for GPU {gpu.index} did not settle: last {value}")
