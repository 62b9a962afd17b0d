"""Simulator stand-in for DCGM 4.6's ``dcgm_agent``: the API functions, with NVIDIA's names.

Each function has the real one's parameters, returns the real one's ctypes structs (or
lists), and raises ``dcgm_structs.DCGMError`` subclasses; the work is done by the installed
``migexporter.sim.dcgm_engine.SimHostEngine``.
"""

from __future__ import annotations

import functools
from collections import deque
from ctypes import CFUNCTYPE, POINTER, c_int32, c_uint32, c_void_p, memset, sizeof
from typing import TYPE_CHECKING, Any

import dcgm_fields
import dcgm_structs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from migexporter.sim.dcgm_engine import FieldValue

dcgmFP = dcgm_structs._dcgmGetFunctionPointer  # noqa: SLF001 (as the real module)
_freed: deque[Any] = deque()  # poisoned value buffers of past enumerations (see _enumerate)
_FREED_BYTES = 128 << 20

# Callback types, first the return type: (gpuId, values, count, userData) and the same
# with (entityGroupId, entityId, ...). The callback returns 0 to go on.
dcgmFieldValueEnumeration_f = CFUNCTYPE(
    c_int32, c_uint32, POINTER(dcgm_structs.c_dcgmFieldValue_v1), c_int32, c_void_p
)
dcgmFieldValueEntityEnumeration_f = CFUNCTYPE(
    c_int32, c_uint32, c_uint32, POINTER(dcgm_structs.c_dcgmFieldValue_v1), c_int32, c_void_p
)


def ensure_byte_strings() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Pass ``str`` arguments on as UTF-8 bytes, as C expects."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            args = tuple(a.encode() if isinstance(a, str) else a for a in args)
            kwargs = {k: v.encode() if isinstance(v, str) else v for k, v in kwargs.items()}
            return fn(*args, **kwargs)

        return wrapper

    return decorator


def _id(value: Any) -> int:
    """A handle, group or field group id passed as ``c_void_p`` or ``int`` (C takes both)."""
    if isinstance(value, c_void_p):
        return value.value or 0
    return int(value or 0)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fill(fv: Any, value: FieldValue) -> None:
    """Copy one engine value into a ``c_dcgmFieldValue_v1`` or ``_v2``."""
    fv.fieldId = value.field_id
    fv.fieldType = ord(value.field_type)
    fv.status = value.status
    fv.ts = value.ts
    if value.field_type == dcgm_fields.DCGM_FT_DOUBLE:
        fv.value.dbl = float(value.value)
    elif value.field_type == dcgm_fields.DCGM_FT_STRING:
        fv.value.str = str(value.value).encode()[: dcgm_structs.DCGM_MAX_STR_LENGTH - 1]
    else:
        fv.value.i64 = int(value.value)


def _values_v1(values: Sequence[FieldValue]) -> Any:
    array = (dcgm_structs.c_dcgmFieldValue_v1 * len(values))()
    for position, value in enumerate(values):
        fv = array[position]
        fv.version = dcgm_structs.dcgmFieldValue_version1
        _fill(fv, value)
    return array


@ensure_byte_strings()
def dcgmInit() -> int:
    """Initialise the client library (harmless to repeat)."""
    dcgmFP("dcgmInit")()
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmShutdown() -> int:
    """Close every connection of this process and uninitialise the library."""
    dcgmFP("dcgmShutdown")()
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmStartEmbedded(opMode: int) -> c_void_p:
    """Start an embedded host engine; its handle."""
    return c_void_p(dcgmFP("dcgmStartEmbedded")(opMode))


@ensure_byte_strings()
def dcgmStopEmbedded(dcgm_handle: Any) -> int:
    """Stop the embedded host engine of a handle."""
    dcgmFP("dcgmStopEmbedded")(_id(dcgm_handle))
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmConnect(ip_address: str | bytes) -> c_void_p:
    """Connect to a host engine at ``host[:port]``, without persistence."""
    return c_void_p(dcgmFP("dcgmConnect")(_text(ip_address), persist=False, timeout_ms=0))


@ensure_byte_strings()
def dcgmConnect_v2(
    ip_address: str | bytes,
    connectParams: Any,
    version: int = dcgm_structs.c_dcgmConnectV2Params_version,
) -> c_void_p:
    """Connect to ``host[:port]``, or a unix socket path if ``addressIsUnixSocket``."""
    connectParams.version = version
    connect = dcgmFP("dcgmConnect")
    return c_void_p(
        connect(
            _text(ip_address),
            persist=bool(connectParams.persistAfterDisconnect),
            timeout_ms=int(connectParams.timeoutMs),
            unix=bool(connectParams.addressIsUnixSocket),
        )
    )


