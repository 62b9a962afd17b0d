"""The NVML backend against the simulator's fake pynvml: the code path production runs."""

from __future__ import annotations

import asyncio
import logging

import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from manual_clock import ManualClock
from migexporter import catalog
from migexporter.backends.base import EventKind, GpuUnavailableError
from migexporter.backends.nvml import SLOW_COUNTERS_PERIOD_S, NvmlBackend
from migexporter.collector import Collector
from migexporter.exposition import BuildInfo
from migexporter.sim import FakeNvml, Fleet


def _open(fleet: Fleet) -> NvmlBackend:
    backend = NvmlBackend(FakeNvml(fleet))
    backend.open()
    return backend


def _topology(backend: NvmlBackend):
    return [backend.discover_gpu(i) for i in range(backend.gpu_count())]


def test_discovery_matches_the_fleet():
    """GPU instances, profiles, placements and MIG UUIDs are what the fleet holds."""
    fleet = Fleet.default()
    gpus = _topology(_open(fleet))
    described = fleet.describe()["gpus"]
    assert [g.mig_enabled for g in gpus] == [True, True, False]
    for gpu, want in zip(gpus, described, strict=True):
        assert gpu.uuid == want["uuid"]
        got = {
            (gi.id, gi.profile, gi.placement.start if gi.placement else None, gi.mig_uuid)
            for gi in gpu.gpu_instances
        }
        expected = {
            (
                gi["id"],
                gi["profile"],
                gi["placement"]["start"],
                gi["compute_instances"][0]["mig_uuid"],
            )
            for gi in want["gpu_instances"]
        }
        assert got == expected
    assert gpus[0].mig_slices_total == 7
    assert gpus[0].mig_slices_used == 7


def test_profiling_ratios_from_the_second_sample_on():
    """GPM needs two samples; then every instance has five consistent ratios."""
    clock = ManualClock()
    fleet = Fleet.default(clock=clock)
    backend = _open(fleet)
    gpus = _topology(backend)
    first = backend.sample(gpus[1])
    assert first.gpu_instances[7].get(catalog.GI_SM_ACTIVE) is None
    clock.now += 5
    second = backend.sample(gpus[1])
    for readings in second.gpu_instances.values():
        gr = readings.get(catalog.GI_GR_ENGINE_ACTIVE)
        sm = readings.get(catalog.GI_SM_ACTIVE)
        tensor = readings.get(catalog.GI_TENSOR_ACTIVE)
        assert gr is not None
        assert sm is not None
        assert tensor is not None
        assert 0 <= tensor <= sm <= gr <= 1
        assert readings.get(catalog.GI_MEMORY_USED) <= readings.get(catalog.GI_MEMORY_TOTAL)
    assert second.gpu.get(catalog.GPU_TEMPERATURE) is not None


def test_split_gpu_instance_reports_compute_instances():
    """A GI holding several CIs gets per-CI ratios (1001-1004) and no mig_uuid on the GI."""
    clock = ManualClock()
    fleet = Fleet.from_spec("h100-80gb:7g.80gb/1c*3", clock=clock)
    backend = _open(fleet)
    (gpu,) = _topology(backend)
    (gi,) = gpu.gpu_instances
    assert len(gi.compute_instances) == 3
    assert gi.mig_uuid == ""
    assert gi.profile == "7g.80gb"
    backend.sample(gpu)
    clock.now += 2
    sample = backend.sample(gpu)
    assert set(sample.compute_instances) == {(gi.id, ci.id) for ci in gi.compute_instances}
    for readings in sample.compute_instances.values():
        assert {metric.dcgm_field for metric, _ in readings.values} == {1001, 1002, 1003, 1004}


def test_gpm_samples_are_refilled_not_allocated_every_cycle():
    """After the first cycles, sampling allocates and frees no GPM samples: one spare per GPU
    is refilled in turn, and every sample left is freed at close."""
    clock = ManualClock()
    nvml = FakeNvml(Fleet.from_spec("h100-80gb:7g.80gb/1c*3", clock=clock))
    calls = {"alloc": 0, "free": 0}
    alloc, free = nvml.nvmlGpmSampleAlloc, nvml.nvmlGpmSampleFree

    def counting_alloc():
        calls["alloc"] += 1
        return alloc()

    def counting_free(sample):
        calls["free"] += 1
        free(sample)

    nvml.nvmlGpmSampleAlloc, nvml.nvmlGpmSampleFree = counting_alloc, counting_free
    backend = NvmlBackend(nvml)
    backend.open()
    (gpu,) = _topology(backend)
    entities = 1 + 1 + 3  # the GPU, its GPU instance, and three compute instances
    for _ in range(2):
        backend.sample(gpu)
        clock.now += 1
    assert calls == {"alloc": entities + 1, "free": 0}
    for _ in range(5):
        sample = backend.sample(gpu)
        clock.now += 1
    assert calls == {"alloc": entities + 1, "free": 0}
    assert sample.gpu.get(catalog.GPU_SM_ACTIVE) is not None
    backend.close()
    assert calls == {"alloc": entities + 1, "free": entities + 1}


