"""Simulated activity: consistent GPM readings, memory, power and energy over time."""

from __future__ import annotations

import random

import pynvml
import pytest

from manual_clock import ManualClock
from migexporter.sim import FakeNvml, Fleet
from migexporter.sim._workload import (
    DECODE,
    FP16,
    FP32,
    FP64,
    GR,
    NVLINK_RX,
    NVLINK_TX,
    PCIE_RX,
    PCIE_TX,
    SM,
    WIDTH,
    Workload,
)

IDS = (
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL,
    pynvml.NVML_GPM_METRIC_SM_UTIL,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
)
EPSILON = 1e-9
WIDTH_BEFORE = 6  # GR, SM, OCCUPANCY, TENSOR, DRAM, MEMORY: the levels of the first version


def open_nvml(spec: str = "default", seed: int = 0) -> tuple[FakeNvml, ManualClock]:
    clock = ManualClock(50.0)
    fake = FakeNvml(Fleet.from_spec(spec, seed=seed, clock=clock))
    fake.nvmlInit()
    return fake, clock


def metrics(nv: FakeNvml, first: object, second: object, ids=IDS) -> list[tuple[int, float]]:
    """(nvmlReturn, value) per metric id between two samples."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(ids)
    request.sample1, request.sample2 = first, second
    for position, metric_id in enumerate(ids):
        request.metrics[position].metricId = metric_id
    nv.nvmlGpmMetricsGet(request)
    return [(request.metrics[i].nvmlReturn, request.metrics[i].value) for i in range(len(ids))]


def ratios(nv: FakeNvml, first: object, second: object) -> dict[str, float]:
    """The five activities as 0-1 ratios, as a backend converts GPM percent."""
    results = metrics(nv, first, second)
    assert all(code == pynvml.NVML_SUCCESS for code, _ in results)
    names = ("gr", "sm", "occupancy", "tensor", "dram")
    return {name: value / 100 for name, (_, value) in zip(names, results, strict=True)}


def mig_handles(nv: FakeNvml, gpu: int) -> list[object]:
    device = nv.nvmlDeviceGetHandleByIndex(gpu)
    handles = []
    for index in range(nv.nvmlDeviceGetMaxMigDeviceCount(device)):
        try:
            handles.append(nv.nvmlDeviceGetMigDeviceHandleByIndex(device, index))
        except pynvml.NVMLError_NotFound:
            continue
    return handles


def test_activity_ratios_are_ordered_and_bounded_in_every_window():
    """For every CI, GI and GPU and every window: 0 <= tensor <= sm <= gr <= 1, occ <= sm."""
    nv, clock = open_nvml()
    targets = []  # (sampler, previous sample, current sample)
    for gpu in range(3):
        device = nv.nvmlDeviceGetHandleByIndex(gpu)
        targets.append(lambda s, d=device: nv.nvmlGpmSampleGet(d, s))
        for mig in mig_handles(nv, gpu):
            targets.append(lambda s, m=mig: nv.nvmlGpmSampleGet(m, s))
            gi_id = nv.nvmlDeviceGetGpuInstanceId(mig)
            targets.append(lambda s, d=device, g=gi_id: nv.nvmlGpmMigSampleGet(d, g, s))
    samples = [[nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()] for _ in targets]
    for take, (first, _) in zip(targets, samples, strict=True):
        take(first)
    steps = random.Random(7)  # noqa: S311 (reproducible test data)
    seen_idle = seen_busy = 0
    for window in range(150):
        clock.now += steps.uniform(0.2, 9.0)
        for take, pair in zip(targets, samples, strict=True):
            older, newer = pair[window % 2], pair[1 - window % 2]
            take(newer)
            r = ratios(nv, older, newer)
            assert -EPSILON <= r["tensor"] <= r["sm"] + EPSILON
            assert r["sm"] <= r["gr"] + EPSILON
            assert r["gr"] <= 1 + EPSILON
            assert r["occupancy"] <= r["sm"] + EPSILON
            assert -EPSILON <= r["dram"] <= r["gr"] + EPSILON
            seen_idle += r["gr"] == 0
            seen_busy += r["gr"] > 0.5
    assert seen_idle > 0  # some instances sit idle for whole windows
    assert seen_busy > 0


def test_averages_are_exact_over_any_window():
    """A long window's average is the time-weighted mean of its sub-windows, like counters."""
    nv, clock = open_nvml()
    mig = mig_handles(nv, 1)[3]
    a, b, c = (nv.nvmlGpmSampleAlloc() for _ in range(3))
    nv.nvmlGpmSampleGet(mig, a)
    clock.now += 17.5
    nv.nvmlGpmSampleGet(mig, b)
    clock.now += 41.25
    nv.nvmlGpmSampleGet(mig, c)
    whole, first, second = ratios(nv, a, c), ratios(nv, a, b), ratios(nv, b, c)
    for name, value in whole.items():
        assert value == pytest.approx((first[name] * 17.5 + second[name] * 41.25) / 58.75)


