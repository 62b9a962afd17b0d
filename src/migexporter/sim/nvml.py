"""A stand-in for the ``pynvml`` module, backed by a simulated fleet."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._nvml_base import fail
from migexporter.sim._nvml_mig import MigCalls
from migexporter.sim._nvml_telemetry import TelemetryCalls
from migexporter.sim._nvml_tools import ToolCalls

if TYPE_CHECKING:
    from migexporter.sim._model import SimComputeInstance, SimGpu

DRIVER_VERSION = "580.159.04"
# pynvml functions that only convert Python data, never calling the library: safe to pass on.
_PURE_HELPERS = frozenset(
    {"nvmlExceptionClass", "nvmlStructToFriendlyObject", "nvmlFriendlyObjectToStruct"}
)


class FakeNvml(MigCalls, TelemetryCalls, ToolCalls):
    """Use an instance where the ``pynvml`` module is expected.

    Its ``nvml*`` methods have pynvml's names, parameter names and defaults, return pynvml's
    ctypes structs and handles, and raise pynvml's ``NVMLError_*`` classes with NVML's MIG
    semantics. Constants, struct classes and error classes are pynvml's own (looked up on
    the real module); a pynvml function the fake does not implement raises AttributeError,
    so nothing reaches for the real library by accident.

    Args:
        fleet: the simulated GPUs.
        privileged: whether the caller is root; defaults to ``fleet.privileged``. Without
            privileges the GI/CI listing and management calls, and parent-GPU memory in MIG
            mode, raise ``NVMLError_NoPermission``, as NVML does.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(pynvml, name)
        is_function = callable(value) and not isinstance(value, type)
        if name.startswith("nvml") and is_function and name not in _PURE_HELPERS:
            raise AttributeError(f"the NVML simulator does not implement pynvml.{name}")
        return value

    # --- library lifetime ---

    def nvmlInit(self) -> None:
        """Initialise; reference-counted like NVML."""
        self.nvmlInitWithFlags(0)

    def nvmlInitWithFlags(self, flags: int) -> None:  # noqa: ARG002 (no flag changes anything here)
        """Initialise with flags; reference-counted like NVML."""
        with self._refcount_lock:
            self._refcount += 1

    def nvmlShutdown(self) -> None:
        """Undo one init; calls raise NVMLError_Uninitialized once the count reaches zero."""
        with self._refcount_lock:
            if self._refcount <= 0:
                raise fail(pynvml.NVML_ERROR_UNINITIALIZED)
            self._refcount -= 1
            last = self._refcount == 0
        if last:
            self.release_resources()

    def nvmlSystemGetDriverVersion(self) -> str:
        """The driver version the simulator claims (the one facts/nvml-mig.md measured)."""
        self._check_init()
        return DRIVER_VERSION

    # --- enumeration: lists lost GPUs too, as the driver does until a reset ---

    def nvmlDeviceGetCount(self) -> int:
        """Number of physical GPUs."""
        self._check_init()
        return len(self._fleet.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        """Handle of the GPU with this index."""
        self._check_init()
        if not isinstance(index, int) or not 0 <= index < len(self._fleet.gpus):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ctypes.pointer(self._fleet.gpus[index].device)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:
        """Handle of a GPU or of a MIG device, by UUID; NotFound for unknown UUIDs."""
        self._check_init()
        wanted = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        with self._fleet.lock:
            for gpu in self._fleet.gpus:
                if gpu.uuid == wanted:
                    return ctypes.pointer(gpu.device)
                for ci in gpu.compute_instances():
                    if ci.uuid == wanted:
                        return ctypes.pointer(ci.device)
        raise fail(pynvml.NVML_ERROR_NOT_FOUND)

    # --- identity, for GPUs and MIG devices alike ---

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        """``GPU-…`` for a GPU, ``MIG-…`` for a MIG device."""
        with self._call(handle):
            gpu, mig = self._device(handle)
            return gpu.uuid if mig is None else mig.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        """Product name; MIG devices append " MIG <profile>" ("… MIG 1c.7g.80gb")."""
        with self._call(handle):
            gpu, mig = self._device(handle)
            return gpu.model.product if mig is None else f"{gpu.model.product} MIG {mig.name}"

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        """GPU index, or the MIG device index within its parent."""
        with self._call(handle):
            gpu, mig = self._device(handle)
            return gpu.index if mig is None else mig.mig_index

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        """The GPU's minor number (/dev/nvidia<minor>).

        NotSupported for a MIG device handle: nvml.h documents it for GPUs only (an assumption,
        not a measurement).
        """
        with self._call(handle):
            gpu, mig = self._device(handle)
            if mig is not None:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return gpu.minor_number

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        """``nvmlPciInfo_t`` of the GPU (a MIG device reports its parent's)."""
        with self._call(handle):
            gpu, _ = self._device(handle)
            domain, bus = (int(part, 16) for part in gpu.pci_bus_id.split(":")[:2])
            info = pynvml.nvmlPciInfo_t()
            info.busId = gpu.pci_bus_id
            info.busIdLegacy = gpu.pci_bus_id[4:]  # the short "0000:18:00.0" form
            info.domain = domain
            info.bus = bus
            info.device = 0
            info.pciDeviceId = gpu.model.pci_device_id
            info.pciSubSystemId = 0x16C110DE
            return info

    # --- MIG enumeration: none of these needs privileges ---

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        """``[current, pending]``; the simulator has no pending changes."""
        with self._call(device):
            mode = int(self._gpu(device).mig_enabled)
            return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        """7 (4 on A30) with MIG enabled, 0 without."""
        with self._call(device):
            gpu = self._gpu(device)
            return gpu.model.max_mig_devices if gpu.mig_enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> Any:
        """The MIG device at ``index``; NotFound for empty slots (indices are sparse)."""
        with self._call(device):
            gpu = self._gpu(device, pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if not gpu.mig_enabled:
                raise fail(pynvml.NVML_ERROR_NOT_FOUND)
            if not isinstance(index, int) or not 0 <= index < gpu.model.max_mig_devices:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            for ci in gpu.compute_instances():
                if ci.mig_index == index:
                    return ctypes.pointer(ci.device)
            raise fail(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> ctypes.c_uint:
        """A ``c_uint``, like pynvml's (not an int): use ``bool()`` or ``.value``."""
        with self._call(device):
            _, mig = self._device(device)
            return ctypes.c_uint(mig is not None)

    def _mig(self, device: Any) -> SimComputeInstance:
        _, mig = self._device(device)
        if mig is None:
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig

    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int:
        """GPU instance id of a MIG device; InvalidArgument for a GPU."""
        with self._call(device):
            return self._mig(device).gpu_instance.id

    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int:
        """Compute instance id of a MIG device; InvalidArgument for a GPU."""
        with self._call(device):
            return self._mig(device).id

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> Any:
        """The parent GPU of a MIG device; InvalidArgument for a GPU."""
        with self._call(migDevice):
            parent: SimGpu = self._mig(migDevice).gpu
            return ctypes.pointer(parent.device)

    def nvmlDeviceGetAttributes_v2(self, device: Any) -> Any:
        """``c_nvmlDeviceAttributes`` of a MIG device; NotSupported for a GPU."""
        with self._call(device):
            _, mig = self._device(device)
            if mig is None:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            gi = mig.gpu_instance.profile
            attributes = pynvml.c_nvmlDeviceAttributes()
            attributes.multiprocessorCount = mig.profile.sms
            attributes.sharedCopyEngineCount = gi.copy_engines
            attributes.sharedDecoderCount = gi.decoders
            attributes.sharedEncoderCount = 0
            attributes.sharedJpegCount = gi.jpegs
            attributes.sharedOfaCount = gi.ofas
            attributes.gpuInstanceSliceCount = gi.slices
            attributes.computeInstanceSliceCount = mig.profile.slices
            attributes.memorySizeMB = gi.memory_mb
            return attributes

    def nvmlDeviceGetAttributes(self, device: Any) -> Any:
        """Same as ``nvmlDeviceGetAttributes_v2``, as in pynvml."""
        return self.nvmlDeviceGetAttributes_v2(device)
