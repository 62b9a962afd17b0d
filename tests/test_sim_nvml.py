"""The fake pynvml: names, signatures, types, errors and MIG enumeration semantics."""

from __future__ import annotations

import ctypes
import inspect
import threading

import pynvml
import pytest

from manual_clock import ManualClock
from migexporter.sim import FakeNvml, Fleet

REQUIRED = [
    "nvmlInit",
    "nvmlInitWithFlags",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceIsMigDeviceHandle",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetAttributes",
    "nvmlDeviceGetAttributes_v2",
    "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoById",
    "nvmlDeviceGetGpuInstancePossiblePlacements",
    "nvmlDeviceGetGpuInstanceRemainingCapacity",
    "nvmlDeviceCreateGpuInstance",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy",
    "nvmlDeviceGetGpuInstances",
    "nvmlDeviceGetGpuInstanceById",
    "nvmlGpuInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlComputeInstanceGetInfo",
    "nvmlComputeInstanceGetInfo_v2",
    "nvmlComputeInstanceDestroy",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetEncoderUtilization",
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetSupportedClocksEventReasons",
    "nvmlDeviceGetViolationStatus",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetSupportedEventTypes",
    "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents",
    "nvmlEventSetWait",
    "nvmlEventSetWait_v2",
    "nvmlEventSetFree",
    "nvmlGpmQueryDeviceSupport",
    "nvmlGpmSampleAlloc",
    "nvmlGpmSampleFree",
    "nvmlGpmSampleGet",
    "nvmlGpmMigSampleGet",
    "nvmlGpmMetricsGet",
]

IMPLEMENTED = sorted(
    name for name in dir(FakeNvml) if name.startswith("nvml") and callable(getattr(FakeNvml, name))
)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.default(clock=ManualClock())


def mig_handles(nv: FakeNvml, gpu: int) -> dict[int, object]:
    """MIG device index -> handle, skipping empty slots as a backend must."""
    device = nv.nvmlDeviceGetHandleByIndex(gpu)
    found = {}
    for index in range(nv.nvmlDeviceGetMaxMigDeviceCount(device)):
        try:
            found[index] = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, index)
        except pynvml.NVMLError_NotFound:
            continue
    return found


def test_every_needed_call_is_implemented_by_the_fake_itself():
    """Each call the NVML backend needs is a method of FakeNvml, not a fallback."""
    defined = {name for cls in FakeNvml.__mro__ for name in vars(cls)}
    assert [name for name in REQUIRED if name not in defined] == []


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_signature_matches_the_real_pynvml_function(name):
    """Parameter names and defaults equal those of the pynvml function of the same name."""
    real = getattr(pynvml, name)
    assert inspect.isfunction(real)
    expected = [
        (p.name, p.default)
        for p in inspect.signature(real, follow_wrapped=True).parameters.values()
    ]
    fake = list(inspect.signature(getattr(FakeNvml, name)).parameters.values())[1:]
    assert [(p.name, p.default) for p in fake] == expected


def test_the_fake_implements_at_least_the_required_calls():
    """The signature test covers every required call."""
    assert set(REQUIRED) <= set(IMPLEMENTED)


def test_constants_classes_and_errors_come_from_pynvml(nv):
    """Names the fake does not define are pynvml's own objects."""
    assert nv.NVML_DEVICE_MIG_ENABLE == pynvml.NVML_DEVICE_MIG_ENABLE
    assert nv.NVMLError is pynvml.NVMLError
    assert nv.NVMLError_NotFound is pynvml.NVMLError_NotFound
    assert nv.c_nvmlGpmMetricsGet_t is pynvml.c_nvmlGpmMetricsGet_t
    assert nv.nvmlMemory_v2 == pynvml.nvmlMemory_v2
    assert nv.nvmlExceptionClass is pynvml.nvmlExceptionClass


