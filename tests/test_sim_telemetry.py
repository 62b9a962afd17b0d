"""Physical-GPU telemetry of the fake pynvml: codecs, PCIe, clocks events, violations, fields."""

from __future__ import annotations

import time

import pynvml
import pytest

from manual_clock import ManualClock
from migexporter.sim import FakeNvml, Fleet

MIB = 1 << 20
ALL_LINKS = 0xFFFFFFFF
IDLE = pynvml.nvmlClocksEventReasonGpuIdle
POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap
THERMAL = pynvml.nvmlClocksEventReasonSwThermalSlowdown
NVDEC_0 = pynvml.NVML_GPM_METRIC_NVDEC_0_UTIL
NVLINK_TX = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
NVLINK_RX = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX


def open_nvml(spec: str = "default", seed: int = 0) -> tuple[FakeNvml, Fleet, ManualClock]:
    clock = ManualClock(50.0)
    fleet = Fleet.from_spec(spec, seed=seed, clock=clock)
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    return fake, fleet, clock


def gpm(nv: FakeNvml, first: object, second: object, ids: list[int]) -> dict[int, tuple]:
    """{metric id: (nvmlReturn, value)} between two samples."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(ids)
    request.sample1, request.sample2 = first, second
    for position, metric_id in enumerate(ids):
        request.metrics[position].metricId = metric_id
    nv.nvmlGpmMetricsGet(request)
    return {
        request.metrics[i].metricId: (request.metrics[i].nvmlReturn, request.metrics[i].value)
        for i in range(len(ids))
    }


def short_windows(nv: FakeNvml, clock: ManualClock, handle: object, read, ids):
    """(read before, read after, GPM metrics) over short windows 2.5 s apart.

    A window is 10 ms: the levels change at most once inside it, so where ``read`` answers
    the same before and after, it answered the level the GPM averages over the window.
    """
    first, second = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    for _ in range(300):
        clock.advance(2.5)
        nv.nvmlGpmSampleGet(handle, first)
        before = read()
        clock.advance(0.01)
        nv.nvmlGpmSampleGet(handle, second)
        yield before, read(), gpm(nv, first, second, ids)


def mig_device(nv: FakeNvml, gpu: int, index: int = 0) -> object:
    return nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(gpu), index)


# --- utilization, encoder and decoder ---


def test_memory_copy_utilization_tracks_dram_activity():
    """Utilization.memory is the DRAM activity GPM averages; 0 whenever the GPU is idle."""
    nv, _, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    dram = pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
    seen, compared = set(), 0
    for before, after, metrics in short_windows(
        nv, clock, device, lambda: nv.nvmlDeviceGetUtilizationRates(device), [dram]
    ):
        if before.gpu == 0:
            assert before.memory == 0
        if (before.gpu, before.memory) == (after.gpu, after.memory):
            assert metrics[dram][1] == pytest.approx(before.memory, abs=0.5)
            compared += 1
        seen.add(before.memory)
    assert compared > 250
    assert len(seen) > 10


def test_the_encoder_is_idle_and_the_decoder_follows_the_decode_engines():
    """No NVENC: [0, 100000] always; the decoder answers what GPM sees on the NVDECs."""
    nv, fleet, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    decoders = fleet.gpus[2].model.decoders
    assert decoders == 7  # the H100's 7g.80gb row
    engines = list(range(NVDEC_0, NVDEC_0 + 8))
    busy = idle = 0
    for before, after, metrics in short_windows(
        nv, clock, device, lambda: nv.nvmlDeviceGetDecoderUtilization(device), engines
    ):
        assert nv.nvmlDeviceGetEncoderUtilization(device) == [0, 100_000]
        assert before[1] == 100_000
        assert {code for code, _ in metrics.values()} == {pynvml.NVML_SUCCESS}
        assert metrics[NVDEC_0 + decoders][1] == 0.0  # the H100 has no eighth NVDEC
        if before == after:
            for engine in engines[:decoders]:
                assert metrics[engine][1] == pytest.approx(before[0], abs=0.5)
        busy += before[0] > 0
        idle += before[0] == 0
    assert busy > 5
    assert idle > 5


def test_encoder_and_decoder_are_not_supported_in_mig_mode(nv):
    """nvml.h: not on MIG-enabled GPUs, on the parent and on its MIG devices alike."""
    for handle in (nv.nvmlDeviceGetHandleByIndex(0), mig_device(nv, 0)):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nv.nvmlDeviceGetEncoderUtilization(handle)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nv.nvmlDeviceGetDecoderUtilization(handle)


# --- PCIe ---


def test_pcie_throughput_agrees_with_gpm_and_stays_within_the_link():
    """KB/s (KiB) now equals GPM's MiB/s over a short window; modest against Gen5 x16."""
    nv, fleet, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    link = fleet.gpus[2].model.pcie_bytes_per_s
    ids = [pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC, pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC]
    counters = (pynvml.NVML_PCIE_UTIL_TX_BYTES, pynvml.NVML_PCIE_UTIL_RX_BYTES)

    def read() -> list[int]:
        return [nv.nvmlDeviceGetPcieThroughput(device, counter) for counter in counters]

    compared, busiest = 0, 0.0
    for before, after, metrics in short_windows(nv, clock, device, read, ids):
        for kib, metric in zip(before, ids, strict=True):
            assert 0 < kib * 1024 <= 0.31 * link
            busiest = max(busiest, kib * 1024 / link)
            if before == after:
                assert metrics[metric] == (
                    pynvml.NVML_SUCCESS,
                    pytest.approx(kib * 1024 / MIB, rel=1e-3, abs=0.01),
                )
        compared += before == after
    assert compared > 250
    assert busiest > 0.1


