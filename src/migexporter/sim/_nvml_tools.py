"""Device queries that NVML tools make beyond what the exporter reads (nvitop, gpustat).

What the simulated GPUs answer: CUDA 13.0 for driver 580 (nvidia-smi on an H200 with 580.159.04:
"CUDA Version: 13.0"), persistence mode on and no display, as that H200 showed; the default
compute mode; P0; the power limit as the enforced one; no fan (datacenter boards are passively
cooled: NOT_SUPPORTED); maximum clocks as the model's boost clocks; a 13-digit board serial
derived from the GPU's UUID (simulated); no driver model (Windows only).

Processes: each MIG device, and each GPU with MIG disabled, runs one compute process while its
workload holds memory, with a pid derived from its UUID (``_model.simulated_pid``) and the
memory its workload uses, so that a device's processes add up to the memory it reports in use
(without the driver's reserve). No graphics processes and no MPS: the fleet runs datacenter
compute. Per-process utilization follows the GPU's utilization rates; like those, it is not
supported on MIG-enabled GPUs (nvml.h).
"""

from __future__ import annotations

import ctypes
import re
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._nvml_base import Session, fail
from migexporter.sim._workload import DECODE, DRAM, GR

if TYPE_CHECKING:
    from migexporter.sim._model import SimComputeInstance, SimGpu

CUDA_DRIVER_VERSION = 13000  # what nvmlSystemGetCudaDriverVersion encodes as 1000 * 13 + 10 * 0
MIB = 1 << 20
BAR1_USED_BYTES = 2 * MIB  # what the driver maps for itself, as idle GPUs show
# (major, minor) CUDA compute capability by architecture: Ampere (A100, A30) 8.0, Hopper 9.0.
_COMPUTE_CAPABILITY = {False: (8, 0), True: (9, 0)}  # keyed by GPM support, which Hopper brought
# gpuInstanceId and computeInstanceId of a process outside MIG: nvml.h, nvmlProcessInfo_v2_t:
# "If MIG is enabled, stores a valid GPU instance ID. gpuInstanceId is set to 0xFFFFFFFF
# otherwise."
NOT_IN_MIG = 0xFFFFFFFF
# How often the driver samples per-process utilization: an H100 under load (driver 580.159.04)
# answered one sample per process, stamped every 0.2 s and up to 0.2 s before the call.
PROCESS_SAMPLE_PERIOD_US = 200_000
_HEX = re.compile(r"[0-9a-fA-F]+")


def pci_address(bus_id: str) -> tuple[int, int, int, int] | None:
    """(domain, bus, device, function) of a PCI bus id in a form NVML accepts; else None.

    nvml.h, nvmlDeviceGetHandleByPciBusId_v2, in hexadecimal: "domain:bus:device.function in
    format %x:%x:%x.%x", "domain:bus:device in format %x:%x:%x", "bus:device.function in format
    %x:%x.%x".
    """
    parts = bus_id.split(":")
    if len(parts) == 2 and "." in parts[1]:
        parts.insert(0, "0")
    if len(parts) != 3:
        return None
    device, dot, function = parts[2].partition(".")
    numbers = [*parts[:2], device, function if dot else "0"]
    if not all(_HEX.fullmatch(number) for number in numbers):
        return None
    domain, bus, slot, func = (int(number, 16) for number in numbers)
    return domain, bus, slot, func


def _process_info(pid: int, used: int, gi_id: int, ci_id: int) -> Any:
    info = pynvml.c_nvmlProcessInfo_v2_t()
    info.pid, info.usedGpuMemory = pid, used
    info.gpuInstanceId, info.computeInstanceId = gi_id, ci_id
    return info


