"""What an operator's tool (``nvidia-smi mig -dci/-dgi/-cgi -C``) does, through the fake NVML."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import pynvml

if TYPE_CHECKING:
    from collections.abc import Sequence

    from migexporter.sim._spec import GiSpec
    from migexporter.sim.nvml import FakeNvml
    from migexporter.sim.profiles import Placement


def _gpu_instances(nv: FakeNvml, device: Any) -> list[Any]:
    """Every GPU instance handle, found profile by profile as NVML offers no other way."""
    handles: list[Any] = []
    for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nv.nvmlDeviceGetGpuInstanceProfileInfo(device, index)
        except pynvml.NVMLError_NotSupported:
            continue
        except pynvml.NVMLError_InvalidArgument:
            break  # past the profiles this driver knows, as NVML documents
        array = (pynvml.c_nvmlGpuInstance_t * info.instanceCount)()
        count = ctypes.c_uint()
        nv.nvmlDeviceGetGpuInstances(device, info.id, array, ctypes.byref(count))
        handles.extend(array[i] for i in range(count.value))
    return handles


def _compute_instances(nv: FakeNvml, gpu_instance: Any) -> list[Any]:
    """Every compute instance handle of a GPU instance."""
    handles: list[Any] = []
    for index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gpu_instance, index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
        except pynvml.NVMLError_NotSupported:
            continue
        array = (pynvml.c_nvmlComputeInstance_t * info.instanceCount)()
        count = ctypes.c_uint()
        nv.nvmlGpuInstanceGetComputeInstances(gpu_instance, info.id, array, ctypes.byref(count))
        handles.extend(array[i] for i in range(count.value))
    return handles


def destroy_all(nv: FakeNvml, gpu: int) -> None:
    """Destroy every compute instance, then every GPU instance, of GPU ``gpu``."""
    device = nv.nvmlDeviceGetHandleByIndex(gpu)
    for gpu_instance in _gpu_instances(nv, device):
        for compute_instance in _compute_instances(nv, gpu_instance):
            nv.nvmlComputeInstanceDestroy(compute_instance)
        nv.nvmlGpuInstanceDestroy(gpu_instance)


def create_layout(
    nv: FakeNvml, gpu: int, layout: Sequence[GiSpec], placements: Sequence[Placement]
) -> None:
    """Create each GPU instance at its placement, then its compute instances."""
    device = nv.nvmlDeviceGetHandleByIndex(gpu)
    for spec, placement in zip(layout, placements, strict=True):
        where = pynvml.c_nvmlGpuInstancePlacement_t(placement.start, placement.size)
        gpu_instance = nv.nvmlDeviceCreateGpuInstanceWithPlacement(
            device, spec.profile.id, ctypes.byref(where)
        )
        for ci in spec.compute_instances:
            nv.nvmlGpuInstanceCreateComputeInstance(gpu_instance, ci.id)


def destroy_gpu_instance(nv: FakeNvml, gpu: int, gi_id: int) -> None:
    """Destroy one GPU instance of GPU ``gpu`` and its compute instances."""
    device = nv.nvmlDeviceGetHandleByIndex(gpu)
    for gpu_instance in _gpu_instances(nv, device):
        if nv.nvmlGpuInstanceGetInfo(gpu_instance).id == gi_id:
            for compute_instance in _compute_instances(nv, gpu_instance):
                nv.nvmlComputeInstanceDestroy(compute_instance)
            nv.nvmlGpuInstanceDestroy(gpu_instance)
