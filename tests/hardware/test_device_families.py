"""The device families dcgm-exporter reports by default, read by the exporter from a real GPU.

Utilization, memory-copy, encoder and decoder utilization, memory temperature, PCIe replays and
traffic, clock events, throttled time, frame buffer free and reserved, and the FP pipe ratios:
each present for GPU 0, in range, and consistent with NVML read directly, idle and under a
bf16 matmul load; utilization and tensor activity rise and fall with GR-engine activity; NVLink
present where NVML reports links, absent where it does not. Everything here only reads the GPU;
the load runs in a child process.
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
IDLE_RATIO = 0.1
TENSOR_BUSY = 0.2  # bf16 products run on the tensor pipes: well above this while GR is busy
FALL_LIMIT_S = 5.0  # NVML utilization averages over up to 1 s, the exporter samples every 0.25 s
FOLLOWERS = (
    "nvidia_gpu_gr_engine_active_ratio",
    "nvidia_gpu_utilization_ratio",
    "nvidia_gpu_tensor_active_ratio",
)
NVLINK = (
    "nvidia_gpu_nvlink_bytes_total",
    "nvidia_gpu_nvlink_bytes_per_second",
    "nvidia_gpu_nvlink_data_bytes_per_second",
)
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


def _followers(exporter: Exporter, gpu: Gpu) -> dict[str, float]:
    series = _gpu_series(exporter, gpu)
    return {name: series[(name, ())] for name in FOLLOWERS if (name, ()) in series}


def test_utilization_and_tensor_activity_rise_and_fall_with_the_gr_engine(
    exporter: Exporter, gpu0: Gpu, figures: dict[str, Any], tmp_path: Path
) -> None:
    """While GR-engine activity is above 0.8 under bf16 products, utilization is too and the
    tensor pipes are busy; once the load stops, all three are below 0.1 within 5 s."""
    timeline: list[tuple[float, dict[str, float]]] = []
    figures["timeline"] = timeline
    with Helper(
        "matmul_load.py", ("--seconds", str(LOAD_S)), tmp_path / "load.log", gpu0.uuid
    ) as load:
        started = load.expect("started", HELPER_START_TIMEOUT_S)
        while (stopped := load.said("stopped")) is None and time.monotonic() < started + 2 * LOAD_S:
            timeline.append((round(time.monotonic() - started, 2), _followers(exporter, gpu0)))
            time.sleep(POLL_S)
        assert stopped is not None, f"the load did not stop within {2 * LOAD_S:g}s"
        fallen_after = None
        while time.monotonic() < stopped + 3 * FALL_LIMIT_S:
            values = _followers(exporter, gpu0)
            timeline.append((round(time.monotonic() - started, 2), values))
            if len(values) == len(FOLLOWERS) and max(values.values()) < IDLE_RATIO:
                fallen_after = round(time.monotonic() - stopped, 2)
                break
            time.sleep(POLL_S)
    figures["seconds_to_fall_below_0_1"] = fallen_after
    busy = [
        v for _, v in timeline if v.get("nvidia_gpu_gr_engine_active_ratio", 0) > BUSY_UTILIZATION
    ]
    figures["busy_samples"] = len(busy)
    assert busy, "GR-engine activity never passed 0.8 under the matmul load"
    assert all(len(v) == len(FOLLOWERS) for v in busy), "a follower series is missing"
    assert max(v["nvidia_gpu_utilization_ratio"] for v in busy) > BUSY_UTILIZATION
    assert max(v["nvidia_gpu_tensor_active_ratio"] for v in busy) > TENSOR_BUSY
    assert fallen_after is not None, f"{FOLLOWERS} not all below {IDLE_RATIO} after the load"
    assert fallen_after <= FALL_LIMIT_S


def test_nvlink_is_served_exactly_where_nvml_answers_it(
    exporter: Exporter, nvml: ModuleType, gpu0: Gpu, figures: dict[str, Any]
) -> None:
    """The byte counters and the data rate are there when NVML's throughput fields answer for
    all links, and absent (NOT_SUPPORTED) otherwise; GPM's NVLink rates are there, >= 0."""
    all_links = 0xFFFFFFFF
    fields = [
        nvml.NVML_FI_DEV_NVLINK_LINK_COUNT,
        (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, all_links),
        (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, all_links),
    ]
    count, tx, rx = nvml.nvmlDeviceGetFieldValues(gpu0.handle, fields)
    figures["nvml_returns"] = {
        "link_count": count.nvmlReturn,
        "tx": tx.nvmlReturn,
        "rx": rx.nvmlReturn,
    }
    if count.nvmlReturn == nvml.NVML_SUCCESS:
        figures["nvml_link_count"] = count.value.uiVal
    answered = tx.nvmlReturn == rx.nvmlReturn == nvml.NVML_SUCCESS
    first = _gpu_series(exporter, gpu0)
    time.sleep(2.0)  # the data rate needs two reads: eight exporter cycles
    later = _gpu_series(exporter, gpu0)
    served = {
        f"{name}{dict(extra)}": value for (name, extra), value in later.items() if name in NVLINK
    }
    figures["nvlink_series"] = served
    for direction in ("tx", "rx"):
        assert _one(later, "nvidia_gpu_nvlink_bytes_per_second", direction=direction) >= 0
    counters = {name for (name, _extra) in later if name in NVLINK[0::2]}
    if not answered:
        assert counters == set()
        return
    assert counters == {NVLINK[0], NVLINK[2]}
    for direction in ("tx", "rx"):
        before = _one(first, NVLINK[0], direction=direction)
        after = _one(later, NVLINK[0], direction=direction)
        assert 0 <= before <= after
    assert _one(later, NVLINK[2]) >= 0