def test_instance_and_gpu_levels_are_sm_weighted_means():
    """A GI averages its CIs by SMs; the GPU averages over all 132 SMs, idle ones as 0."""
    nv, clock = open_nvml("h100-80gb:7g.80gb/1c*2/2c")  # three of seven slices stay idle
    device = nv.nvmlDeviceGetHandleByIndex(0)
    migs = mig_handles(nv, 0)
    sms = [nv.nvmlDeviceGetAttributes(m).multiprocessorCount for m in migs]
    assert sms == [16, 16, 32]
    handles = [*migs, None, device]
    before = [nv.nvmlGpmSampleAlloc() for _ in handles]
    after = [nv.nvmlGpmSampleAlloc() for _ in handles]
    for pair in (before, after):
        for handle, sample in zip(migs, pair, strict=False):
            nv.nvmlGpmSampleGet(handle, sample)
        nv.nvmlGpmMigSampleGet(device, 0, pair[3])  # the 7g spans the GPU: GI 0
        nv.nvmlGpmSampleGet(device, pair[4])
        clock.now += 120
    ci = [ratios(nv, before[i], after[i]) for i in range(3)]
    gi = ratios(nv, before[3], after[3])
    gpu = ratios(nv, before[4], after[4])
    for name in gi:
        weighted = sum(r[name] * w for r, w in zip(ci, sms, strict=True))
        assert gi[name] == pytest.approx(weighted / sum(sms))
        assert gpu[name] == pytest.approx(weighted / 132)


def test_memory_use_varies_and_stays_within_each_instance():
    """Instance memory moves with the workload and never exceeds the GPU instance's size."""
    nv, clock = open_nvml()
    parent = nv.nvmlDeviceGetHandleByIndex(1)
    seen = set()
    for _ in range(200):
        clock.now += 2.5
        total_used = 0
        for mig in mig_handles(nv, 1):
            memory = nv.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2)
            assert 0 <= memory.used <= memory.total == 9984 * 2**20
            total_used += memory.used
            seen.add(memory.used)
        aggregate = nv.nvmlDeviceGetMemoryInfo(parent, version=pynvml.nvmlMemory_v2)
        assert aggregate.used == total_used
        assert aggregate.used + aggregate.reserved + aggregate.free == aggregate.total
    assert len(seen) > 20


def test_full_gpu_memory_and_utilization_vary():
    """A MIG-disabled GPU has its own workload: memory and utilization change over time."""
    nv, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    used, busy = set(), set()
    for _ in range(100):
        clock.now += 3
        memory = nv.nvmlDeviceGetMemoryInfo(device)
        assert memory.used <= memory.total
        used.add(memory.used)
        busy.add(nv.nvmlDeviceGetUtilizationRates(device).gpu)
    assert len(used) > 5
    assert len(busy) > 5


def test_energy_only_grows_and_power_stays_below_the_limit():
    """Energy is monotonic (the integral of power); power, temperature, clocks stay in range."""
    nv, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    limit = nv.nvmlDeviceGetEnforcedPowerLimit(device)
    energy = nv.nvmlDeviceGetTotalEnergyConsumption(device)
    clocks = set()
    for _ in range(300):
        clock.now += 1.5
        now = nv.nvmlDeviceGetTotalEnergyConsumption(device)
        assert now > energy
        energy = now
        assert 0 < nv.nvmlDeviceGetPowerUsage(device) < limit
        assert 30 <= nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU) <= 85
        clocks.add(nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_SM))
    assert max(clocks) == 1980


def test_energy_matches_the_power_integral():
    """Over a window of constant-rate steps, energy grows by about power x time."""
    nv, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    start = nv.nvmlDeviceGetTotalEnergyConsumption(device)
    integral = 0.0
    for _ in range(2000):
        power = nv.nvmlDeviceGetPowerUsage(device)
        clock.now += 0.05
        integral += power * 0.05
    spent = nv.nvmlDeviceGetTotalEnergyConsumption(device) - start
    assert spent == pytest.approx(integral, rel=0.02)


def test_gpm_is_hopper_only():
    """A100 and A30 have no GPM: support says 0 and sampling is not supported."""
    nv, _ = open_nvml("a100-80gb:7g.80gb,a30")
    for gpu in range(2):
        device = nv.nvmlDeviceGetHandleByIndex(gpu)
        assert nv.nvmlGpmQueryDeviceSupport(device).isSupportedDevice == 0
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nv.nvmlGpmSampleGet(device, nv.nvmlGpmSampleAlloc())
    h100, _ = open_nvml("h100-80gb")
    assert h100.nvmlGpmQueryDeviceSupport(h100.nvmlDeviceGetHandleByIndex(0)).isSupportedDevice


