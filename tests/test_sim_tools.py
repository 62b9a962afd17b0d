"""The device queries NVML tools make beyond the exporter's: settings, limits, BAR1, processes."""

from __future__ import annotations

from typing import Any

import pynvml
import pytest

from manual_clock import ManualClock
from migexporter.sim import FakeNvml, Fleet
from migexporter.sim._nvml_tools import bar1_total_mib

FLEET = "h100-80gb:3g.40gb+1g.10gb*2,a100-40gb,a30"
# Two GPU instances, one split into three compute instances (MIG devices) of unequal size.
SPLIT = "h100-80gb:4g.40gb/1c*2/2c+3g.40gb"
NOT_IN_MIG = 0xFFFFFFFF  # nvml.h, nvmlProcessInfo_v2_t: the instance ids outside MIG


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fleet(clock: ManualClock) -> Fleet:
    return Fleet.from_spec(FLEET, clock=clock)


@pytest.fixture
def nv(fleet: Fleet) -> FakeNvml:
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    return fake


def _mig(nv: FakeNvml, slot: int) -> object:
    return nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(0), slot)


def test_settings_read_as_on_a_datacenter_gpu(nv: FakeNvml) -> None:
    gpu = nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlSystemGetCudaDriverVersion() == 13000  # "CUDA Version: 13.0" with driver 580
    assert nv.nvmlDeviceGetPersistenceMode(gpu) == pynvml.NVML_FEATURE_ENABLED
    assert nv.nvmlDeviceGetDisplayActive(gpu) == pynvml.NVML_FEATURE_DISABLED
    assert nv.nvmlDeviceGetComputeMode(gpu) == pynvml.NVML_COMPUTEMODE_DEFAULT
    assert nv.nvmlDeviceGetPerformanceState(gpu) == pynvml.NVML_PSTATE_0
    assert nv.nvmlDeviceGetPowerManagementLimit(gpu) == nv.nvmlDeviceGetEnforcedPowerLimit(gpu)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetFanSpeed(gpu)
    assert nv.nvmlDeviceGetDisplayMode(gpu) == pynvml.NVML_FEATURE_ENABLED  # as an H100 says
    for call in (
        nv.nvmlDeviceGetDriverModel,  # Windows only
        nv.nvmlDeviceGetCurrentDriverModel,
        nv.nvmlDeviceGetPendingDriverModel,
    ):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(gpu)


def test_compute_mode_is_answered_for_mig_devices_too(nv: FakeNvml) -> None:
    """nvml.h: "the current compute mode for the device or MIG device"."""
    assert nv.nvmlDeviceGetComputeMode(_mig(nv, 0)) == pynvml.NVML_COMPUTEMODE_DEFAULT


def test_serial_numbers_are_stable_per_board_and_differ_between_boards(fleet: Fleet) -> None:
    def serials(nv: FakeNvml) -> list[str]:
        return [nv.nvmlDeviceGetSerial(nv.nvmlDeviceGetHandleByIndex(i)) for i in range(3)]

    nv, again = FakeNvml(fleet), FakeNvml(Fleet.from_spec(FLEET))  # the same seed: same UUIDs
    nv.nvmlInit()
    again.nvmlInit()
    found = serials(nv)
    assert all(len(serial) == 13 and serial.isdigit() for serial in found)
    assert len(set(found)) == 3
    assert serials(again) == found


def test_compute_capability_and_maximum_clocks_follow_the_model(nv: FakeNvml) -> None:
    h100, a100 = nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetCudaComputeCapability(h100) == (9, 0)
    assert nv.nvmlDeviceGetCudaComputeCapability(a100) == (8, 0)
    assert nv.nvmlDeviceGetCudaComputeCapability(_mig(nv, 0)) == (9, 0)  # its GPU's
    assert nv.nvmlDeviceGetMaxClockInfo(h100, pynvml.NVML_CLOCK_SM) == 1980
    for clock in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM):
        assert nv.nvmlDeviceGetMaxClockInfo(a100, clock) >= nv.nvmlDeviceGetClockInfo(a100, clock)
    for unknown in (pynvml.NVML_CLOCK_COUNT, 99):  # unlike GetClockInfo's NOT_SUPPORTED
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nv.nvmlDeviceGetMaxClockInfo(a100, unknown)