def test_pcie_throughput_is_the_parents_in_mig_mode(nv):
    """The parent answers in MIG mode; a MIG device and a bad counter do not."""
    parent = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetPcieThroughput(parent, pynvml.NVML_PCIE_UTIL_TX_BYTES) > 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetPcieThroughput(mig_device(nv, 0), pynvml.NVML_PCIE_UTIL_RX_BYTES)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetPcieThroughput(parent, pynvml.NVML_PCIE_UTIL_COUNT)


def test_pcie_replays_count_what_was_injected(nv, fleet):
    """0 until replays are injected; the counter and field 94 then report the running total."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetPcieReplayCounter(device) == 0
    assert fleet.inject_pcie_replays(1, 4)["total"] == 4
    assert fleet.inject_pcie_replays(1)["total"] == 5
    assert nv.nvmlDeviceGetPcieReplayCounter(device) == 5
    assert nv.nvmlDeviceGetPcieReplayCounter(nv.nvmlDeviceGetHandleByIndex(0)) == 0
    field = nv.nvmlDeviceGetFieldValues(device, [pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER])[0]
    assert (field.nvmlReturn, field.valueType, field.value.uiVal) == (
        pynvml.NVML_SUCCESS,
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
        5,
    )
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetPcieReplayCounter(mig_device(nv, 1))


@pytest.mark.parametrize("count", [0, -1, True, "3", 100_001])
def test_pcie_replay_injection_checks_its_count(fleet, count):
    """The count is an integer from 1 to MAX_EVENTS."""
    with pytest.raises(ValueError, match="count must be"):
        fleet.inject_pcie_replays(0, count)


# --- clocks event reasons and violation counters ---


def test_clocks_event_reasons_say_idle_and_power_cap():
    """GPU idle exactly when nothing runs; SW power cap exactly when power sits at the limit."""
    nv, _, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    limit = nv.nvmlDeviceGetEnforcedPowerLimit(device)
    assert nv.nvmlDeviceGetSupportedClocksEventReasons(device) == 0x1FF
    capped, uncapped, idle = [], [], 0
    for _ in range(600):
        clock.advance(1.7)
        reasons = nv.nvmlDeviceGetCurrentClocksEventReasons(device)
        power = nv.nvmlDeviceGetPowerUsage(device)
        assert reasons & ~(IDLE | POWER_CAP) == 0
        assert bool(reasons & IDLE) == (nv.nvmlDeviceGetUtilizationRates(device).gpu == 0)
        assert 0 < power < limit
        (capped if reasons & POWER_CAP else uncapped).append(power)
        idle += bool(reasons & IDLE)
    assert len(capped) > 10
    assert idle > 10
    assert min(capped) >= 0.98 * limit  # held at the limit, as an H200 at 692 of 700 W
    assert max(uncapped) <= min(capped)


def test_violation_counters_grow_only_while_capped_or_overheated():
    """Power violation ns grow by the time capped; thermal ns only while overheated."""
    nv, fleet, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)

    def violations() -> tuple[int, int]:
        return tuple(
            nv.nvmlDeviceGetViolationStatus(device, policy).violationTime
            for policy in (pynvml.NVML_PERF_POLICY_POWER, pynvml.NVML_PERF_POLICY_THERMAL)
        )

    step = 0.05
    power, thermal = violations()
    capped = nv.nvmlDeviceGetCurrentClocksEventReasons(device) & POWER_CAP
    grew = 0
    for _ in range(3000):
        clock.advance(step)
        now_capped = nv.nvmlDeviceGetCurrentClocksEventReasons(device) & POWER_CAP
        new_power, new_thermal = violations()
        assert new_thermal == thermal == 0
        assert 0 <= new_power - power <= step * 1e9 + 1
        if new_power > power:
            assert capped or now_capped  # phases last 3 s or more: one change at most
        if capped and now_capped:
            assert new_power - power == pytest.approx(step * 1e9, abs=2)
        grew += new_power > power
        power, capped = new_power, now_capped
    assert grew > 10

    fleet.fault(0, "overheat")
    clock.advance(12.5)
    assert violations()[1] == pytest.approx(12.5e9, abs=2)
    fleet.fault(0, "recover")
    clock.advance(30)
    assert violations()[1] == pytest.approx(12.5e9, abs=2)


def test_time_below_base_clocks_grows_while_idle_or_overheated():
    """An idle H200 gained 1 s below base clocks per second; so does the simulated one, and
    an overheated one; a busy one at boost clocks gains nothing."""
    nv, fleet, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)

    def below_base() -> int:
        policy = pynvml.NVML_PERF_POLICY_TOTAL_BASE_CLOCKS
        return nv.nvmlDeviceGetViolationStatus(device, policy).violationTime

    busy = idle = 0
    for _ in range(1200):
        before, idle_now = below_base(), nv.nvmlDeviceGetUtilizationRates(device).gpu == 0
        clock.advance(0.5)
        after_idle = nv.nvmlDeviceGetUtilizationRates(device).gpu == 0
        grown = below_base() - before
        if idle_now and after_idle:  # idle throughout (phases last 3 s or more)
            assert grown == pytest.approx(0.5e9, abs=2)
            idle += 1
        elif not idle_now and not after_idle:
            assert grown == 0
            busy += 1
    assert busy > 10
    assert idle > 10
    fleet.fault(0, "overheat")
    start = below_base()
    clock.advance(7.0)
    assert below_base() - start == pytest.approx(7e9, abs=2)


def test_violation_status_checks_its_policy(nv):
    """Other valid policies read 0; past NVML_PERF_POLICY_COUNT is invalid; MIG unsupported."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    before = time.time() * 1e6
    status = nv.nvmlDeviceGetViolationStatus(device, pynvml.NVML_PERF_POLICY_POWER)
    assert isinstance(status, pynvml.c_nvmlViolationTime_t)
    assert before <= status.referenceTime <= time.time() * 1e6  # microseconds since 1970
    for policy in (pynvml.NVML_PERF_POLICY_SYNC_BOOST, pynvml.NVML_PERF_POLICY_TOTAL_APP_CLOCKS):
        assert nv.nvmlDeviceGetViolationStatus(device, policy).violationTime == 0
    for policy in (pynvml.NVML_PERF_POLICY_COUNT, 99):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nv.nvmlDeviceGetViolationStatus(device, policy)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetViolationStatus(mig_device(nv, 0), pynvml.NVML_PERF_POLICY_POWER)
    for call in (
        nv.nvmlDeviceGetCurrentClocksEventReasons,
        nv.nvmlDeviceGetSupportedClocksEventReasons,
    ):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(mig_device(nv, 0))