@ensure_byte_strings()
def dcgmConnect_v3(
    connection_string: str | bytes,
    connectParams: Any,
    version: int = dcgm_structs.c_dcgmConnectV3Params_version,
) -> c_void_p:
    """Connect to ``tcp://host[:port]`` or ``unix:///path`` (no scheme: TCP)."""
    connectParams.version = version
    connect = dcgmFP("dcgmConnect")
    persist, timeout = bool(connectParams.persistAfterDisconnect), int(connectParams.timeoutMs)
    return c_void_p(connect(_text(connection_string), persist=persist, timeout_ms=timeout))


@ensure_byte_strings()
def dcgmDisconnect(dcgm_handle: Any) -> int:
    """Close a connection to a host engine."""
    dcgmFP("dcgmDisconnect")(_id(dcgm_handle))
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmGetAllSupportedDevices(dcgm_handle: Any) -> list[int]:
    """GPU ids DCGM supports."""
    return list(dcgmFP("dcgmGetAllSupportedDevices")(_id(dcgm_handle)))


@ensure_byte_strings()
def dcgmGetAllDevices(dcgm_handle: Any) -> list[int]:
    """Every GPU id."""
    return list(dcgmFP("dcgmGetAllDevices")(_id(dcgm_handle)))


@ensure_byte_strings()
def dcgmGetDeviceAttributes(
    dcgm_handle: Any, gpuId: int, version: int = dcgm_structs.dcgmDeviceAttributes_version3
) -> Any:
    """``c_dcgmDeviceAttributes_v3`` of a GPU."""
    if version != dcgm_structs.dcgmDeviceAttributes_version3:
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_VER_MISMATCH)  # noqa: SLF001
    got = dcgmFP("dcgmGetDeviceAttributes")(_id(dcgm_handle), gpuId)
    attributes = dcgm_structs.c_dcgmDeviceAttributes_v3()
    attributes.version = version
    identifiers = attributes.identifiers
    identifiers.brandName = "NVIDIA"
    identifiers.deviceName = got.name
    identifiers.pciBusId = got.pci_bus_id
    identifiers.serial = got.serial
    identifiers.uuid = got.uuid
    identifiers.vbios = "96.00.99.00.01"
    identifiers.pciDeviceId = got.pci_device_id
    identifiers.pciSubSystemId = got.pci_subsystem_id
    identifiers.driverVersion = got.driver_version
    memory = attributes.memoryUsage
    memory.fbTotal = got.memory_total_mib
    memory.fbUsed = got.memory_used_mib
    memory.fbFree = got.memory_total_mib - got.memory_used_mib
    limits = attributes.powerLimits
    limits.curPowerLimit = limits.defaultPowerLimit = got.power_limit_w
    limits.enforcedPowerLimit = limits.maxPowerLimit = got.power_limit_w
    limits.minPowerLimit = got.power_limit_w // 2
    attributes.settings.persistenceModeEnabled = 1
    attributes.settings.migModeEnabled = int(got.mig_enabled)
    return attributes


@ensure_byte_strings()
def dcgmGetEntityGroupEntities(dcgm_handle: Any, entityGroup: int, flags: int) -> list[int]:  # noqa: ARG001
    """Entity ids of an entity group (every simulated entity is supported)."""
    return list(dcgmFP("dcgmGetEntityGroupEntities")(_id(dcgm_handle), entityGroup))


@ensure_byte_strings()
def dcgmGetGpuInstanceHierarchy(dcgm_handle: Any) -> Any:
    """``c_dcgmMigHierarchy_v2``: every GPU instance and compute instance."""
    hierarchy = dcgm_structs.c_dcgmMigHierarchy_v2()
    hierarchy.version = dcgm_structs.c_dcgmMigHierarchy_version2
    instances = dcgmFP("dcgmGetGpuInstanceHierarchy")(_id(dcgm_handle))
    hierarchy.count = len(instances)
    for position, instance in enumerate(instances):
        entry = hierarchy.entityList[position]
        entry.entity.entityGroupId, entry.entity.entityId = instance.entity
        entry.parent.entityGroupId, entry.parent.entityId = instance.parent
        info = entry.info
        info.gpuUuid = instance.gpu_uuid
        info.nvmlGpuIndex = instance.gpu_index
        info.nvmlInstanceId = instance.gi_id
        info.nvmlComputeInstanceId = 0xFFFFFFFF if instance.ci_id is None else instance.ci_id
        info.nvmlMigProfileId = instance.profile_id
        info.nvmlProfileSlices = instance.slices
    return hierarchy