def test_unprivileged_discovery_keeps_instances_without_placement(caplog):
    """Without privileges instances are still found by MIG handle; placement is left out once."""
    backend = _open(Fleet.default(privileged=False))
    with caplog.at_level(logging.WARNING):
        gpus = _topology(backend)
        _topology(backend)
    profiles = sorted(gi.profile for gi in gpus[0].gpu_instances)
    assert profiles == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
    assert all(gi.placement is None for gi in gpus[0].gpu_instances)
    assert sum("placement" in record.message for record in caplog.records) == 1


def test_events_carry_instance_ids_and_arrive_after_discovery():
    """An XID raised right after discovery is delivered with its GI/CI ids."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    fleet.inject_xid(1, 48, gpu_instance_id=7, count=2)
    fleet.inject_xid(2, 31)
    events = backend.wait_events(0.5)
    xids = [(e.gpu_uuid, e.xid, e.gpu_instance_id, e.compute_instance_id) for e in events]
    assert xids == [(gpus[1].uuid, 48, 7, None)] * 2 + [(gpus[2].uuid, 31, None, None)]
    assert backend.wait_events(0.05) == []


def test_an_xid_on_the_whole_gpu_instance_is_gpu_instance_0_not_unattributed():
    """A 7g instance spans the GPU and is GI 0, as the driver numbers it: 0 is an id."""
    fleet = Fleet.from_spec("h100-80gb:7g.80gb")
    backend = _open(fleet)
    (gpu,) = _topology(backend)
    assert [gi.id for gi in gpu.gpu_instances] == [0]
    fleet.inject_xid(0, 48, gpu_instance_id=0, compute_instance_id=0)
    fleet.inject_xid(0, 79)
    events = backend.wait_events(0.5)
    assert [(e.xid, e.gpu_instance_id, e.compute_instance_id) for e in events] == [
        (48, 0, 0),
        (79, None, None),
    ]


def test_events_beside_xid_name_what_they_are():
    """ECC events by kind; a recovery-action event names the action the driver asks for;
    a GPU off the bus raises XID 79 and an unavailable event, whose action cannot be read."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    fleet.inject_ecc(0, uncorrected=True)
    fleet.inject_ecc(0)
    fleet.inject_recovery_action(1, "drain_and_reset")
    fleet.fault(2, "fall_off_bus")
    fleet.inject_recovery_action(2, "node_reboot")
    events = [(e.gpu_uuid, e.kind, e.xid, e.recovery_action) for e in backend.wait_events(0.5)]
    assert events == [
        (gpus[0].uuid, EventKind.ECC_DOUBLE_BIT, None, None),
        (gpus[0].uuid, EventKind.ECC_SINGLE_BIT, None, None),
        (gpus[1].uuid, EventKind.RECOVERY_ACTION, None, "drain_and_reset"),
        (gpus[2].uuid, EventKind.XID, 79, None),
        (gpus[2].uuid, EventKind.GPU_UNAVAILABLE, None, None),
        (gpus[2].uuid, EventKind.RECOVERY_ACTION, None, "unknown"),  # the GPU is lost
    ]
    backend.close()


RECOVERY_ACTIONS = (  # NVML_GPU_RECOVERY_ACTION_* of nvidia-ml-py 13.615, in NVML's order
    "none",
    "gpu_reset",
    "node_reboot",
    "drain_p2p",
    "drain_and_reset",
    "recover_imex_domain",
    "bus_reset",
    "system_reboot",
)


def recovery_actions(readings) -> dict[str, float]:
    """The recovery-action state set of a GPU's readings, by action."""
    return {
        extra[0]: value
        for (metric, extra), value in readings.values.items()
        if metric is catalog.GPU_RECOVERY_ACTION
    }


