"""The device queries NVML tools make beyond the exporter's: settings, limits, BAR1, processes."""

from __future__ import annotations

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet
from migexporter.sim._nvml_tools import bar1_total_mib

FLEET = "h100-80gb:3g.40gb+1g.10gb*2,a100-40gb,a30"


@pytest.fixture
def nv() -> FakeNvml:
    fake = FakeNvml(Fleet.from_spec(FLEET))
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
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetDriverModel(gpu)  # Windows only


def test_compute_capability_and_maximum_clocks_follow_the_model(nv: FakeNvml) -> None:
    h100, a100 = nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetCudaComputeCapability(h100) == (9, 0)
    assert nv.nvmlDeviceGetCudaComputeCapability(a100) == (8, 0)
    assert nv.nvmlDeviceGetCudaComputeCapability(_mig(nv, 0)) == (9, 0)  # its GPU's
    assert nv.nvmlDeviceGetMaxClockInfo(h100, pynvml.NVML_CLOCK_SM) == 1980
    for clock in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM):
        assert nv.nvmlDeviceGetMaxClockInfo(a100, clock) >= nv.nvmlDeviceGetClockInfo(a100, clock)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetMaxClockInfo(a100, pynvml.NVML_CLOCK_COUNT)


def test_gpu_only_queries_refuse_a_mig_device_handle(nv: FakeNvml) -> None:
    for call in (
        nv.nvmlDeviceGetPowerManagementLimit,
        nv.nvmlDeviceGetPerformanceState,
        nv.nvmlDeviceGetPersistenceMode,
        nv.nvmlDeviceGetFanSpeed,
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


def test_no_processes_run_on_simulated_gpus_or_mig_devices(nv: FakeNvml) -> None:
    for handle in (nv.nvmlDeviceGetHandleByIndex(1), _mig(nv, 1)):
        assert nv.nvmlDeviceGetComputeRunningProcesses(handle) == []
        assert nv.nvmlDeviceGetGraphicsRunningProcesses(handle) == []