def test_gpm_requests_are_checked_like_nvml():
    """Unmodelled metrics fail per metric, bad versions and non-MIG GI samples fail the call."""
    nv, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    first, second = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    nv.nvmlGpmSampleGet(device, first)
    clock.now += 1
    nv.nvmlGpmSampleGet(device, second)
    results = metrics(nv, first, second, (pynvml.NVML_GPM_METRIC_INTEGER_UTIL, 999, 2))
    assert [code for code, _ in results] == [
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_SUCCESS,
    ]
    reversed_order = metrics(nv, second, first)
    assert all(0 <= value <= 100 for _, value in reversed_order)
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.sample1, request.sample2 = first, second
    with pytest.raises(pynvml.NVMLError_ArgumentVersionMismatch):
        nv.nvmlGpmMetricsGet(request)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlGpmMigSampleGet(nv.nvmlDeviceGetHandleByIndex(2), 0, first)
    nv.nvmlGpmSampleFree(first)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlGpmSampleGet(device, first)


def test_the_same_seed_replays_the_same_fleet():
    """UUIDs and activity are reproducible from the seed, and differ between seeds."""

    def trace(seed: int) -> tuple[list[str], list[float]]:
        nv, clock = open_nvml(seed=seed)
        mig = mig_handles(nv, 0)[0]
        a, b = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
        nv.nvmlGpmSampleGet(mig, a)
        clock.now += 30
        nv.nvmlGpmSampleGet(mig, b)
        uuids = [nv.nvmlDeviceGetUUID(m) for m in mig_handles(nv, 1)]
        return uuids, list(ratios(nv, a, b).values())

    assert trace(3) == trace(3)
    assert trace(3)[0] != trace(4)[0]


def test_the_io_levels_are_bounded_and_follow_the_busy_phases():
    """FP pipes <= SM; decode only while busy; PCIe modest; NVLink sometimes high."""
    workload = Workload("io-test", 0.0)
    seen = []
    for second in range(1, 20_000, 3):
        workload.advance(float(second))
        seen.append(workload.levels)
    assert len(seen[0]) == WIDTH
    for levels in seen:
        assert all(0.0 <= level <= 1.0 for level in levels)
        assert max(levels[FP64], levels[FP32], levels[FP16]) <= levels[SM]
        if levels[GR] == 0:
            assert levels[DECODE] == levels[NVLINK_TX] == levels[NVLINK_RX] == 0.0
            assert 0 < levels[PCIE_TX] < 1e-3  # a trickle, as on an idle H200
        assert levels[PCIE_TX] <= 0.3
        assert levels[PCIE_RX] <= 0.3
    busy = [levels for levels in seen if levels[GR] > 0]
    assert any(levels[DECODE] > 0 for levels in busy)
    assert any(levels[DECODE] == 0 for levels in busy)
    assert any(levels[FP64] > 0 for levels in busy)
    assert max(levels[NVLINK_TX] for levels in busy) > 0.5
    assert max(levels[PCIE_RX] for levels in busy) > 0.1


def test_the_io_levels_do_not_change_the_first_six():
    """The added levels come from a stream of their own: the others stay as they were."""
    plain, other = Workload("same", 0.0), Workload("same", 0.0)
    other._io_rng = random.Random("something else")  # noqa: S311 (reproducible test data)
    for second in range(1, 5000, 7):
        plain.advance(float(second))
        other.advance(float(second))
        assert plain.levels[:WIDTH_BEFORE] == other.levels[:WIDTH_BEFORE]
    assert plain.totals[:WIDTH_BEFORE] == other.totals[:WIDTH_BEFORE]
    assert plain.totals[WIDTH_BEFORE:] != other.totals[WIDTH_BEFORE:]


def test_energy_is_the_exact_integral_of_power_also_when_capped():
    """Where power is the same at both ends of a step, energy grows by power x step."""
    nv, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    capped, compared = 0, 0
    energy = nv.nvmlDeviceGetTotalEnergyConsumption(device)
    power = nv.nvmlDeviceGetPowerUsage(device)
    for _ in range(2000):
        clock.now += 0.5
        new_energy = nv.nvmlDeviceGetTotalEnergyConsumption(device)
        new_power = nv.nvmlDeviceGetPowerUsage(device)
        if new_power == power:
            assert new_energy - energy == pytest.approx(power * 0.5, abs=2)
            compared += 1
            reasons = nv.nvmlDeviceGetCurrentClocksEventReasons(device)
            capped += bool(reasons & pynvml.nvmlClocksEventReasonSwPowerCap)
        energy, power = new_energy, new_power
    assert compared > 1500
    assert capped > 50
