"""Fake NVML calls for MIG profiles, placements, and GPU/compute instance management."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim import _placement
from migexporter.sim._nvml_base import Session, fail, fill, store
from migexporter.sim.profiles import CiProfile, Placement, ci_profiles

if TYPE_CHECKING:
    from migexporter.sim._model import SimGpu, SimGpuInstance
    from migexporter.sim.profiles import GiProfile

_INVALID = pynvml.NVML_ERROR_INVALID_ARGUMENT
# Driver 580 knows GI profile indices 0x0-0x10: it answers InvalidArgument from 0x11
# (3_SLICE_GFX, newer than the driver) on, though pynvml 13.615's COUNT is 0x12 (facts §1.3).
# A number, not pynvml's name for it: pynvml before 13.615 has no 3_SLICE_GFX.
_DRIVER_GI_PROFILE_COUNT = 0x11
_SUCCESS: int = pynvml.NVML_SUCCESS  # what pynvml's wrappers return from "do" calls


def _index(value: object, count: int) -> int:
    """A profile index argument; NVML answers InvalidArgument past the known range."""
    if not isinstance(value, int) or not 0 <= value < count:
        raise fail(_INVALID)
    return value


def _gi_profile_info(profile: GiProfile, version: int) -> Any:
    info = (
        pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()  # sets .version itself
        if version == 2
        else pynvml.c_nvmlGpuInstanceProfileInfo_t()
    )
    info.id = profile.id
    info.isP2pSupported = 0  # nvidia-smi mig -lgip: "P2P No" on every profile
    info.sliceCount = profile.slices
    info.instanceCount = profile.instances
    info.multiprocessorCount = profile.sms
    info.copyEngineCount = profile.copy_engines
    info.decoderCount = profile.decoders
    info.encoderCount = 0  # A100, A30 and H100 have no NVENC
    info.jpegCount = profile.jpegs
    info.ofaCount = profile.ofas
    info.memorySizeMB = profile.memory_mb
    if version == 2:
        info.name = f"MIG {profile.name}"
        # pynvml's constructor sets the version; the driver's answer has it 0 again (an H200,
        # driver 580.159.04: benchmarks/results/fidelity-h200.json).
        info.version = 0
    return info


def _ci_profile_info(gi: SimGpuInstance, profile: CiProfile, version: int) -> Any:
    info = (
        pynvml.c_nvmlComputeInstanceProfileInfo_v2_t()
        if version == 2
        else pynvml.c_nvmlComputeInstanceProfileInfo_t()
    )
    info.id = profile.id
    info.sliceCount = profile.slices
    info.instanceCount = profile.instances
    info.multiprocessorCount = profile.sms
    # Compute instances share the engines of their GPU instance.
    info.sharedCopyEngineCount = gi.profile.copy_engines
    info.sharedDecoderCount = gi.profile.decoders
    info.sharedEncoderCount = 0
    info.sharedJpegCount = gi.profile.jpegs
    info.sharedOfaCount = gi.profile.ofas
    if version == 2:
        info.name = f"MIG {profile.name}"
    return info


def _placement_arg(placement: Any) -> Placement:
    """A placement passed as ``byref(struct)`` or ``pointer(struct)``, as NVML takes it.

    pynvml hands the argument to C unchanged, so a struct passed by value reaches NVML as a
    bad pointer and crashes the real library (seen on an H200, driver 580.159.04): the fake
    refuses it loudly instead of accepting what the real one cannot.
    """
    if isinstance(placement, pynvml.c_nvmlGpuInstancePlacement_t):
        raise TypeError(
            "placement must be ctypes.byref(c_nvmlGpuInstancePlacement_t): NVML takes a "
            "pointer, and a struct passed by value crashes the real library"
        )
    target = getattr(placement, "_obj", placement)
    target = getattr(target, "contents", target)
    if not isinstance(target, pynvml.c_nvmlGpuInstancePlacement_t):
        raise fail(_INVALID)
    return Placement(target.start, target.size)


class MigCalls(Session):
    """GPU-instance and compute-instance calls; the privileged ones check privileges."""

    def _profile_by_id(self, gpu: SimGpu, profile_id: object) -> GiProfile:
        profile = gpu.model.profile_by_id(profile_id) if isinstance(profile_id, int) else None
        if profile is None:
            raise fail(_INVALID)
        return profile

    def _ci_profile_by_id(self, gi: SimGpuInstance, profile_id: object) -> CiProfile:
        for profile in ci_profiles(gi.gpu.model, gi.profile):
            if profile.id == profile_id:
                return profile
        raise fail(_INVALID)

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, device: Any, profile: int, version: int = 2
    ) -> Any:
        """Profile info by NVML_GPU_INSTANCE_PROFILE_* index; NotSupported where absent."""
        if version not in (1, 2):  # pynvml checks this before calling the library
            raise fail(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        with self._call(device):
            gpu = self._gpu(device, _INVALID)
            found = gpu.model.profile_by_index(_index(profile, _DRIVER_GI_PROFILE_COUNT))
            if found is None:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return _gi_profile_info(found, version)

    def nvmlDeviceGetGpuInstanceProfileInfoById(self, device: Any, profileId: int) -> Any:
        """Profile info (v2) by profile id."""
        with self._call(device):
            gpu = self._gpu(device, _INVALID)
            return _gi_profile_info(self._profile_by_id(gpu, profileId), 2)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, device: Any, profileId: int, placementsRef: Any, countRef: Any
    ) -> int:
        """Every placement of a profile, MIG enabled or not; ``placementsRef`` None counts."""
        with self._call(device):
            self._require_privilege()
            profile = self._profile_by_id(self._gpu(device, _INVALID), profileId)
            if placementsRef is not None:
                fill(
                    placementsRef,
                    [pynvml.c_nvmlGpuInstancePlacement_t(*p) for p in profile.placements],
                )
            store(countRef, len(profile.placements))
            return _SUCCESS

    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, device: Any, profileId: int) -> int:
        """How many more instances of a profile fit next to the existing ones."""
        with self._call(device):
            self._require_privilege()
            gpu = self._gpu(device, _INVALID)
            profile = self._profile_by_id(gpu, profileId)
            taken = [(gi.profile, gi.placement) for gi in gpu.gpu_instances.values()]
            count = 0
            while options := _placement.candidates(gpu.model, taken, profile):
                taken.append((profile, options[0]))
                count += 1
            return count

    def _create_gpu_instance(self, device: Any, profileId: int, where: Placement | None) -> Any:
        with self._call(device):
            self._require_privilege()
            gpu = self._gpu(device, _INVALID)
            if not gpu.mig_enabled:
                raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            gi = self._fleet.create_gpu_instance(gpu, self._profile_by_id(gpu, profileId), where)
            return ctypes.pointer(gi.handle)

    def nvmlDeviceCreateGpuInstance(self, device: Any, profileId: int) -> Any:
        """Create a GPU instance where the driver chooses (_placement.preferred)."""
        return self._create_gpu_instance(device, profileId, None)

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, device: Any, profileId: int, placement: Any
    ) -> Any:
        """Create a GPU instance at a given placement (InvalidArgument if not a valid one)."""
        return self._create_gpu_instance(device, profileId, _placement_arg(placement))

    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:
        """Destroy a GPU instance; NVMLError_InUse while it has compute instances."""
        with self._call(gpuInstance):
            self._require_privilege()
            self._fleet.destroy_gpu_instance(self._gpu_instance(gpuInstance))
            return _SUCCESS

    def nvmlDeviceGetGpuInstances(
        self, device: Any, profileId: int, gpuInstancesRef: Any, countRef: Any
    ) -> int:
        """Fill the caller's array with the GPU instances of a profile, in id order."""
        with self._call(device):
            self._require_privilege()
            gpu = self._gpu(device, _INVALID)
            profile = self._profile_by_id(gpu, profileId)
            found = [
                ctypes.pointer(gi.handle)
                for _, gi in sorted(gpu.gpu_instances.items())
                if gi.profile.id == profile.id
            ]
            fill(gpuInstancesRef, found)
            store(countRef, len(found))
            return _SUCCESS

    def nvmlDeviceGetGpuInstanceById(self, device: Any, gpuInstanceId: int) -> Any:
        """The GPU instance with this id; NotFound if there is none."""
        with self._call(device):
            self._require_privilege()
            gi = self._gpu(device, _INVALID).gpu_instances.get(gpuInstanceId)
            if gi is None:
                raise fail(pynvml.NVML_ERROR_NOT_FOUND)
            return ctypes.pointer(gi.handle)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:
        """``c_nvmlGpuInstanceInfo_t``: parent device, id, profile id and placement."""
        with self._call(gpuInstance):
            gi = self._gpu_instance(gpuInstance)
            info = pynvml.c_nvmlGpuInstanceInfo_t()
            info.device = ctypes.pointer(gi.gpu.device)
            info.id = gi.id
            info.profileId = gi.profile.id
            info.placement = pynvml.c_nvmlGpuInstancePlacement_t(*gi.placement)
            return info

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, device: Any, profile: int, engProfile: int, version: int = 2
    ) -> Any:
        """CI profile info by index; ``device`` is the GPU instance handle, as in pynvml."""
        if version not in (1, 2):
            raise fail(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        with self._call(device):
            gi = self._gpu_instance(device)
            index = _index(profile, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
            _index(engProfile, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT)
            for candidate in ci_profiles(gi.gpu.model, gi.profile):
                if candidate.index == index:
                    return _ci_profile_info(gi, candidate, version)
            raise fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any:
        """Create a compute instance; it becomes a MIG device with a fresh UUID."""
        with self._call(gpuInstance):
            self._require_privilege()
            gi = self._gpu_instance(gpuInstance)
            profile = self._ci_profile_by_id(gi, profileId)
            return ctypes.pointer(self._fleet.create_compute_instance(gi, profile).handle)

    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: int, computeInstancesRef: Any, countRef: Any
    ) -> int:
        """Fill the caller's array with the compute instances of a CI profile."""
        with self._call(gpuInstance):
            self._require_privilege()
            gi = self._gpu_instance(gpuInstance)
            profile = self._ci_profile_by_id(gi, profileId)
            found = [
                ctypes.pointer(ci.handle)
                for _, ci in sorted(gi.compute_instances.items())
                if ci.profile.id == profile.id
            ]
            fill(computeInstancesRef, found)
            store(countRef, len(found))
            return _SUCCESS

    def nvmlGpuInstanceGetComputeInstanceById(
        self, gpuInstance: Any, computeInstanceId: int
    ) -> Any:
        """The compute instance with this id; NotFound if there is none."""
        with self._call(gpuInstance):
            self._require_privilege()
            ci = self._gpu_instance(gpuInstance).compute_instances.get(computeInstanceId)
            if ci is None:
                raise fail(pynvml.NVML_ERROR_NOT_FOUND)
            return ctypes.pointer(ci.handle)

    def nvmlComputeInstanceGetInfo_v2(self, computeInstance: Any) -> Any:
        """``c_nvmlComputeInstanceInfo_t``: parent, GPU instance, id, profile, placement."""
        with self._call(computeInstance):
            ci = self._compute_instance(computeInstance)
            info = pynvml.c_nvmlComputeInstanceInfo_t()
            info.device = ctypes.pointer(ci.gpu.device)
            info.gpuInstance = ctypes.pointer(ci.gpu_instance.handle)
            info.id = ci.id
            info.profileId = ci.profile.id
            info.placement = pynvml.c_nvmlComputeInstancePlacement_t(ci.start, ci.profile.slices)
            return info

    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:
        """Same as ``nvmlComputeInstanceGetInfo_v2``, as in pynvml."""
        return self.nvmlComputeInstanceGetInfo_v2(computeInstance)

    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:
        """Destroy a compute instance; its MIG device handle becomes stale."""
        with self._call(computeInstance):
            self._require_privilege()
            self._fleet.destroy_compute_instance(self._compute_instance(computeInstance))
            return _SUCCESS
