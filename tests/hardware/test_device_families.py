"""The device families dcgm-exporter reports by default, read by the exporter from a real GPU.

Utilization, memory-copy, encoder and decoder utilization, memory temperature, PCIe replays and
traffic, clock events, throttled time, frame buffer free and reserved, and the FP pipe ratios:
each present for GPU 0, in range, and consistent with NVML read directly, idle and under a
bf16 matmul load. Everything here only reads the GPU; the load runs in a child process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu, Helper

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

pytestmark = pytest.mark.gpu

HELPER_START_TIMEOUT_S = 120.0
LOAD_S = 12.0
BUSY_UTILIZATION = 0.8
POLL_S = 0.25
WAIT_S = 10.0
RATIOS = (
    "nvidia_gpu_utilization_ratio",
    "nvidia_gpu_memory_copy_utilization_ratio",
    "nvidia_gpu_encoder_utilization_ratio",
    "nvidia_gpu_decoder_utilization_ratio",
    "nvidia_gpu_fp64_active_ratio",
    "nvidia_gpu_fp32_active_ratio",
    "nvidia_gpu_fp16_active_ratio",
)
REASONS = 9  # the bits of nvmlClocksEventReasonAll the exporter names
TEMPERATURE_SLACK_C = 5  # the exporter's reading is up to one cycle older than NVML's own
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (name, other labels) -> value


def _gpu_series(exporter: Exporter, gpu: Gpu) -> Series:
    """Every series of GPU 0 in one scrape, keyed by name and the labels beside the GPU's."""
    found = {}
    for sample in exporter.samples():
        if sample.labels.get("gpu_uuid") != gpu.uuid or "gpu_instance_id" in sample.labels:
            continue
        extra = tuple(
            sorted((k, v) for k, v in sample.labels.items() if k not in ("gpu", "gpu_uuid"))
        )
        found[(sample.name, extra)] = sample.value
    return found


def _one(series: Series, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in series, f"no {name}{labels or ''} for GPU 0"
    return series[key]


def _busy(exporter: Exporter, gpu: Gpu) -> Series | None:
    """The GPU's series once its NVML utilization is above BUSY_UTILIZATION, or None."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        series = _gpu_series(exporter, gpu)
        if series.get(("nvidia_gpu_utilization_ratio", ()), 0.0) > BUSY_UTILIZATION:
            return series
        time.sleep(POLL_S)
    return None


def test_device_families_are_present_and_in_range(
    exporter: Exporter, nvml: ModuleType, gpu0: Gpu, figures: dict[str, Any], tmp_path: Path
) -> None:
    """Every device family of GPU 0 is there, in range, and moves with a matmul load."""
    idle = _gpu_series(exporter, gpu0)
    with Helper(
        "matmul_load.py", ("--seconds", str(LOAD_S)), tmp_path / "load.log", gpu0.uuid
    ) as load:
        load.expect("started", HELPER_START_TIMEOUT_S)
        busy = _busy(exporter, gpu0)
        time.sleep(2.0)
        later = _gpu_series(exporter, gpu0)
        memory_temp_nvml = nvml.nvmlDeviceGetFieldValues(
            gpu0.handle, [nvml.NVML_FI_DEV_MEMORY_TEMP]
        )[0]
    figures["idle"] = {
        f"{name}{dict(extra)}": value for (name, extra), value in idle.items() if name in RATIOS
    }
    assert busy is not None, "NVML utilization never passed 0.8 under the matmul load"
    figures["busy"] = {f"{name}{dict(extra)}": value for (name, extra), value in busy.items()}
    for series in (idle, busy):
        for name in RATIOS:
            assert 0.0 <= _one(series, name) <= 1.0, name
        total = _one(series, "nvidia_gpu_memory_total_bytes")
        parts = sum(
            _one(series, f"nvidia_gpu_memory_{part}_bytes") for part in ("used", "free", "reserved")
        )
        assert abs(parts - total) <= 4 << 20  # free + used + reserved is the frame buffer
        assert 10 <= _one(series, "nvidia_gpu_memory_temperature_celsius") <= 100
        assert _one(series, "nvidia_gpu_pcie_replays_total") >= 0
        for direction in ("tx", "rx"):
            assert _one(series, "nvidia_gpu_pcie_bytes_per_second", direction=direction) >= 0
        reasons = {
            dict(extra)["reason"]: value
            for (name, extra), value in series.items()
            if name == "nvidia_gpu_clock_event_active"
        }
        assert len(reasons) == REASONS
        assert set(reasons.values()) <= {0.0, 1.0}
    assert _one(idle, "nvidia_gpu_utilization_ratio") < BUSY_UTILIZATION
    busy_reasons = {
        dict(extra)["reason"]
        for (name, extra), value in busy.items()
        if name == "nvidia_gpu_clock_event_active" and value
    }
    assert "gpu_idle" not in busy_reasons
    for cause in ("power", "thermal"):
        before = _one(idle, "nvidia_gpu_throttled_seconds_total", cause=cause)
        after = _one(later, "nvidia_gpu_throttled_seconds_total", cause=cause)
        figures[f"throttled_{cause}_s"] = [before, after]
        assert 0 <= before <= after
    assert memory_temp_nvml.nvmlReturn == nvml.NVML_SUCCESS
    exported = _one(later, "nvidia_gpu_memory_temperature_celsius")
    assert abs(exported - memory_temp_nvml.value.uiVal) <= TEMPERATURE_SLACK_C
    supported = {
        s.labels["field"]: s.value
        for s in exporter.samples()
        if s.name == "migexporter_field_supported" and s.labels["gpu_uuid"] == gpu0.uuid
    }
    figures["field_supported"] = supported
    assert all(supported[str(field)] == 1.0 for field in range(1001, 1011))