@ensure_byte_strings()
def dcgmGroupCreate(dcgm_handle: Any, type: int, groupName: str | bytes) -> c_void_p:  # noqa: A002
    """A new group of ``type`` (DCGM_GROUP_EMPTY, DCGM_GROUP_DEFAULT, ...); its id."""
    return c_void_p(dcgmFP("dcgmGroupCreate")(_id(dcgm_handle), type, _text(groupName)))


@ensure_byte_strings()
def dcgmGroupDestroy(dcgm_handle: Any, group_id: Any) -> int:
    """Remove a group."""
    dcgmFP("dcgmGroupDestroy")(_id(dcgm_handle), _id(group_id))
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmGroupAddDevice(dcgm_handle: Any, group_id: Any, gpu_id: int) -> int:
    """Add a GPU to a group."""
    return int(dcgmGroupAddEntity(dcgm_handle, group_id, dcgm_fields.DCGM_FE_GPU, gpu_id))


@ensure_byte_strings()
def dcgmGroupAddEntity(dcgm_handle: Any, group_id: Any, entityGroupId: int, entityId: int) -> int:
    """Add an entity (GPU, GPU instance, compute instance) to a group."""
    dcgmFP("dcgmGroupAddEntity")(_id(dcgm_handle), _id(group_id), entityGroupId, entityId)
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmGroupRemoveDevice(dcgm_handle: Any, group_id: Any, gpu_id: int) -> int:
    """Remove a GPU from a group."""
    return int(dcgmGroupRemoveEntity(dcgm_handle, group_id, dcgm_fields.DCGM_FE_GPU, gpu_id))


@ensure_byte_strings()
def dcgmGroupRemoveEntity(
    dcgm_handle: Any, group_id: Any, entityGroupId: int, entityId: int
) -> int:
    """Remove an entity from a group."""
    dcgmFP("dcgmGroupRemoveEntity")(_id(dcgm_handle), _id(group_id), entityGroupId, entityId)
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmGroupGetInfo(
    dcgm_handle: Any, group_id: Any, version: int = dcgm_structs.c_dcgmGroupInfo_version3
) -> Any:
    """``c_dcgmGroupInfo_v3``: name and entities of a group."""
    if version != dcgm_structs.c_dcgmGroupInfo_version3:
        dcgm_structs._dcgmCheckReturn(dcgm_structs.DCGM_ST_VER_MISMATCH)  # noqa: SLF001
    name, entities = dcgmFP("dcgmGroupGetInfo")(_id(dcgm_handle), _id(group_id))
    info = dcgm_structs.c_dcgmGroupInfo_v3()
    info.version = version
    info.groupName = name
    info.count = len(entities)
    for position, (entity_group, entity_id) in enumerate(entities):
        info.entityList[position].entityGroupId = entity_group
        info.entityList[position].entityId = entity_id
    return info


@ensure_byte_strings()
def dcgmGroupGetAllIds(dcgmHandle: Any) -> list[int]:
    """Every group id, the default groups (0 and 1) included."""
    return list(dcgmFP("dcgmGroupGetAllIds")(_id(dcgmHandle)))


def _field_group_info(target: Any, group: Any) -> None:
    target.version = dcgm_structs.dcgmFieldGroupInfo_version1
    target.fieldGroupId = group.id
    target.fieldGroupName = group.name
    target.numFieldIds = len(group.field_ids)
    for position, field_id in enumerate(group.field_ids):
        target.fieldIds[position] = field_id


@ensure_byte_strings()
def dcgmFieldGroupCreate(
    dcgm_handle: Any, fieldIds: Sequence[int], fieldGroupName: str | bytes
) -> c_void_p:
    """A new field group; its id."""
    create = dcgmFP("dcgmFieldGroupCreate")
    return c_void_p(create(_id(dcgm_handle), list(fieldIds), _text(fieldGroupName)))