def test_gpu_only_queries_refuse_a_mig_device_handle(nv: FakeNvml) -> None:
    for call in (
        nv.nvmlDeviceGetPowerManagementLimit,
        nv.nvmlDeviceGetPerformanceState,
        nv.nvmlDeviceGetPersistenceMode,
        nv.nvmlDeviceGetFanSpeed,
        nv.nvmlDeviceGetDisplayMode,
        nv.nvmlDeviceGetSerial,
    ):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(_mig(nv, 0))


@pytest.mark.parametrize(
    ("memory_mib", "bar1_mib"), [(40960, 65536), (81559, 131072), (24576, 32768)]
)
def test_bar1_is_the_power_of_two_above_the_frame_buffer(memory_mib: int, bar1_mib: int) -> None:
    assert bar1_total_mib(memory_mib) == bar1_mib


def test_bar1_of_a_mig_device_is_its_share_by_memory_slices(nv: FakeNvml) -> None:
    whole = nv.nvmlDeviceGetBAR1MemoryInfo(nv.nvmlDeviceGetHandleByIndex(0))
    shares = [nv.nvmlDeviceGetBAR1MemoryInfo(_mig(nv, slot)) for slot in range(3)]
    # 3g.40gb holds four of the eight memory slices, 1g.10gb one.
    assert [s.bar1Total * 8 // whole.bar1Total for s in shares] == [4, 1, 1]
    for answer in (whole, *shares):
        assert answer.bar1Used + answer.bar1Free == answer.bar1Total
        assert 0 < answer.bar1Used < answer.bar1Total


def _ids(processes: list[Any]) -> list[tuple[int, int, int, int]]:
    return [(p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId) for p in processes]


def _mig_devices(fleet: Fleet, gpu: int) -> list[tuple[int, int, str]]:
    """(GI id, CI id, MIG UUID) of each MIG device of a GPU, as the fleet describes them."""
    return [
        (gi["id"], ci["id"], ci["mig_uuid"])
        for gi in fleet.describe()["gpus"][gpu]["gpu_instances"]
        for ci in gi["compute_instances"]
    ]


def test_each_mig_device_runs_one_process_with_its_instance_ids(nv: FakeNvml, fleet: Fleet) -> None:
    pids = set()
    for gi_id, ci_id, uuid in _mig_devices(fleet, 0):
        (process,) = nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByUUID(uuid))
        assert isinstance(process, pynvml.nvmlFriendlyObject)  # what pynvml returns
        assert (process.gpuInstanceId, process.computeInstanceId) == (gi_id, ci_id)
        assert 300 <= process.pid < 1 << 22  # where Linux hands out pids
        assert process.usedGpuMemory > 0
        pids.add(process.pid)
    assert len(pids) == 3


def test_a_gpu_without_mig_runs_one_process_outside_any_instance(nv: FakeNvml) -> None:
    (process,) = nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(1))
    assert (process.gpuInstanceId, process.computeInstanceId) == (NOT_IN_MIG, NOT_IN_MIG)


def test_pids_last_as_long_as_their_device(nv: FakeNvml, fleet: Fleet, clock: ManualClock) -> None:
    """The same pid while the workload's memory changes; a new MIG device, a new process."""

    def pids() -> list[int]:
        handles = [nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)]
        return [p.pid for h in handles for p in nv.nvmlDeviceGetComputeRunningProcesses(h)]

    before, memory = pids(), _ids(nv.nvmlDeviceGetComputeRunningProcesses(_mig(nv, 0)))
    clock.advance(60.0)
    assert pids() == before
    assert _ids(nv.nvmlDeviceGetComputeRunningProcesses(_mig(nv, 0))) != memory
    fleet.reconfigure(0, ["3g.40gb", "1g.10gb", "1g.10gb"])
    assert pids()[-1] == before[-1]  # the GPU without MIG keeps its process
    assert not set(pids()[:-1]) & set(before)


