"""Device queries that NVML tools make beyond what the exporter reads (nvitop, gpustat).

What the simulated GPUs answer: CUDA 13.0 for driver 580 (nvidia-smi on an H200 with 580.159.04:
"CUDA Version: 13.0"), persistence mode on and no display, as that H200 showed; the default
compute mode; P0; the power limit as the enforced one; no fan (datacenter boards are passively
cooled: NOT_SUPPORTED); maximum clocks as the model's boost clocks; no running processes (the
simulated workloads have no process ids).
"""

from __future__ import annotations

from typing import Any

import pynvml

from migexporter.sim._nvml_base import Session, fail

CUDA_DRIVER_VERSION = 13000  # what nvmlSystemGetCudaDriverVersion encodes as 1000 * 13 + 10 * 0
MIB = 1 << 20
BAR1_USED_BYTES = 2 * MIB  # what the driver maps for itself, as idle GPUs show
# (major, minor) CUDA compute capability by architecture: Ampere (A100, A30) 8.0, Hopper 9.0.
_COMPUTE_CAPABILITY = {False: (8, 0), True: (9, 0)}  # keyed by GPM support, which Hopper brought


def bar1_total_mib(memory_mib: int) -> int:
    """BAR1 size: the smallest power of two MiB at or above the frame buffer.

    An assumption that matches what nvidia-smi prints for A100 40GB (65536 MiB) and A100 80GB
    and H100 80GB (131072 MiB); not measured for the other models.
    """
    return 1 << (memory_mib - 1).bit_length()


class ToolCalls(Session):
    """Queries of a GPU's settings, limits and processes; MIG device handles as NVML answers."""

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        """The CUDA version the driver supports, 1000 * major + 10 * minor."""
        self._check_init()
        return CUDA_DRIVER_VERSION

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        """The power management limit in mW: the enforced limit, nothing else lowers it."""
        with self._call(handle):
            return self._gpu(handle).model.power_limit_w * 1000

    def _setting(self, handle: Any, value: int) -> int:
        """A fixed setting of a physical GPU; NOT_SUPPORTED for a MIG device handle."""
        with self._call(handle):
            self._gpu(handle)
            return int(value)

    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int:
        """P0: a datacenter GPU in persistence mode stays there (an assumption)."""
        return self._setting(handle, pynvml.NVML_PSTATE_0)

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        """Enabled, as on the measured H200."""
        return self._setting(handle, pynvml.NVML_FEATURE_ENABLED)

    def nvmlDeviceGetDisplayActive(self, handle: Any) -> int:
        """Disabled: nothing drives a display."""
        return self._setting(handle, pynvml.NVML_FEATURE_DISABLED)

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:
        """NVML_COMPUTEMODE_DEFAULT."""
        return self._setting(handle, pynvml.NVML_COMPUTEMODE_DEFAULT)

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        """NOT_SUPPORTED: the simulated boards have no fan of their own."""
        with self._call(handle):
            self._gpu(handle)
            raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:  # noqa: A002 (pynvml's name)
        """Maximum clock in MHz: the boost clock for graphics and SM, the memory clock."""
        with self._call(handle):
            model = self._gpu(handle).model
            clocks = {
                pynvml.NVML_CLOCK_GRAPHICS: model.sm_clock_mhz,
                pynvml.NVML_CLOCK_SM: model.sm_clock_mhz,
                pynvml.NVML_CLOCK_MEM: model.mem_clock_mhz,
                pynvml.NVML_CLOCK_VIDEO: model.sm_clock_mhz * 9 // 10,
            }
            if type not in clocks:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)  # as nvmlDeviceGetClockInfo
            return clocks[type]

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        """(major, minor): 8.0 for Ampere, 9.0 for Hopper; a MIG device has its GPU's."""
        with self._call(handle):
            gpu, _mig = self._device(handle)
            return _COMPUTE_CAPABILITY[gpu.model.gpm]

    def nvmlDeviceGetBAR1MemoryInfo(self, handle: Any) -> Any:
        """BAR1 of a GPU, or of a MIG device: its share by the GPU instance's memory slices."""
        with self._call(handle):
            gpu, mig = self._device(handle)
            total = bar1_total_mib(gpu.model.memory_mib) * MIB
            if mig is not None:
                total = total * mig.gpu_instance.profile.size // gpu.model.memory_slices
            answer = pynvml.c_nvmlBAR1Memory_t()
            answer.bar1Total = total
            answer.bar1Used = BAR1_USED_BYTES
            answer.bar1Free = total - answer.bar1Used
            return answer

    def nvmlDeviceGetDriverModel(self, handle: Any) -> list[int]:
        """NOT_SUPPORTED: driver models (WDDM, TCC) exist on Windows only (nvml.h)."""
        with self._call(handle):
            self._device(handle)
            raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        """No processes: the simulated workloads have none."""
        with self._call(handle):
            self._device(handle)
            return []

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        """No processes: the simulated workloads have none."""
        with self._call(handle):
            self._device(handle)
            return []