# --- field values ---


def fields(nv: FakeNvml, handle: object, ids: list) -> list:
    return list(nv.nvmlDeviceGetFieldValues(handle, ids))


def test_memory_temperature_follows_the_die_with_a_smaller_rise():
    """HBM warms with the GPU but less; unsigned int entries, as an H200 answered."""
    nv, _, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    readings = []
    for _ in range(300):
        clock.advance(2.5)
        value = fields(nv, device, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        assert (value.nvmlReturn, value.valueType) == (
            pynvml.NVML_SUCCESS,
            pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
        )
        die = nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU)
        readings.append((die, value.value.uiVal))
    coolest, hottest = min(readings), max(readings)
    assert hottest[0] - coolest[0] > 20
    assert 0 < hottest[1] - coolest[1] < hottest[0] - coolest[0]
    assert all(memory <= die + 1 for die, memory in readings)


def test_violation_fields_are_the_violation_counters_in_ns():
    """Fields 74 and 75 are unsigned long long and equal the violation status."""
    nv, fleet, clock = open_nvml("h100-80gb")
    clock.advance(300)
    fleet.fault(0, "overheat")
    clock.advance(3)
    device = nv.nvmlDeviceGetHandleByIndex(0)
    policies = {
        pynvml.NVML_FI_DEV_PERF_POLICY_POWER: pynvml.NVML_PERF_POLICY_POWER,
        pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL: pynvml.NVML_PERF_POLICY_THERMAL,
    }
    for value in fields(nv, device, list(policies)):
        assert (value.nvmlReturn, value.valueType) == (
            pynvml.NVML_SUCCESS,
            pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
        )
        status = nv.nvmlDeviceGetViolationStatus(device, policies[value.fieldId])
        assert value.value.ullVal == status.violationTime > 0