@pytest.mark.parametrize("name", ["nvmlDeviceGetBoardPartNumber", "nvmlDeviceGetVbiosVersion"])
def test_unimplemented_pynvml_functions_are_not_passed_through(nv, name):
    """A backend cannot reach the real library through the fake."""
    with pytest.raises(AttributeError, match="does not implement"):
        getattr(nv, name)


def test_calls_before_init_and_after_the_last_shutdown_are_uninitialized(fleet):
    """Init is reference-counted; the library is usable only between init and last shutdown."""
    fake = FakeNvml(fleet)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    fake.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_GPUS)
    fake.nvmlShutdown()
    assert fake.nvmlDeviceGetCount() == 3
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()


def test_errors_are_the_real_pynvml_subclasses(nv):
    """A failing call raises exactly the class pynvml generates for the code."""
    with pytest.raises(pynvml.NVMLError) as caught:
        nv.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    assert type(caught.value) is pynvml.NVMLError_NotFound
    assert caught.value.value == pynvml.NVML_ERROR_NOT_FOUND


def test_handles_and_structs_are_the_real_ctypes_types(nv):
    """Handles and returned structs have pynvml's own types."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    gi = nv.nvmlDeviceGetGpuInstanceById(device, 2)  # the 3g.40gb at 4:4
    ci = nv.nvmlGpuInstanceGetComputeInstanceById(gi, 0)
    assert isinstance(device, pynvml.c_nvmlDevice_t)
    assert isinstance(mig, pynvml.c_nvmlDevice_t)
    assert isinstance(gi, pynvml.c_nvmlGpuInstance_t)
    assert isinstance(ci, pynvml.c_nvmlComputeInstance_t)
    assert isinstance(nv.nvmlEventSetCreate(), pynvml.c_nvmlEventSet_t)
    assert isinstance(nv.nvmlGpmSampleAlloc(), pynvml.c_nvmlGpmSample_t)
    assert isinstance(nv.nvmlDeviceGetPciInfo(device), pynvml.nvmlPciInfo_t)
    assert isinstance(nv.nvmlDeviceGetMemoryInfo(mig), pynvml.c_nvmlMemory_t)
    assert isinstance(
        nv.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2), pynvml.c_nvmlMemory_v2_t
    )
    assert isinstance(nv.nvmlDeviceGetAttributes(mig), pynvml.c_nvmlDeviceAttributes)
    assert isinstance(nv.nvmlGpuInstanceGetInfo(gi), pynvml.c_nvmlGpuInstanceInfo_t)
    assert isinstance(nv.nvmlComputeInstanceGetInfo(ci), pynvml.c_nvmlComputeInstanceInfo_t)
    assert isinstance(nv.nvmlGpmQueryDeviceSupport(device), pynvml.c_nvmlGpmSupport_t)
    assert isinstance(nv.nvmlSystemGetDriverVersion(), str)


def test_identity_of_gpus(nv, fleet):
    """Names, UUIDs, indices and PCI ids read like a DGX H100's."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetName(device) == "NVIDIA H100 80GB HBM3"
    assert nv.nvmlDeviceGetUUID(device) == fleet.gpus[1].uuid
    assert nv.nvmlDeviceGetUUID(device).startswith("GPU-")
    assert nv.nvmlDeviceGetIndex(device) == 1
    assert nv.nvmlDeviceGetPciInfo(device).busId == "00000000:2A:00.0"
    assert nv.nvmlDeviceGetMigMode(device) == [1, 1]
    assert nv.nvmlDeviceGetMigMode(nv.nvmlDeviceGetHandleByIndex(2)) == [0, 0]
    assert bool(nv.nvmlDeviceIsMigDeviceHandle(device)) is False