def test_the_recovery_action_is_a_state_set_read_every_cycle():
    """Every action the bindings name is a series: none is 1 on a healthy GPU; after the driver
    asks for a reset, gpu_reset is 1 and the rest 0, until a reset sets none again."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    assert list(catalog.RECOVERY_ACTIONS.values())[: len(RECOVERY_ACTIONS)] == list(
        RECOVERY_ACTIONS
    )
    for gpu in gpus:  # in MIG mode too: the action is the whole GPU's
        assert recovery_actions(backend.sample(gpu).gpu) == {
            a: float(a == "none") for a in catalog.RECOVERY_ACTIONS.values()
        }
    fleet.inject_recovery_action(1, "gpu_reset")
    got = recovery_actions(backend.sample(gpus[1]).gpu)
    assert got == {a: float(a == "gpu_reset") for a in catalog.RECOVERY_ACTIONS.values()}
    assert recovery_actions(backend.sample(gpus[0]).gpu)["none"] == 1.0
    fleet.fault(1, "recover")  # a reset
    assert recovery_actions(backend.sample(backend.discover_gpu(1)).gpu)["none"] == 1.0


async def test_the_exposition_shows_the_current_recovery_action_per_gpu():
    """/metrics holds one series per GPU and action; an injected reset request shows as
    action="gpu_reset" 1 on that GPU, and the recovery-action event is counted beside it."""
    fleet = Fleet.from_spec("h100-80gb:3g.40gb*2,h100-80gb")
    collector = Collector(NvmlBackend(FakeNvml(fleet)), BuildInfo("t"), interval=0.05)
    await collector.start()

    def current() -> dict[str, str]:
        families = text_string_to_metric_families(collector.exposition.text.decode())
        return {
            s.labels["gpu"]: s.labels["action"]
            for family in families
            if family.name == catalog.GPU_RECOVERY_ACTION.name
            for s in family.samples
            if s.value == 1
        }

    try:
        assert current() == {"0": "none", "1": "none"}
        text = collector.exposition.text.decode()
        assert text.count(f"{catalog.GPU_RECOVERY_ACTION.name}{{") == 2 * len(
            catalog.RECOVERY_ACTIONS
        )
        fleet.inject_recovery_action(0, "gpu_reset")
        for _ in range(200):
            if current()["0"] == "gpu_reset":
                break
            await asyncio.sleep(0.01)
        assert current() == {"0": "gpu_reset", "1": "none"}
        labels = f'action="gpu_reset",gpu="0",gpu_uuid="{fleet.gpus[0].uuid}"'
        line = f"{catalog.GPU_RECOVERY_ACTION.name}{{{labels}}} 1.0"
        assert line in collector.exposition.text.decode().splitlines()
    finally:
        await collector.stop()


def test_a_recovery_action_the_bindings_do_not_name_is_its_number():
    """A newer driver's action reads as its number, 1, beside every named action at 0."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    fleet.gpus[0].recovery_action = 42
    got = recovery_actions(backend.sample(gpus[0]).gpu)
    assert got == {**dict.fromkeys(catalog.RECOVERY_ACTIONS.values(), 0.0), "42": 1.0}