def test_nvlink_fields_honour_the_scope_and_each_entry_has_its_status():
    """KiB counters per link or for all links; a bad link fails its entry only."""
    nv, fleet, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    links = fleet.gpus[0].model.nvlinks
    clock.advance(600)
    ids = [
        (NVLINK_TX, ALL_LINKS),
        *((NVLINK_TX, link) for link in range(links)),
        (NVLINK_RX, ALL_LINKS),
        (NVLINK_RX, links),  # one past the last link
        pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT,
        pynvml.NVML_FI_DEV_MEMORY_TEMP,
    ]
    values = fields(nv, device, ids)
    total, *per_link = values[: links + 1]
    assert total.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    assert total.value.ullVal > 0
    assert [v.scopeId for v in per_link] == list(range(links))
    assert {(v.nvmlReturn, v.valueType) for v in per_link} == {
        (pynvml.NVML_SUCCESS, pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG)
    }
    assert 0 <= total.value.ullVal - sum(v.value.ullVal for v in per_link) < links
    rx_all, rx_bad, count, memory = values[links + 1 :]
    assert rx_all.nvmlReturn == pynvml.NVML_SUCCESS
    assert rx_bad.nvmlReturn == pynvml.NVML_ERROR_INVALID_ARGUMENT
    assert (count.nvmlReturn, count.value.uiVal) == (pynvml.NVML_SUCCESS, 18)
    assert memory.nvmlReturn == pynvml.NVML_SUCCESS