def test_mig_device_identity(nv, fleet):
    """A MIG handle knows its name, UUID, GI/CI ids, index, parent and slice counts."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 1)
    flag = nv.nvmlDeviceIsMigDeviceHandle(mig)
    assert isinstance(flag, ctypes.c_uint)
    assert flag.value == 1
    assert nv.nvmlDeviceGetName(mig) == "NVIDIA H100 80GB HBM3 MIG 2g.20gb"
    assert nv.nvmlDeviceGetUUID(mig).startswith("MIG-")
    assert nv.nvmlDeviceGetGpuInstanceId(mig) == 3  # 2g.20gb at 0:2: the first quarter
    assert nv.nvmlDeviceGetComputeInstanceId(mig) == 0
    assert nv.nvmlDeviceGetIndex(mig) == 1
    parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert nv.nvmlDeviceGetUUID(parent) == fleet.gpus[0].uuid
    attributes = nv.nvmlDeviceGetAttributes_v2(mig)
    assert (attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount) == (2, 2)
    assert (attributes.multiprocessorCount, attributes.memorySizeMB) == (32, 20096)
    by_uuid = nv.nvmlDeviceGetHandleByUUID(nv.nvmlDeviceGetUUID(mig))
    assert nv.nvmlDeviceGetGpuInstanceId(by_uuid) == 3


def test_instance_ids_and_attributes_are_refused_on_a_full_gpu_handle(nv):
    """A physical GPU handle has no GI/CI ids, no parent and no MIG attributes."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetGpuInstanceId(device)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetComputeInstanceId(device)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(device)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetAttributes(device)


def test_mig_disabled_gpu_has_no_mig_devices(nv):
    """With MIG off the maximum is 0 and every index is NotFound."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    assert nv.nvmlDeviceGetMaxMigDeviceCount(device) == 0
    with pytest.raises(pynvml.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)


def test_empty_slots_are_not_found(nv):
    """The default GPU 0 uses MIG indices 0-3; 4-6 are empty."""
    assert sorted(mig_handles(nv, 0)) == [0, 1, 2, 3]
    device = nv.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 5)


def test_destroying_an_instance_leaves_a_hole_that_the_next_instance_fills(nv):
    """MIG indices are sparse after a destroy; a new CI takes the lowest free index."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    before = {i: nv.nvmlDeviceGetUUID(h) for i, h in mig_handles(nv, 1).items()}
    gi_of_index_1 = nv.nvmlDeviceGetGpuInstanceId(mig_handles(nv, 1)[1])
    gi = nv.nvmlDeviceGetGpuInstanceById(device, gi_of_index_1)
    nv.nvmlComputeInstanceDestroy(nv.nvmlGpuInstanceGetComputeInstanceById(gi, 0))
    nv.nvmlGpuInstanceDestroy(gi)
    assert sorted(mig_handles(nv, 1)) == [0, 2, 3, 4, 5, 6]
    assert nv.nvmlDeviceGetMaxMigDeviceCount(device) == 7

    new_gi = nv.nvmlDeviceCreateGpuInstance(device, 19)
    nv.nvmlGpuInstanceCreateComputeInstance(new_gi, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE)
    after = {i: nv.nvmlDeviceGetUUID(h) for i, h in mig_handles(nv, 1).items()}
    assert sorted(after) == list(range(7))
    assert after[1] != before[1]  # a new MIG device gets a new UUID
    assert {i: u for i, u in after.items() if i != 1} == {i: u for i, u in before.items() if i != 1}


def test_a_stale_mig_handle_is_rejected_after_reconfiguration(nv, fleet):
    """Handles and UUIDs of destroyed MIG devices stop resolving."""
    mig = mig_handles(nv, 0)[0]
    uuid = nv.nvmlDeviceGetUUID(mig)
    fleet.reconfigure(0, ["7g.80gb"])
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetUUID(mig)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nv.nvmlDeviceGetHandleByUUID(uuid)
    assert nv.nvmlDeviceGetName(mig_handles(nv, 0)[0]) == "NVIDIA H100 80GB HBM3 MIG 7g.80gb"