@ensure_byte_strings()
def dcgmFieldGroupDestroy(dcgm_handle: Any, fieldGroupId: Any) -> int:
    """Remove a field group."""
    dcgmFP("dcgmFieldGroupDestroy")(_id(dcgm_handle), _id(fieldGroupId))
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmFieldGroupGetInfo(dcgm_handle: Any, fieldGroupId: Any) -> Any:
    """``c_dcgmFieldGroupInfo_v1`` of one field group."""
    group = dcgmFP("dcgmFieldGroupGetInfo")(_id(dcgm_handle), _id(fieldGroupId))
    info = dcgm_structs.c_dcgmFieldGroupInfo_v1()
    _field_group_info(info, group)
    return info


@ensure_byte_strings()
def dcgmFieldGroupGetAll(dcgm_handle: Any) -> Any:
    """``c_dcgmAllFieldGroup_v1``: every field group."""
    groups = dcgmFP("dcgmFieldGroupGetAll")(_id(dcgm_handle))
    every = dcgm_structs.c_dcgmAllFieldGroup_v1()
    every.version = dcgm_structs.dcgmAllFieldGroup_version1
    every.numFieldGroups = len(groups)
    for position, group in enumerate(groups):
        _field_group_info(every.fieldGroups[position], group)
    return every


@ensure_byte_strings()
def dcgmUpdateAllFields(dcgm_handle: Any, waitForUpdate: int) -> int:
    """Sample every watched field that is due."""
    dcgmFP("dcgmUpdateAllFields")(_id(dcgm_handle), int(waitForUpdate))
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmWatchFields(
    dcgm_handle: Any,
    groupId: Any,
    fieldGroupId: Any,
    updateFreq: int,
    maxKeepAge: float,
    maxKeepSamples: int,
) -> int:
    """Watch a field group on a group: every ``updateFreq`` us, keeping age s / samples."""
    watch = dcgmFP("dcgmWatchFields")
    watch(
        _id(dcgm_handle),
        _id(groupId),
        _id(fieldGroupId),
        int(updateFreq),
        float(maxKeepAge),
        int(maxKeepSamples),
    )
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmUnwatchFields(dcgm_handle: Any, groupId: Any, fieldGroupId: Any) -> int:
    """Stop watching a field group on a group."""
    dcgmFP("dcgmUnwatchFields")(_id(dcgm_handle), _id(groupId), _id(fieldGroupId))
    return dcgm_structs.DCGM_ST_OK


def _enumerate(
    found: list[tuple[int, int, list[FieldValue]]], enumCB: Any, userData: Any, *, gpus: bool
) -> None:
    """Call the C callback once per entity, with its values, as libdcgm does.

    libdcgm frees the values once the call returns: a callback that keeps the pointers and
    reads them later reads freed memory. Here it reads 0xFF bytes (fieldId 65535, status -1)
    instead of crashing, so the bug shows as missing values.
    """
    address = id(userData)  # what C receives for py_object(userData)
    buffers = []
    for entity_group, entity_id, values in found:
        if gpus and entity_group != dcgm_fields.DCGM_FE_GPU:
            continue
        array = _values_v1(values)
        buffers.append(array)
        if gpus:
            enumCB(entity_id, array, len(values), address)
        else:
            enumCB(entity_group, entity_id, array, len(values), address)
    for array in buffers:
        memset(array, 0xFF, sizeof(array))
        _freed.append(array)  # kept mapped a while, so late readers see the poison
    while len(_freed) > 1 and sum(sizeof(a) for a in _freed) > _FREED_BYTES:
        _freed.popleft()


@ensure_byte_strings()
def dcgmGetValuesSince(
    dcgm_handle: Any,
    groupId: Any,
    fieldGroupId: Any,
    sinceTimestamp: int,
    enumCB: Any,
    userData: Any,
) -> int:
    """GPU values since ``sinceTimestamp`` through ``enumCB``; the next timestamp to pass."""
    since = dcgmFP("dcgmGetValuesSince_v2")
    found, following = since(_id(dcgm_handle), _id(groupId), _id(fieldGroupId), int(sinceTimestamp))
    _enumerate(found, enumCB, userData, gpus=True)
    return int(following)


@ensure_byte_strings()
def dcgmGetValuesSince_v2(
    dcgm_handle: Any,
    groupId: Any,
    fieldGroupId: Any,
    sinceTimestamp: int,
    enumCB: Any,
    userData: Any,
) -> int:
    """Every value since ``sinceTimestamp``, per entity through ``enumCB``; the next timestamp."""
    since = dcgmFP("dcgmGetValuesSince_v2")
    found, following = since(_id(dcgm_handle), _id(groupId), _id(fieldGroupId), int(sinceTimestamp))
    _enumerate(found, enumCB, userData, gpus=False)
    return int(following)