def test_nvlink_counters_grow_by_what_gpm_reports():
    """KiB counted over a window equal GPM's NVLink MiB/s times the window."""
    nv, _, clock = open_nvml("h100-80gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    ids = [(NVLINK_TX, ALL_LINKS), (NVLINK_RX, ALL_LINKS)]
    metrics = [
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC,
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC,
    ]
    first, second = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    busiest = 0.0
    for _ in range(40):
        nv.nvmlGpmSampleGet(device, first)
        before = [v.value.ullVal for v in fields(nv, device, ids)]
        clock.advance(20)
        nv.nvmlGpmSampleGet(device, second)
        after = [v.value.ullVal for v in fields(nv, device, ids)]
        rates = gpm(nv, first, second, metrics)
        for old, new, metric in zip(before, after, metrics, strict=True):
            code, mib_per_s = rates[metric]
            assert code == pynvml.NVML_SUCCESS
            assert (new - old) * 1024 == pytest.approx(mib_per_s * MIB * 20, rel=1e-6, abs=2048)
            busiest = max(busiest, mib_per_s * MIB / 450e9)
    assert busiest > 0.2  # some phases drive the links hard


def test_nvlink_fields_are_not_supported_in_mig_mode_or_without_links(nv):
    """MIG parent and A30: NOT_SUPPORTED per entry; a MIG device: every entry unsupported."""
    ids = [(NVLINK_TX, ALL_LINKS), (NVLINK_RX, 0), pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT]
    ids.append(pynvml.NVML_FI_DEV_MEMORY_TEMP)
    parent = [v.nvmlReturn for v in fields(nv, nv.nvmlDeviceGetHandleByIndex(0), ids)]
    assert parent == [pynvml.NVML_ERROR_NOT_SUPPORTED] * 3 + [pynvml.NVML_SUCCESS]
    mig = [v.nvmlReturn for v in fields(nv, mig_device(nv, 0), ids)]
    assert mig == [pynvml.NVML_ERROR_NOT_SUPPORTED] * 4
    a30, _, _ = open_nvml("a30")
    returns = [v.nvmlReturn for v in fields(a30, a30.nvmlDeviceGetHandleByIndex(0), ids)]
    assert returns == [pynvml.NVML_ERROR_NOT_SUPPORTED] * 3 + [pynvml.NVML_SUCCESS]


# --- GPM: FP pipes, NVDEC, PCIe and NVLink per entity ---


def test_gpm_fp_pipes_stay_below_sm_activity():
    """FP64, FP32 and FP16 are each at most SM activity, in every window, and not all 0."""
    nv, _, clock = open_nvml()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    sm, fp = pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_FP64_UTIL
    ids = [sm, fp, fp + 1, fp + 2]  # FP64, FP32, FP16
    first, second = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    nv.nvmlGpmSampleGet(device, first)
    peaks = dict.fromkeys(ids, 0.0)
    for _ in range(200):
        clock.advance(4)
        nv.nvmlGpmSampleGet(device, second)
        metrics = gpm(nv, first, second, ids)
        for metric in ids:
            code, value = metrics[metric]
            assert code == pynvml.NVML_SUCCESS
            assert 0.0 <= value <= metrics[sm][1] + 1e-9
            peaks[metric] = max(peaks[metric], value)
        first, second = second, first
    assert all(peak > 5 for peak in peaks.values())


def test_gpm_per_entity_engines_and_links():
    """NVDEC per the entity's decoders; NVJPG/NVENC idle; PCIe and NVLink only per GPU."""
    nv, _, clock = open_nvml("h100-80gb:3g.40gb+1g.10gb")
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = mig_device(nv, 0)
    assert nv.nvmlDeviceGetName(mig).endswith("3g.40gb")
    takes = {
        "gpu": (lambda s: nv.nvmlGpmSampleGet(device, s), 7),
        "gi": (lambda s: nv.nvmlGpmMigSampleGet(device, nv.nvmlDeviceGetGpuInstanceId(mig), s), 3),
        "mig": (lambda s: nv.nvmlGpmSampleGet(mig, s), 3),
    }
    links = [
        pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC,
        pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC,
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC,
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC,
    ]
    idle_engines = [*range(40, 48), *range(166, 170)]  # NVJPG_0-7, NVENC_0-3
    engines = list(range(NVDEC_0, NVDEC_0 + 8))
    decoding = 0.0
    for name, (take, decoders) in takes.items():
        first, second = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
        take(first)
        clock.advance(300)
        take(second)
        metrics = gpm(nv, first, second, [*engines, *idle_engines, *links])
        busy = {metrics[e][1] for e in engines[:decoders]}
        assert len(busy) == 1, name  # every decoder of the entity shares the decode level
        decoding = max(decoding, *busy)
        assert {metrics[e] for e in engines[decoders:] + idle_engines} == {
            (pynvml.NVML_SUCCESS, 0.0)
        }
        codes = [metrics[m][0] for m in links]
        if name == "gpu":
            assert codes == [pynvml.NVML_SUCCESS] * 4
            assert metrics[links[0]][1] > 0
            assert metrics[links[2]][1] == metrics[links[3]][1] == 0.0  # no NVLink in MIG mode
        else:
            assert codes == [pynvml.NVML_ERROR_NOT_SUPPORTED] * 4
    assert decoding > 0