def test_the_parent_lists_every_mig_devices_process(nv: FakeNvml, fleet: Fleet) -> None:
    per_device = [
        _ids(nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByUUID(uuid)))
        for _, _, uuid in _mig_devices(fleet, 0)
    ]
    parent = _ids(nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(0)))
    assert sorted(parent) == sorted(p for processes in per_device for p in processes)
    assert {(gi, ci) for _, _, gi, ci in parent} == {(g, c) for g, c, _ in _mig_devices(fleet, 0)}


@pytest.mark.parametrize("spec", [FLEET, SPLIT])
def test_processes_add_up_to_the_memory_in_use(spec: str) -> None:
    """On GPUs, and per GPU instance, whose compute instances share its memory, over time."""
    clock = ManualClock()
    fleet = Fleet.from_spec(spec, clock=clock)
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    for _ in range(10):
        for index in range(nv.nvmlDeviceGetCount()):
            gpu = nv.nvmlDeviceGetHandleByIndex(index)
            v1 = nv.nvmlDeviceGetMemoryInfo(gpu)
            v2 = nv.nvmlDeviceGetMemoryInfo(gpu, version=pynvml.nvmlMemory_v2)
            used = sum(p.usedGpuMemory for p in nv.nvmlDeviceGetComputeRunningProcesses(gpu))
            assert used == v2.used == v1.used - v2.reserved > 0
        for gi in fleet.describe()["gpus"][0]["gpu_instances"]:
            handles = [nv.nvmlDeviceGetHandleByUUID(c["mig_uuid"]) for c in gi["compute_instances"]]
            used = sum(
                p.usedGpuMemory for h in handles for p in nv.nvmlDeviceGetComputeRunningProcesses(h)
            )
            assert {nv.nvmlDeviceGetMemoryInfo(h).used for h in handles} == {used}
        clock.advance(7.0)


def test_no_graphics_or_mps_processes(nv: FakeNvml) -> None:
    for handle in (nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1), _mig(nv, 1)):
        assert nv.nvmlDeviceGetGraphicsRunningProcesses(handle) == []
        assert nv.nvmlDeviceGetMPSComputeRunningProcesses(handle) == []


def test_unprivileged_callers_see_processes_per_mig_device_only(fleet: Fleet) -> None:
    """The parent's aggregate needs privileges, as its memory info does (nvml.h)."""
    nv = FakeNvml(fleet, privileged=False)
    nv.nvmlInit()
    parent = nv.nvmlDeviceGetHandleByIndex(0)
    for call in (
        nv.nvmlDeviceGetMemoryInfo,
        nv.nvmlDeviceGetComputeRunningProcesses,
        nv.nvmlDeviceGetGraphicsRunningProcesses,
        nv.nvmlDeviceGetMPSComputeRunningProcesses,
    ):
        with pytest.raises(pynvml.NVMLError_NoPermission):
            call(parent)
    assert len(nv.nvmlDeviceGetComputeRunningProcesses(_mig(nv, 0))) == 1
    assert len(nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(1))) == 1