@ensure_byte_strings()
def dcgmGetLatestValues(
    dcgm_handle: Any, groupId: Any, fieldGroupId: Any, enumCB: Any, userData: Any
) -> int:
    """Latest GPU values through ``enumCB`` (GPU entities only)."""
    latest = dcgmFP("dcgmGetLatestValues_v2")
    _enumerate(
        latest(_id(dcgm_handle), _id(groupId), _id(fieldGroupId)), enumCB, userData, gpus=True
    )
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmGetLatestValues_v2(
    dcgm_handle: Any, groupId: Any, fieldGroupId: Any, enumCB: Any, userData: Any
) -> int:
    """Latest values per entity through ``enumCB``."""
    latest = dcgmFP("dcgmGetLatestValues_v2")
    found = latest(_id(dcgm_handle), _id(groupId), _id(fieldGroupId))
    _enumerate(found, enumCB, userData, gpus=False)
    return dcgm_structs.DCGM_ST_OK


@ensure_byte_strings()
def dcgmEntityGetLatestValues(
    dcgmHandle: Any, entityGroup: int, entityId: int, fieldIds: Sequence[int]
) -> Any:
    """``c_dcgmFieldValue_v1`` array: the latest value of each field on one entity."""
    latest = dcgmFP("dcgmEntitiesGetLatestValues")
    return _values_v1(latest(_id(dcgmHandle), [(entityGroup, entityId)], list(fieldIds), 0))


@ensure_byte_strings()
def dcgmEntitiesGetLatestValues(
    dcgmHandle: Any, entities: Sequence[Any], fieldIds: Sequence[int], flags: int
) -> Any:
    """``c_dcgmFieldValue_v2`` array of len(entities) * len(fieldIds), each with a status."""
    pairs = (dcgm_structs.c_dcgmGroupEntityPair_t * len(entities))(*entities)
    wanted = [(int(p.entityGroupId), int(p.entityId)) for p in pairs]
    values = dcgmFP("dcgmEntitiesGetLatestValues")(
        _id(dcgmHandle), wanted, list(fieldIds), int(flags)
    )
    array = (dcgm_structs.c_dcgmFieldValue_v2 * len(values))()
    for position, value in enumerate(values):
        fv = array[position]
        fv.version = dcgm_structs.dcgmFieldValue_version2
        fv.entityGroupId = value.entity_group
        fv.entityId = value.entity_id
        _fill(fv, value)
    return array


@ensure_byte_strings()
def dcgmProfGetSupportedMetricGroups(dcgmHandle: Any, gpuId: int) -> Any:
    """``c_dcgmProfGetMetricGroups_v3``: the GPU's profiling metric groups."""
    groups = dcgmFP("dcgmProfGetSupportedMetricGroups")(_id(dcgmHandle), gpuId)
    msg = dcgm_structs.c_dcgmProfGetMetricGroups_v3()
    msg.version = dcgm_structs.dcgmProfGetMetricGroups_version3
    msg.gpuId = gpuId
    msg.numMetricGroups = len(groups)
    for position, (major, minor, field_ids) in enumerate(groups):
        group = msg.metricGroups[position]
        group.majorId, group.minorId = major, minor
        group.numFieldIds = len(field_ids)
        for slot, field_id in enumerate(field_ids):
            group.fieldIds[slot] = field_id
    return msg


@ensure_byte_strings()
def dcgmVersionInfo() -> Any:
    """``c_dcgmVersionInfo_v2`` of the library."""
    msg = dcgm_structs.c_dcgmVersionInfo_v2()
    msg.version = dcgm_structs.dcgmVersionInfo_version2
    msg.rawBuildInfoString = dcgmFP("dcgmVersionInfo")()
    return msg


@ensure_byte_strings()
def dcgmHostengineIsHealthy(dcgmHandle: Any) -> Any:
    """``c_dcgmHostengineHealth_v1``; overallHealth 0 is healthy."""
    health = dcgm_structs.c_dcgmHostengineHealth_v1()
    health.version = dcgm_structs.dcgmHostengineHealth_version1
    health.overallHealth = dcgmFP("dcgmHostengineIsHealthy")(_id(dcgmHandle))
    return health