def test_a_compute_instance_smaller_than_its_gpu_instance_is_named_by_both():
    """Seven 1c CIs in one 7g GI are seven MIG devices named 1c.7g.80gb."""
    fake = FakeNvml(Fleet.from_spec("h100-80gb:7g.80gb/1c*7"))
    fake.nvmlInit()
    handles = mig_handles(fake, 0)
    assert sorted(handles) == list(range(7))
    names = {fake.nvmlDeviceGetName(h) for h in handles.values()}
    assert names == {"NVIDIA H100 80GB HBM3 MIG 1c.7g.80gb"}
    assert {fake.nvmlDeviceGetGpuInstanceId(h) for h in handles.values()} == {0}  # whole GPU
    assert sorted(fake.nvmlDeviceGetComputeInstanceId(h) for h in handles.values()) == list(
        range(7)
    )


def test_utilization_is_not_supported_for_anything_mig(nv):
    """MIG handles and MIG-enabled parents answer NotSupported; a full GPU answers."""
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetUtilizationRates(mig_handles(nv, 0)[0])
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetUtilizationRates(nv.nvmlDeviceGetHandleByIndex(0))
    rates = nv.nvmlDeviceGetUtilizationRates(nv.nvmlDeviceGetHandleByIndex(2))
    assert isinstance(rates, pynvml.c_nvmlUtilization_t)
    assert 0 <= rates.memory <= rates.gpu <= 100


def test_remapped_rows_are_not_supported_with_active_instances(nv):
    """Row remapping answers on a GPU without instances only (nvml.h)."""
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetRemappedRows(nv.nvmlDeviceGetHandleByIndex(0))
    assert nv.nvmlDeviceGetRemappedRows(nv.nvmlDeviceGetHandleByIndex(2)) == (0, 0, 0, 0)