def test_process_utilization_follows_the_gpus_utilization(nv: FakeNvml, clock: ManualClock) -> None:
    """A GPU without MIG: one sample per busy process, newer than the timestamp given."""
    gpu = nv.nvmlDeviceGetHandleByIndex(1)
    seen_busy = seen_idle = False
    last = 0
    for _ in range(400):
        rates = nv.nvmlDeviceGetUtilizationRates(gpu)
        (process,) = nv.nvmlDeviceGetComputeRunningProcesses(gpu)  # holding memory, busy or not
        if rates.gpu == 0:
            with pytest.raises(pynvml.NVMLError_NotFound):  # no utilization, no sample
                nv.nvmlDeviceGetProcessUtilization(gpu, 0)
            seen_idle = True
        else:
            (sample,) = nv.nvmlDeviceGetProcessUtilization(gpu, last)
            assert isinstance(sample, pynvml.c_nvmlProcessUtilizationSample_t)
            assert sample.pid == process.pid
            assert (sample.smUtil, sample.memUtil) == (rates.gpu, rates.memory)
            assert sample.decUtil == nv.nvmlDeviceGetDecoderUtilization(gpu)[0]
            assert sample.encUtil == 0
            assert sample.timeStamp > last
            now_us = nv._fleet.timestamp_us(nv._fleet.now())
            assert now_us - 200_000 < sample.timeStamp <= now_us  # the latest 0.2 s sample
            with pytest.raises(pynvml.NVMLError_NotFound):  # nothing newer than it
                nv.nvmlDeviceGetProcessUtilization(gpu, sample.timeStamp)
            last = sample.timeStamp
            seen_busy = True
        if seen_busy and seen_idle:
            return
        clock.advance(5.0)
    pytest.fail(f"the workload was never both busy and idle: {seen_busy=} {seen_idle=}")


def test_process_utilization_is_not_supported_with_mig(nv: FakeNvml) -> None:
    """nvml.h: "On MIG-enabled GPUs, querying process utilization is not currently supported"."""
    for handle in (nv.nvmlDeviceGetHandleByIndex(0), _mig(nv, 0)):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nv.nvmlDeviceGetProcessUtilization(handle, 0)


@pytest.mark.parametrize(
    "form",
    [
        lambda bus_id: bus_id,  # "00000000:2A:00.0"
        lambda bus_id: bus_id[4:],  # "0000:2A:00.0", the legacy form
        lambda bus_id: bus_id.split(":", 1)[1],  # "2A:00.0", bus:device.function
        lambda bus_id: bus_id.rsplit(".", 1)[0],  # "00000000:2A:00", domain:bus:device
        lambda bus_id: bus_id.lower(),
        lambda bus_id: bus_id.encode(),
    ],
)
def test_a_gpu_is_found_by_its_pci_bus_id_in_every_form_nvml_accepts(
    nv: FakeNvml, form: Any
) -> None:
    for index in range(nv.nvmlDeviceGetCount()):
        gpu = nv.nvmlDeviceGetHandleByIndex(index)
        found = nv.nvmlDeviceGetHandleByPciBusId(form(nv.nvmlDeviceGetPciInfo(gpu).busId))
        assert nv.nvmlDeviceGetUUID(found) == nv.nvmlDeviceGetUUID(gpu)


@pytest.mark.parametrize(
    ("bus_id", "error"),
    [
        ("00000000:99:00.0", pynvml.NVMLError_NotFound),  # no GPU there
        ("00000000:2A:01.0", pynvml.NVMLError_NotFound),  # another device on its bus
        ("00000000:2A:00.1", pynvml.NVMLError_InvalidArgument),  # a function but 0, as on an H100
        ("0000:FF:1F.7", pynvml.NVMLError_InvalidArgument),
        ("00000001:2A:00.0", pynvml.NVMLError_NotFound),  # another domain
        ("2A:00", pynvml.NVMLError_InvalidArgument),  # not one of the forms
        ("00000000:2A:00.0:0", pynvml.NVMLError_InvalidArgument),
        ("GPU-2A", pynvml.NVMLError_InvalidArgument),
        ("", pynvml.NVMLError_InvalidArgument),
    ],
)
def test_other_pci_bus_ids_find_nothing(nv: FakeNvml, bus_id: str, error: type) -> None:
    assert nv.nvmlDeviceGetPciInfo(nv.nvmlDeviceGetHandleByIndex(1)).busId == "00000000:2A:00.0"
    with pytest.raises(error):
        nv.nvmlDeviceGetHandleByPciBusId(bus_id)