def test_a_driver_without_the_recovery_action_field_drops_only_it(monkeypatch):
    """NOT_SUPPORTED: no recovery-action series, the other fields stay, and it is not asked for
    again."""
    answer = (pynvml.NVML_ERROR_NOT_SUPPORTED, "uiVal", 0)
    monkeypatch.setitem(H200_FIELDS, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", answer)
    nvml, backend, gpu, got = _h200_sample("h100-80gb")
    assert recovery_actions(got) == {}
    assert got.get(catalog.GPU_MEMORY_TEMPERATURE) == 40
    backend.sample(gpu)
    assert pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION not in nvml.fields_asked[-1]


def test_reconfiguration_raises_a_mig_event_and_changes_discovery():
    """Reconfiguring through the fake library is seen as an event and by re-discovery."""
    fleet = Fleet.default()
    backend = _open(fleet)
    _topology(backend)
    fleet.reconfigure(0, ["3g.40gb", "3g.40gb"])
    kinds = {e.kind for e in backend.wait_events(0.5)}
    assert EventKind.MIG_CONFIG_CHANGE in kinds
    gpu = backend.discover_gpu(0)
    assert [gi.profile for gi in gpu.gpu_instances] == ["3g.40gb", "3g.40gb"]


def test_lost_gpu_is_unavailable_and_comes_back():
    """A GPU off the bus raises GpuUnavailableError; after recovery it samples again."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    fleet.fault(2, "fall_off_bus")
    with pytest.raises(GpuUnavailableError):
        backend.sample(gpus[2])
    backend.sample(gpus[0])  # the others are unaffected
    fleet.fault(2, "recover")
    assert backend.sample(backend.discover_gpu(2)).gpu.get(catalog.GPU_TEMPERATURE) is not None
    backend.close()


def test_event_from_a_device_that_cannot_be_named_is_still_delivered():
    """An event whose device is unknown and lost is kept (unnamed), not dropped with its batch."""
    fleet = Fleet.default()
    backend = _open(fleet)
    gpus = _topology(backend)
    fleet.inject_xid(2, 13)
    fleet.fault(2, "fall_off_bus")
    fleet.inject_xid(1, 48, gpu_instance_id=7)
    backend._uuids_by_handle.clear()  # as if the handle were one discovery never saw
    events = backend.wait_events(0.5)
    xids = [(e.gpu_uuid, e.xid) for e in events if e.kind is EventKind.XID]
    assert (gpus[1].uuid, 48) in xids
    assert ("", 13) in xids


async def test_nvml_shut_down_under_the_exporter_is_initialised_again(caplog):
    """Another user of the process's NVML calls nvmlShutdown once too often: the backend is
    down for a cycle, initialises NVML again, and GPUs, instances and events come back."""
    fleet = Fleet.from_spec("h100-80gb:1g.10gb*7,a100-40gb")
    collector = Collector(NvmlBackend(FakeNvml(fleet)), BuildInfo("t"), interval=0.05)
    await collector.start()
    try:
        fleet.fault(None, "nvml_shutdown")
        for _ in range(200):
            if not collector.backend_up:
                break
            await asyncio.sleep(0.01)
        for _ in range(200):
            if collector.backend_up and len(collector.samples) == 2:
                break
            await asyncio.sleep(0.01)
        assert collector.backend_up
        assert len(collector.samples) == 2
        fleet.inject_xid(0, 48, 9, 0)  # registered for events again
        for _ in range(200):
            if any(key.gpu_instance_id == 9 for key in collector._counts):
                break
            await asyncio.sleep(0.01)
        counted = {(k.detail, k.gpu_instance_id): v.count for k, v in collector._counts.items()}
        assert counted == {("48", 9): 1}
        again = [r for r in caplog.records if "initialising it again" in r.getMessage()]
        assert len(again) == 1
    finally:
        await collector.stop()


# --- device families from literal driver answers --------------------------------------------
# What an NVIDIA H200 (driver 580.159.04, MIG disabled) answered under a bf16 matmul load with
# pinned host<->device copies: benchmarks/results/nvml_calls-h200.json ("loaded").
H200_FIELDS: dict[str, tuple[int, str, int]] = {  # constant -> (nvmlReturn, member, value)
    "NVML_FI_DEV_MEMORY_TEMP": (0, "uiVal", 40),
    "NVML_FI_DEV_PCIE_REPLAY_COUNTER": (0, "uiVal", 3),  # 0 measured; 3 tells it from absent
    "NVML_FI_DEV_PERF_POLICY_POWER": (0, "ullVal", 3_528_648_768),  # ns
    "NVML_FI_DEV_PERF_POLICY_THERMAL": (0, "ullVal", 0),
    "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX": (pynvml.NVML_ERROR_NOT_SUPPORTED, "ullVal", 0),
    "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX": (pynvml.NVML_ERROR_NOT_SUPPORTED, "ullVal", 0),
    # 0 (none) measured, an unsigned int; 1 (gpu_reset) tells the reading from a default.
    "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION": (0, "uiVal", 1),
}
H200_GPM = {1: 83.77, 2: 79.478, 3: 11.746, 5: 77.075, 10: 14.749, 11: 0.0, 12: 0.0, 13: 0.0}
H200_GPM |= {20: 3814.327, 21: 3537.904, 60: 0.0, 61: 0.0}  # MiB/s


class H200Answers(FakeNvml):
    """The simulator's NVML, with the device calls answering what the H200 answered."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet)
        self.fields_asked: list[list[int]] = []

    def nvmlDeviceGetUtilizationRates(self, _handle):
        utilization = pynvml.c_nvmlUtilization_t()
        utilization.gpu, utilization.memory = 99, 23
        return utilization

    def nvmlDeviceGetEncoderUtilization(self, _handle):
        return [0, 100000]

    def nvmlDeviceGetDecoderUtilization(self, _handle):
        return [17, 100000]  # 0 measured (no video); 17 tells the decoder from the encoder

    def nvmlDeviceGetSupportedClocksEventReasons(self, _handle):
        return 0x1FF

    def nvmlDeviceGetCurrentClocksEventReasons(self, _handle):
        return pynvml.nvmlClocksEventReasonSwPowerCap

    def nvmlDeviceGetPcieThroughput(self, _device, counter):
        return 3_899_213 if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else 3_551_137

    def nvmlDeviceGetFieldValues(self, _handle, fieldIds):
        by_id = {getattr(pynvml, name): answer for name, answer in H200_FIELDS.items()}
        self.fields_asked.append([item[0] for item in fieldIds])
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for value, (field_id, scope) in zip(values, fieldIds, strict=True):
            status, member, number = by_id[field_id]
            value.fieldId, value.scopeId, value.nvmlReturn = field_id, scope, status
            setattr(value.value, member, number)
        return values

    def nvmlGpmMetricsGet(self, metricsGet):
        for metric in metricsGet.metrics[: metricsGet.numMetrics]:
            metric.value, metric.nvmlReturn = H200_GPM[metric.metricId], pynvml.NVML_SUCCESS
        return metricsGet


def _h200_sample(spec: str):
    clock = ManualClock()
    nvml = H200Answers(Fleet.from_spec(spec, clock=clock))
    backend = NvmlBackend(nvml)
    backend.open()
    [gpu] = _topology(backend)
    backend.sample(gpu)
    clock.now += 1.0
    return nvml, backend, gpu, backend.sample(gpu).gpu


def test_device_readings_convert_the_drivers_units():
    """Percent to ratios, ns to seconds, MiB/s to bytes/s; each reason its own 0/1 reading."""
    nvml, backend, gpu, got = _h200_sample("h100-80gb")
    assert got.get(catalog.GPU_UTILIZATION) == pytest.approx(0.99)
    assert got.get(catalog.GPU_MEMORY_COPY_UTILIZATION) == pytest.approx(0.23)
    assert got.get(catalog.GPU_ENCODER_UTILIZATION) == 0.0
    assert got.get(catalog.GPU_DECODER_UTILIZATION) == pytest.approx(0.17)
    assert got.get(catalog.GPU_MEMORY_TEMPERATURE) == 40
    assert got.get(catalog.GPU_PCIE_REPLAYS) == 3
    assert got.get(catalog.GPU_THROTTLED, "power") == pytest.approx(3.528648768)
    assert got.get(catalog.GPU_THROTTLED, "thermal") == 0.0
    reasons = {k[1][0]: v for k, v in got.values.items() if k[0] is catalog.GPU_CLOCK_EVENT}
    assert reasons == {r: float(r == "sw_power_cap") for r in catalog.CLOCK_EVENT_REASONS.values()}
    assert recovery_actions(got) == {a: float(a == "gpu_reset") for a in RECOVERY_ACTIONS}
    assert got.get(catalog.GPU_PCIE_THROUGHPUT, "tx") == pytest.approx(3814.327 * 2**20)
    assert got.get(catalog.GPU_PCIE_THROUGHPUT, "rx") == pytest.approx(3537.904 * 2**20)
    assert got.get(catalog.GPU_NVLINK_THROUGHPUT, "tx") == 0.0  # GPM answers 0 without links
    assert got.get(catalog.GPU_FP64_ACTIVE) == 0.0
    assert got.get(catalog.GPU_TENSOR_ACTIVE) == pytest.approx(0.77075)
    # NVLink counters the GPU does not support: absent, and not asked for again.
    assert got.get(catalog.GPU_NVLINK_BYTES, "tx") is None
    nvlink = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
    assert nvlink in nvml.fields_asked[1]  # the first cycle's batches: slow counters, then these
    backend.sample(gpu)
    assert nvlink not in nvml.fields_asked[-1]
    assert pynvml.NVML_FI_DEV_MEMORY_TEMP in nvml.fields_asked[-1]


def test_costly_counters_are_read_every_ten_seconds_and_stand_in_between():
    """Energy, thermal violation time and PCIe replays cost the driver milliseconds of CPU:
    read once per SLOW_COUNTERS_PERIOD_S, their last values in every sample between reads,
    and a re-enumeration of the GPU does not make them due again."""
    clock = ManualClock()
    nvml = H200Answers(Fleet.from_spec("h100-80gb", clock=clock))
    energy_calls = []
    read_energy = nvml.nvmlDeviceGetTotalEnergyConsumption
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: energy_calls.append(1) or read_energy(h)
    backend = NvmlBackend(nvml, clock=clock)
    backend.open()
    [gpu] = _topology(backend)
    slow = {pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER, pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL}

    def sample_after(seconds: float):
        clock.now += seconds
        asked = len(nvml.fields_asked)
        got = backend.sample(gpu).gpu
        return got, [f for batch in nvml.fields_asked[asked:] for f in batch]

    first, asked = sample_after(0)
    assert slow <= set(asked)
    assert len(energy_calls) == 1
    energy = first.get(catalog.GPU_ENERGY)
    backend.discover_gpu(0)  # the topology refresh
    between, asked = sample_after(SLOW_COUNTERS_PERIOD_S / 2)
    assert not slow & set(asked)
    assert pynvml.NVML_FI_DEV_MEMORY_TEMP in asked
    assert len(energy_calls) == 1
    assert between.get(catalog.GPU_ENERGY) == energy
    assert between.get(catalog.GPU_PCIE_REPLAYS) == 3
    assert between.get(catalog.GPU_THROTTLED, "thermal") == 0.0
    _, asked = sample_after(SLOW_COUNTERS_PERIOD_S / 2)
    assert slow <= set(asked)
    assert len(energy_calls) == 2
    # Their help texts say so, with the period the backend uses.
    for metric in (catalog.GPU_ENERGY, catalog.GPU_THROTTLED, catalog.GPU_PCIE_REPLAYS):
        assert f"every {SLOW_COUNTERS_PERIOD_S:g} s" in metric.help, metric.name


def test_without_gpm_pcie_comes_from_the_drivers_own_window():
    """An A100 has no GPM: PCIe traffic is nvmlDeviceGetPcieThroughput's KB/s, times 1024."""
    _, _, _, got = _h200_sample("a100-40gb")
    assert got.get(catalog.GPU_PCIE_THROUGHPUT, "tx") == 3_899_213 * 1024
    assert got.get(catalog.GPU_PCIE_THROUGHPUT, "rx") == 3_551_137 * 1024
    assert got.get(catalog.GPU_FP64_ACTIVE) is None  # no GPM, no pipe ratios


def test_memory_temperature_beyond_200_c_is_no_reading(monkeypatch):
    """DCGM stores a blank above 200 C; so does this backend (it is not a temperature)."""
    monkeypatch.setitem(H200_FIELDS, "NVML_FI_DEV_MEMORY_TEMP", (0, "uiVal", 0xFFFFFFFF))
    _, _, _, got = _h200_sample("h100-80gb")
    assert got.get(catalog.GPU_MEMORY_TEMPERATURE) is None
    assert got.get(catalog.GPU_PCIE_REPLAYS) == 3


def test_nvlink_data_rate_is_the_counters_growth_over_the_drivers_timestamps():
    """DCGM 449's meaning: RX+TX payload between two reads, per second of NVML's timestamps,
    across topology refreshes; nothing on the first read, nothing in MIG mode."""
    clock = ManualClock()
    fleet = Fleet.from_spec("h100-80gb,h100-80gb:1g.10gb", clock=clock)
    backend = NvmlBackend(FakeNvml(fleet), clock=clock)
    backend.open()
    whole, mig = _topology(backend)
    assert (whole.minor_number, mig.minor_number) == (0, 1)  # /dev/nvidia0 and 1
    clock.now += 1.0
    first = backend.sample(whole).gpu
    assert first.get(catalog.GPU_NVLINK_DATA_RATE) is None
    before = sum(first.get(catalog.GPU_NVLINK_BYTES, d) for d in ("tx", "rx"))
    clock.now += 2.5
    assert backend.discover_gpu(0) == whole  # a topology refresh between keeps the last read
    second = backend.sample(whole).gpu
    after = sum(second.get(catalog.GPU_NVLINK_BYTES, d) for d in ("tx", "rx"))
    assert after > before
    assert second.get(catalog.GPU_NVLINK_DATA_RATE) == pytest.approx((after - before) / 2.5)
    backend.sample(mig)
    clock.now += 1.0
    assert backend.sample(mig).gpu.get(catalog.GPU_NVLINK_DATA_RATE) is None