def test_gpu_instance_profile_table_matches_the_h100(nv):
    """Profile index -> id as read from an H100 (facts §1.3), with v2 names."""
    device = nv.nvmlDeviceGetHandleByIndex(2)  # works with MIG disabled too
    ids = {}
    for index in range(0x11):  # driver 580 answers InvalidArgument from 0x11 on
        try:
            info = nv.nvmlDeviceGetGpuInstanceProfileInfo(device, index)
        except pynvml.NVMLError_NotSupported:
            continue
        ids[index] = (info.id, info.name, info.memorySizeMB)
    assert ids == {
        0: (19, "MIG 1g.10gb", 9984),
        1: (14, "MIG 2g.20gb", 20096),
        2: (9, "MIG 3g.40gb", 40448),
        3: (5, "MIG 4g.40gb", 40448),
        4: (0, "MIG 7g.80gb", 81152),
        7: (20, "MIG 1g.10gb+me", 9984),
        9: (15, "MIG 1g.20gb", 20096),
    }
    for beyond_driver_580 in (0x11, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nv.nvmlDeviceGetGpuInstanceProfileInfo(device, beyond_driver_580)
    v1 = nv.nvmlDeviceGetGpuInstanceProfileInfo(device, 2, version=1)
    assert isinstance(v1, pynvml.c_nvmlGpuInstanceProfileInfo_t)
    assert v1.multiprocessorCount == 60
    assert nv.nvmlDeviceGetGpuInstanceProfileInfoById(device, 9).name == "MIG 3g.40gb"


def test_possible_placements_and_capacity_fill_the_callers_buffers(nv):
    """Placements of 3g.40gb are 0:4 and 4:4; two fit on an empty GPU."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    count = ctypes.c_uint()
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(device, 9, None, ctypes.byref(count))
    assert count.value == 2
    placements = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(device, 9, placements, ctypes.byref(count))
    assert [(p.start, p.size) for p in placements] == [(0, 4), (4, 4)]
    assert nv.nvmlDeviceGetGpuInstanceRemainingCapacity(device, 9) == 2
    assert nv.nvmlDeviceGetGpuInstanceRemainingCapacity(nv.nvmlDeviceGetHandleByIndex(0), 19) == 0


def test_gpu_and_compute_instance_listing(nv, fleet):
    """GetGpuInstances fills the array and count; infos carry ids, profile and placement."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    array = (pynvml.c_nvmlGpuInstance_t * 7)()
    count = ctypes.c_uint()
    nv.nvmlDeviceGetGpuInstances(device, 19, array, ctypes.byref(count))
    assert count.value == 2
    infos = [nv.nvmlGpuInstanceGetInfo(array[i]) for i in range(count.value)]
    assert [(i.id, i.profileId, i.placement.start, i.placement.size) for i in infos] == [
        (9, 19, 2, 1),
        (10, 19, 3, 1),
    ]
    assert nv.nvmlDeviceGetUUID(infos[0].device) == fleet.gpus[0].uuid

    gi = nv.nvmlDeviceGetGpuInstanceById(device, 2)
    cis = (pynvml.c_nvmlComputeInstance_t * 1)()
    nv.nvmlGpuInstanceGetComputeInstances(gi, 2, cis, ctypes.byref(count))
    assert count.value == 1
    info = nv.nvmlComputeInstanceGetInfo(cis[0])
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (0, 2, 0, 3)
    assert nv.nvmlGpuInstanceGetInfo(info.gpuInstance).id == 2
    with pytest.raises(pynvml.NVMLError_NotFound):
        nv.nvmlDeviceGetGpuInstanceById(device, 1)  # the first half is not one instance


def test_compute_instance_profiles_of_a_4g_instance(nv, fleet):
    """A 4g GI offers 1c, 2c, 3c and 4c CIs, four, two, one and one at a time."""
    fleet.reconfigure(0, ["4g.40gb"])
    gi = nv.nvmlDeviceGetGpuInstanceById(nv.nvmlDeviceGetHandleByIndex(0), 1)
    offered = {}
    for index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
        except pynvml.NVMLError_NotSupported:
            continue
        offered[info.name] = (info.sliceCount, info.instanceCount)
    assert offered == {
        "MIG 1c.4g.40gb": (1, 4),
        "MIG 2c.4g.40gb": (2, 2),
        "MIG 3c.4g.40gb": (3, 1),
        "MIG 4g.40gb": (4, 1),
    }


def test_creation_rules_of_the_driver(nv):
    """Bad placements are invalid, overlaps are out of resources, busy GIs are in use."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    odd = pynvml.c_nvmlGpuInstancePlacement_t(1, 4)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceCreateGpuInstanceWithPlacement(device, 9, ctypes.byref(odd))
    taken = pynvml.c_nvmlGpuInstancePlacement_t(4, 4)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nv.nvmlDeviceCreateGpuInstanceWithPlacement(device, 9, ctypes.byref(taken))
    with pytest.raises(pynvml.NVMLError_InUse):
        nv.nvmlGpuInstanceDestroy(nv.nvmlDeviceGetGpuInstanceById(device, 7))
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceCreateGpuInstance(nv.nvmlDeviceGetHandleByIndex(2), 19)


def test_a_placement_passed_by_value_is_refused_as_the_real_library_cannot_take_it(nv):
    """pynvml passes the placement to C as is: by value, the real library crashes on it."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    by_value = pynvml.c_nvmlGpuInstancePlacement_t(0, 4)
    with pytest.raises(TypeError, match="byref"):
        nv.nvmlDeviceCreateGpuInstanceWithPlacement(device, 9, by_value)


def test_memory_of_a_mig_device_is_its_gpu_instance_memory(nv):
    """MIG handles report the GI's memory; the parent reports the whole GPU."""
    mig = mig_handles(nv, 1)[0]
    memory = nv.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2)
    assert memory.total == 9984 * 2**20
    assert memory.used + memory.free + memory.reserved == memory.total
    parent = nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(1))
    assert parent.total == 81559 * 2**20
    assert parent.used + parent.free == parent.total