def _friendly(info: Any) -> Any:
    """What pynvml makes of one entry: an nvmlFriendlyObject, None for memory not available."""
    found = pynvml.nvmlStructToFriendlyObject(info)
    if found.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
        found.usedGpuMemory = None  # WDDM's answer (pynvml); never the simulator's
    return found


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

    def nvmlDeviceGetDisplayMode(self, handle: Any) -> int:
        """Enabled, as an H100 answered (driver 580.159.04), though no display is active."""
        return self._setting(handle, pynvml.NVML_FEATURE_ENABLED)

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:
        """NVML_COMPUTEMODE_DEFAULT, for a GPU or a MIG device.

        nvml.h: "Retrieves the current compute mode for the device or MIG device. ... If MIG is
        enabled on a GPU, device must be MIG device handle." It names no error for the parent
        of MIG devices, which answers as well here (unverified on MIG hardware).
        """
        with self._call(handle):
            self._device(handle)
            return int(pynvml.NVML_COMPUTEMODE_DEFAULT)

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        """The board's serial number (``SimGpu.serial``); NOT_SUPPORTED for a MIG device.

        nvml.h documents a board property and nothing for MIG devices: an assumption.
        """
        with self._call(handle):
            return self._gpu(handle).serial

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: str | bytes) -> Any:
        """The GPU at a PCI bus id, in any form nvml.h lists (``pci_address``), any case.

        InvalidArgument for a string in none of those forms (nvml.h: "if pciBusId is
        invalid") or with a function other than 0, NotFound for another address no GPU has:
        as an H100 answered (driver 580.159.04: 00:06.1, 17:00.8 and FF:1F.7 invalid; 17:00.0,
        FF:00.0 and 17:20.0 not found).
        """
        self._check_init()
        text = pciBusId.decode() if isinstance(pciBusId, bytes) else str(pciBusId)
        wanted = pci_address(text)
        if wanted is None or wanted[3] != 0:
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        with self._fleet.lock:
            for gpu in self._fleet.gpus:
                if pci_address(gpu.pci_bus_id) == wanted:
                    return ctypes.pointer(gpu.device)
        raise fail(pynvml.NVML_ERROR_NOT_FOUND)

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
                # Unlike nvmlDeviceGetClockInfo's NOT_SUPPORTED: NVML_CLOCK_COUNT, 5 and 99 all
                # answered INVALID_ARGUMENT on an H100 (driver 580.159.04).
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
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

    def nvmlDeviceGetCurrentDriverModel(self, handle: Any) -> int:
        """NOT_SUPPORTED, as nvmlDeviceGetDriverModel, which pynvml's version calls."""
        return self.nvmlDeviceGetDriverModel(handle)[0]

    def nvmlDeviceGetPendingDriverModel(self, handle: Any) -> int:
        """NOT_SUPPORTED, as nvmlDeviceGetDriverModel, which pynvml's version calls."""
        return self.nvmlDeviceGetDriverModel(handle)[1]

    # --- processes: one per MIG device, or per GPU with MIG disabled ---

    def process_infos(self, handle: Any, mode: int) -> list[Any]:
        """``c_nvmlProcessInfo_v2_t`` of each process of a ``NVML_PROCESS_MODE_*`` on a device.

        A MIG device lists its own process; the parent of MIG devices lists every MIG device's,
        with their GPU and compute instance ids, but only to privileged callers (nvml.h: "In MIG
        mode, if device handle is provided, the API returns aggregate information, only if the
        caller has appropriate privileges"): NO_PERMISSION otherwise, as for its memory info.
        """
        with self._call(handle):
            gpu, mig = self._device(handle)
            if mig is None and gpu.mig_enabled and not self._privileged:
                raise fail(pynvml.NVML_ERROR_NO_PERMISSION)
            if mode != pynvml.NVML_PROCESS_MODE_COMPUTE:
                return []  # no graphics contexts and no MPS server on the simulated GPUs
            return self._compute_processes(gpu, mig)

    def _compute_processes(self, gpu: SimGpu, mig: SimComputeInstance | None) -> list[Any]:
        self._fleet.advance(gpu)  # the same moment as the memory info
        if not gpu.mig_enabled:
            used = gpu.memory_used_bytes()
            return [_process_info(gpu.pid, used, NOT_IN_MIG, NOT_IN_MIG)] if used else []
        cis = (
            [mig]
            if mig is not None
            else sorted(gpu.compute_instances(), key=lambda ci: (ci.gpu_instance.id, ci.id))
        )
        return [
            _process_info(ci.pid, used, ci.gpu_instance.id, ci.id)
            for ci in cis
            if (used := ci.memory_used_bytes())
        ]

    def _friendly_processes(self, handle: Any, mode: int) -> list[Any]:
        """``process_infos`` as pynvml's Python functions return them (nvmlFriendlyObject)."""
        return [_friendly(info) for info in self.process_infos(handle, mode)]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        """The device's compute processes."""
        return self._friendly_processes(handle, pynvml.NVML_PROCESS_MODE_COMPUTE)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        """None: the simulated GPUs run compute only."""
        return self._friendly_processes(handle, pynvml.NVML_PROCESS_MODE_GRAPHICS)

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: Any) -> list[Any]:
        """None: no MPS server runs on the simulated GPUs."""
        return self._friendly_processes(handle, pynvml.NVML_PROCESS_MODE_MPS)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[Any]:
        """``c_nvmlProcessUtilizationSample_t`` per process busy since ``timeStamp`` (us).

        nvml.h: one sample "per process running, that had some non-zero utilization during the
        last sample period", NOT_FOUND "If no valid sample entries are found since the
        lastSeenTimeStamp", and "On MIG-enabled GPUs, querying process utilization is not
        currently supported" (NOT_SUPPORTED, for MIG devices too). The one process has the
        GPU's utilization rates (SM as ``gpu``, memory as ``memory``) and decoder utilization,
        in the driver's latest sample, taken every PROCESS_SAMPLE_PERIOD_US: a sample is never
        newer than the call, so asking since now finds none.
        """
        with self._call(handle):
            gpu = self._gpu(handle)
            if gpu.mig_enabled:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            samples = []
            processes = self._compute_processes(gpu, None)  # brings the GPU's time up to now
            levels = gpu.levels()
            now_us = self._fleet.timestamp_us(gpu.time)
            for info in processes:
                sample = pynvml.c_nvmlProcessUtilizationSample_t()
                sample.pid = info.pid
                sample.timeStamp = now_us - now_us % PROCESS_SAMPLE_PERIOD_US
                sample.smUtil = round(100 * levels[GR])
                sample.memUtil = round(100 * levels[DRAM])
                sample.encUtil = 0  # no NVENC on the simulated models
                sample.decUtil = round(100 * levels[DECODE])
                busy = sample.smUtil or sample.memUtil or sample.decUtil
                if busy and sample.timeStamp > timeStamp:
                    samples.append(sample)
            if not samples:
                raise fail(pynvml.NVML_ERROR_NOT_FOUND)
            return samples