def test_unprivileged_callers_lose_the_privileged_calls(fleet):
    """Without privileges GI/CI handles and MIG-mode parent memory raise NoPermission."""
    fake = FakeNvml(fleet, privileged=False)
    fake.nvmlInit()
    device = fake.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint()
    array = (pynvml.c_nvmlGpuInstance_t * 2)()
    for call in (
        lambda: fake.nvmlDeviceGetGpuInstanceById(device, 1),
        lambda: fake.nvmlDeviceGetGpuInstances(device, 9, array, ctypes.byref(count)),
        lambda: fake.nvmlDeviceGetGpuInstanceRemainingCapacity(device, 9),
        lambda: fake.nvmlDeviceGetGpuInstancePossiblePlacements(device, 9, None, count),
        lambda: fake.nvmlDeviceCreateGpuInstance(device, 19),
        lambda: fake.nvmlDeviceGetMemoryInfo(device),
    ):
        with pytest.raises(pynvml.NVMLError_NoPermission):
            call()
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    assert fake.nvmlDeviceGetMemoryInfo(mig).total == 40448 * 2**20
    assert fake.nvmlDeviceGetMemoryInfo(fake.nvmlDeviceGetHandleByIndex(2)).total > 0
    assert fake.nvmlDeviceGetGpuInstanceProfileInfo(device, 0).id == 19


def test_physical_telemetry_reads_on_parents_only(nv):
    """Temperature, power, energy, clocks and ECC answer on a GPU, not on a MIG device."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    assert 30 <= nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU) <= 85
    assert 0 < nv.nvmlDeviceGetPowerUsage(device) < nv.nvmlDeviceGetEnforcedPowerLimit(device)
    assert nv.nvmlDeviceGetEnforcedPowerLimit(device) == 700_000
    assert nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_MEM) == 2619
    assert nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_SM) <= 1980
    assert (
        nv.nvmlDeviceGetTotalEccErrors(
            device, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC
        )
        == 0
    )
    mig = mig_handles(nv, 0)[0]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetPowerUsage(mig)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceGetTemperature(mig, pynvml.NVML_TEMPERATURE_GPU)


def test_injected_ecc_errors_are_counted(nv, fleet):
    """ECC counters stay 0 until errors are injected, then count them."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    fleet.inject_ecc(2, uncorrected=True, count=3)
    corrected, uncorrected = (
        nv.nvmlDeviceGetTotalEccErrors(device, kind, pynvml.NVML_VOLATILE_ECC) for kind in (0, 1)
    )
    assert (corrected, uncorrected) == (0, 3)


def test_foreign_and_null_handles_are_invalid(nv):
    """Anything that is not a live handle of the right kind is an invalid argument."""
    for handle in (pynvml.c_nvmlDevice_t(), ctypes.pointer(pynvml.struct_c_nvmlDevice_t()), 7):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nv.nvmlDeviceGetUUID(handle)
    gi = nv.nvmlDeviceGetGpuInstanceById(nv.nvmlDeviceGetHandleByIndex(0), 2)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetUUID(gi)


def test_concurrent_readers_see_only_nvml_errors_while_the_layout_changes(fleet):
    """Readers racing reconfiguration get data or NVML's stale-handle errors, nothing else."""
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    unexpected: list[BaseException] = []
    stop = threading.Event()
    expected = (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument)

    def read() -> None:
        sample = fake.nvmlGpmSampleAlloc()
        while not stop.is_set():
            try:
                for mig in mig_handles(fake, 0).values():
                    fake.nvmlDeviceGetUUID(mig)
                    fake.nvmlDeviceGetMemoryInfo(mig)
                    fake.nvmlGpmSampleGet(mig, sample)
            except expected:
                continue
            except BaseException as error:  # collected for the assertion below
                unexpected.append(error)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for round_ in range(60):
        fleet.reconfigure(0, ["1g.10gb*7"] if round_ % 2 else ["3g.40gb", "2g.20gb", "1g.10gb"])
    stop.set()
    for reader in readers:
        reader.join(5)
    assert not any(reader.is_alive() for reader in readers)
    assert unexpected == []
