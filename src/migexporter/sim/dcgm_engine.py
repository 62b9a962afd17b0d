"""A simulated DCGM host engine: what the simulator's DCGM bindings load as libdcgm.so.4.

``install(SimHostEngine(fleet))`` makes the engine "the installed library" of this process;
the fake bindings in ``BINDINGS_DIR`` (NVIDIA's module names, signatures and structs) call its
``dcgm*`` methods, which take and return plain Python values and raise ``EngineError`` with a
``DCGM_ST_*`` code where libdcgm would return one.

The engine serves an embedded host engine and remote connections to its ``addresses``, holds
groups, field groups and watches per engine process, and samples lazily: each update or read
takes a sample of every watch that is at least one update interval old by the fleet clock.
``Fleet.fault(kind="hostengine_down" | "hostengine_up")`` kills and restarts that process.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from migexporter.sim._dcgm_cache import Cache, Instance, Sample, Watch, Watcher
from migexporter.sim._dcgm_fields import (
    FE_GPU,
    FE_GPU_CI,
    FE_GPU_I,
    ST_BADPARAM,
    ST_CONNECTION_NOT_VALID,
    ST_DUPLICATE_KEY,
    ST_INIT_ERROR,
    ST_MAX_LIMIT,
    ST_NO_DATA,
    ST_NOT_CONFIGURED,
    ST_NOT_WATCHED,
    ST_PROFILING_MULTI_PASS,
    ST_UNINITIALIZED,
    FieldInfo,
    Value,
    field_info,
    is_profiling,
    sentinel,
)
from migexporter.sim.nvml import DRIVER_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from migexporter.sim.fleet import Fleet

__all__ = [
    "BINDINGS_DIR",
    "EngineError",
    "SimHostEngine",
    "install",
    "installed",
    "uninstall",
]

BINDINGS_DIR = Path(__file__).resolve().parent / "dcgm_bindings"
VERSION = "4.6.0"
BUILD_INFO = (
    f"version:{VERSION};arch:x86_64;buildtype:Release;buildid:0;commit:simulated;"
    "branch:simulated;buildplatform:Linux 6.8 x86_64;crc:0"
)
DEFAULT_PORT = 5555  # DCGM_HE_PORT_NUMBER
MAX_GROUPS = 64  # DCGM_MAX_NUM_GROUPS, counting the two default groups
MAX_FIELD_GROUPS = 64
MAX_FIELDS_PER_GROUP = 128
MAX_ENTITIES_PER_GROUP = 1024
CONNECT_RETRY_S = 0.05  # the client retries every 50 ms: a refused connect costs one wait
# Group types (dcgmGroupType_t) and the special group ids.
_GROUP_DEFAULT, _GROUP_EMPTY, _GROUP_NVSWITCHES = 0, 1, 2
_GROUP_INSTANCES, _GROUP_COMPUTE_INSTANCES, _GROUP_ENTITIES = 3, 4, 5
_ALL_GPUS, _ALL_NVSWITCHES, _ALL_INSTANCES = 0x7FFFFFFF, 0x7FFFFFFE, 0x7FFFFFFD
_ALL_COMPUTE_INSTANCES, _ALL_ENTITIES = 0x7FFFFFFC, 0x7FFFFFFB
_DEFAULT_GROUP_NAMES = {0: "DCGM_ALL_SUPPORTED_GPUS", 1: "DCGM_ALL_SUPPORTED_NVSWITCHES"}
_LIVE_DATA = 1  # DCGM_FV_FLAG_LIVE_DATA

MetricGroup = tuple[int, int, tuple[int, ...]]  # (majorId, minorId, field ids)
# Hopper and newer: GPM serves every profiling metric at once (dcgm_agent.h).
GPM_METRIC_GROUPS: list[MetricGroup] = [(0, 0, tuple(range(1001, 1013)))]
# Ampere: `dcgmi profile -l` on an A10 (NVIDIA/DCGM #144). A.2 = FP64 is an assumption: the
# A10 has no FP64 pipe to list; A100/A30 do.
PROFILING_METRIC_GROUPS: list[MetricGroup] = [
    (0, 1, (1002, 1003, 1004, 1007)),
    (0, 2, (1006,)),
    (0, 3, (1008,)),
    (1, 0, (1005,)),
    (2, 0, (1009, 1010)),
    (3, 0, (1001,)),
    (4, 0, (1011, 1012)),
]


SM_OCCUPANCY = 1003


def _own_pass(groups: list[MetricGroup], field_id: int) -> list[MetricGroup]:
    """The metric groups with ``field_id`` moved to a new minor group of its major."""
    moved: list[MetricGroup] = []
    for major, minor, fields in groups:
        if field_id in fields:
            last_minor = max(m for j, m, _ in groups if j == major)
            moved.append((major, minor, tuple(f for f in fields if f != field_id)))
            moved.append((major, last_minor + 1, (field_id,)))
        else:
            moved.append((major, minor, fields))
    return moved


class EngineError(Exception):
    """A DCGM return code other than DCGM_ST_OK; the bindings raise it as ``DCGMError``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class FieldValue(NamedTuple):
    """One value as ``c_dcgmFieldValue_v1``/``_v2`` carry it; blanks hold a sentinel."""

    entity_group: int
    entity_id: int
    field_id: int
    field_type: str  # "d", "i" or "s"
    status: int
    ts: int
    value: Value


@dataclass(frozen=True)
class DeviceAttributes:
    """What ``dcgmGetDeviceAttributes`` reports: DCGM's cached, mostly static GPU facts."""

    name: str
    uuid: str
    pci_bus_id: str
    serial: str
    pci_device_id: int
    pci_subsystem_id: int
    driver_version: str
    memory_total_mib: int
    memory_used_mib: int
    power_limit_w: int
    mig_enabled: bool


@dataclass(frozen=True)
class FieldGroupInfo:
    """One field group: ``dcgmFieldGroupGetInfo``."""

    id: int
    name: str
    field_ids: tuple[int, ...]
    owner: int


@dataclass(eq=False)
class _Group:
    id: int
    name: str
    owner: int
    entities: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class _Connection:
    handle: int
    id: int
    generation: int
    persist: bool
    embedded: bool

    @property
    def owner(self) -> int:
        """Who owns what the connection creates: DCGM_CONNECTION_ID_NONE (0) when persistent."""
        return 0 if self.persist else self.id


class _Process:
    """One run of the host engine: everything a restart throws away."""

    def __init__(self, fleet: Fleet, stamp: Callable[[], int]) -> None:
        self.cache = Cache(fleet, stamp)
        self.groups: dict[int, _Group] = {}
        self.field_groups: dict[int, FieldGroupInfo] = {}
        self.group_ids = itertools.count(2)  # 0 and 1 are the default groups
        self.field_group_ids = itertools.count(1)
        self.connection_ids = itertools.count(1)


def _address(text: str, *, unix: bool = False) -> str:
    """A listening address or connection string as ``host:port`` or a socket path."""
    if text.startswith("unix://"):
        return text.removeprefix("unix://")
    if unix or text.startswith("/"):
        return text
    host = text.removeprefix("tcp://")
    if ":" not in host:
        host = f"{host}:{DEFAULT_PORT}"
    name, port = host.rsplit(":", 1)
    return f"{'127.0.0.1' if name == 'localhost' else name}:{port}"


class SimHostEngine:
    """nv-hostengine over a simulated fleet, listening on ``addresses`` and embeddable.

    Args:
        fleet: the simulated node; its ``hostengine_down``/``hostengine_up`` faults stop and
            restart this engine.
        addresses: where remote clients may connect: ``host:port`` (``host`` means port
            5555) or unix socket paths. The embedded engine is always available while up.

    Test hooks: ``metric_groups[gpu_index]`` replaces a GPU's profiling metric groups, and
    ``override`` forces the status (and value) ``dcgmEntitiesGetLatestValues`` returns.
    """

    def __init__(self, fleet: Fleet, *, addresses: Iterable[str] = ()) -> None:
        self.fleet = fleet
        self.metric_groups: dict[int, list[MetricGroup]] = {}
        self._addresses = {_address(a) for a in addresses}
        self._lock = threading.RLock()
        self._inits = 0
        self._connections: dict[int, _Connection] = {}
        self._handles = itertools.count(0x5EED0001)  # never reused, so stale stays stale
        self._process: _Process | None = None
        self._generation = -1
        self._last_ts = 0
        self._overrides: dict[tuple[int, int, int], tuple[int, Value | None]] = {}

    # --- test hooks ---

    def listen(self, address: str) -> None:
        """Accept remote connections at ``address`` too."""
        with self._lock:
            self._addresses.add(_address(address))

    def override(
        self,
        entity_group: int,
        entity_id: int,
        field_id: int,
        status: int,
        value: Value | None = None,
    ) -> None:
        """Make latest-value reads of one (entity, field) answer ``status`` and ``value``.

        ``value`` None means the field type's blank.
        """
        with self._lock:
            self._overrides[entity_group, entity_id, field_id] = (status, value)

    def clear_overrides(self) -> None:
        """Forget every ``override``."""
        with self._lock:
            self._overrides.clear()

    def profiling_groups(self, gpu_index: int) -> list[MetricGroup]:
        """The GPU's profiling metric groups: the test override, else its model's."""
        if gpu_index in self.metric_groups:
            return self.metric_groups[gpu_index]
        gpu = self.fleet.gpus[gpu_index]
        groups = GPM_METRIC_GROUPS if gpu.model.gpm else PROFILING_METRIC_GROUPS
        return _own_pass(groups, SM_OCCUPANCY) if gpu.profiling_multipass else groups

    # --- engine process and connections ---

    def _stamp(self) -> int:
        """Microseconds since the epoch, strictly increasing."""
        self._last_ts = max(int(time.time() * 1e6), self._last_ts + 1)
        return self._last_ts

    def _running(self) -> _Process:
        """The live engine process, started afresh after a restart; INIT_ERROR while down."""
        if not self.fleet.hostengine_up:
            raise EngineError(ST_INIT_ERROR)
        generation = self.fleet.hostengine_generation
        if self._process is None or generation != self._generation:
            if self._process is not None:
                self._process.cache.close()
            self._process = None  # a failed start leaves none
            self._process = _Process(self.fleet, self._stamp)
            self._generation = generation
        return self._process

    def _enter(self, dcgm_handle: int) -> tuple[_Process, _Connection]:
        """Check a handle and bring the cache up to date with the driver's events."""
        connection = self._connections.get(dcgm_handle)
        if connection is None:
            raise EngineError(ST_BADPARAM)  # never issued, disconnected, or after shutdown
        if not self.fleet.hostengine_up:
            raise EngineError(ST_CONNECTION_NOT_VALID)
        process = self._running()
        if connection.generation != self._generation:
            raise EngineError(ST_CONNECTION_NOT_VALID)  # a connection to a dead process
        process.cache.drain()
        return process, connection

    def _open(self, *, persist: bool, embedded: bool) -> int:
        process = self._running()
        handle = next(self._handles)
        connection_id = next(process.connection_ids)
        self._connections[handle] = _Connection(
            handle, connection_id, self._generation, persist, embedded
        )
        return handle

    def _close(self, dcgm_handle: int, *, embedded: bool) -> None:
        """Drop a connection; what it created goes with it unless it persists."""
        connection = self._connections.get(dcgm_handle)
        if connection is None or connection.embedded != embedded:
            raise EngineError(ST_BADPARAM)
        del self._connections[dcgm_handle]
        live = self.fleet.hostengine_up and connection.generation == self._generation
        if connection.persist or not live or self._process is None:
            return
        process = self._process
        for key in list(process.cache.owned(connection.owner)):
            process.cache.unwatch(key, connection.owner)
        for group_id in [g.id for g in process.groups.values() if g.owner == connection.owner]:
            del process.groups[group_id]
        for fg_id in [f.id for f in process.field_groups.values() if f.owner == connection.owner]:
            del process.field_groups[fg_id]

    def dcgmInit(self) -> None:
        """Initialise the client library; reference-counted."""
        with self._lock:
            self._inits += 1

    def dcgmShutdown(self) -> None:
        """Close every connection of this process and uninitialise the library."""
        with self._lock:
            for handle, connection in list(self._connections.items()):
                self._close(handle, embedded=connection.embedded)
            self._inits = 0

    def dcgmStartEmbedded(self, opMode: int) -> int:
        """Start (or join) the embedded engine; INIT_ERROR while the engine is down."""
        with self._lock:
            if self._inits <= 0:
                raise EngineError(ST_UNINITIALIZED)
            if opMode not in (1, 2):
                raise EngineError(ST_BADPARAM)
            return self._open(persist=False, embedded=True)

    def dcgmStopEmbedded(self, dcgm_handle: int) -> None:
        """Stop using the embedded engine; its connection's objects are removed."""
        with self._lock:
            self._close(dcgm_handle, embedded=True)

    def dcgmConnect(
        self, address: str, *, persist: bool, timeout_ms: int, unix: bool = False
    ) -> int:
        """Connect to ``address`` (a v3 connection string, or a v2 address and flag)."""
        with self._lock:
            if self._inits <= 0:
                raise EngineError(ST_UNINITIALIZED)
            target = "" if address.startswith("vsock://") else _address(address, unix=unix)
            if self.fleet.hostengine_up and target in self._addresses:
                return self._open(persist=persist, embedded=False)
        # Nobody answers: the client retries every 50 ms until its timeout; one wait here.
        time.sleep(min(timeout_ms or 5000, CONNECT_RETRY_S * 1000) / 1000)
        raise EngineError(ST_CONNECTION_NOT_VALID)

    def dcgmDisconnect(self, dcgm_handle: int) -> None:
        """Close a remote connection; works on handles of a dead engine too (client side)."""
        with self._lock:
            self._close(dcgm_handle, embedded=False)

    def dcgmVersionInfo(self) -> str:
        """The build info string of ``dcgmVersionInfo``."""
        return BUILD_INFO

    def dcgmErrorString(self, result: int) -> str:
        """Text for a code the bindings do not know."""
        return f"Unknown DCGM error {result}"

    def dcgmHostengineIsHealthy(self, dcgmHandle: int) -> int:
        """0: healthy."""
        with self._lock:
            self._enter(dcgmHandle)
            return 0

    # --- devices and the MIG hierarchy ---

    def dcgmGetAllSupportedDevices(self, dcgm_handle: int) -> list[int]:
        """GPU ids; the simulator's are the NVML indices."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            return process.cache.entities(FE_GPU)

    def dcgmGetAllDevices(self, dcgm_handle: int) -> list[int]:
        """Same as ``dcgmGetAllSupportedDevices``: every simulated GPU is supported."""
        return self.dcgmGetAllSupportedDevices(dcgm_handle)

    def dcgmGetEntityGroupEntities(self, dcgm_handle: int, entityGroup: int) -> list[int]:
        """Ids of every entity of a group (GPUs, GPU instances, compute instances)."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            return process.cache.entities(entityGroup)

    def dcgmGetDeviceAttributes(self, dcgm_handle: int, gpuId: int) -> DeviceAttributes:
        """Static facts about a GPU, from DCGM's cache: they never block on a hung GPU."""
        with self._lock:
            self._enter(dcgm_handle)
            if not isinstance(gpuId, int) or not 0 <= gpuId < len(self.fleet.gpus):
                raise EngineError(ST_BADPARAM)
            gpu = self.fleet.gpus[gpuId]
            with self.fleet.lock:
                used = (gpu.memory_used_bytes() + gpu.reserved_bytes) >> 20
                mig = gpu.mig_enabled
            return DeviceAttributes(
                name=gpu.model.product,
                uuid=gpu.uuid,
                pci_bus_id=gpu.pci_bus_id,
                serial=f"{1650000000000 + gpu.index}",
                pci_device_id=gpu.model.pci_device_id,
                pci_subsystem_id=0x16C110DE,
                driver_version=DRIVER_VERSION,
                memory_total_mib=gpu.model.memory_mib,
                memory_used_mib=used,
                power_limit_w=gpu.model.power_limit_w,
                mig_enabled=mig,
            )

    def dcgmGetGpuInstanceHierarchy(self, dcgm_handle: int) -> list[Instance]:
        """Every GPU instance and compute instance, each after its GPU instance."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            return [i for _, items in sorted(process.cache.instances.items()) for i in items]

    # --- groups ---

    def _entities(self, process: _Process, group_id: int) -> list[tuple[int, int]]:
        cache = process.cache
        dynamic = {
            0: (FE_GPU,),
            _ALL_GPUS: (FE_GPU,),
            1: (),
            _ALL_NVSWITCHES: (),
            _ALL_INSTANCES: (FE_GPU_I,),
            _ALL_COMPUTE_INSTANCES: (FE_GPU_CI,),
            _ALL_ENTITIES: (FE_GPU, FE_GPU_I, FE_GPU_CI),
        }
        if group_id in dynamic:
            return [(kind, i) for kind in dynamic[group_id] for i in cache.entities(kind)]
        group = process.groups.get(group_id)
        if group is None:
            raise EngineError(ST_NOT_CONFIGURED)
        return list(group.entities)

    def dcgmGroupCreate(self, dcgm_handle: int, type: int, groupName: str) -> int:  # noqa: A002
        """A new group filled per ``type``; ids start at 2 and are never reused."""
        with self._lock:
            process, connection = self._enter(dcgm_handle)
            kinds = {
                _GROUP_DEFAULT: (FE_GPU,),
                _GROUP_EMPTY: (),
                _GROUP_NVSWITCHES: (),
                _GROUP_INSTANCES: (FE_GPU_I,),
                _GROUP_COMPUTE_INSTANCES: (FE_GPU_CI,),
                _GROUP_ENTITIES: (FE_GPU, FE_GPU_I, FE_GPU_CI),
            }
            if type not in kinds:
                raise EngineError(ST_BADPARAM)
            if len(process.groups) + 2 >= MAX_GROUPS:
                raise EngineError(ST_MAX_LIMIT)
            group = _Group(next(process.group_ids), groupName, connection.owner)
            group.entities = [(k, i) for k in kinds[type] for i in process.cache.entities(k)]
            process.groups[group.id] = group
            return group.id

    def dcgmGroupDestroy(self, dcgm_handle: int, group_id: int) -> None:
        """Remove a group; NOT_CONFIGURED for unknown ids (the default groups stay)."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            if process.groups.pop(group_id, None) is None:
                raise EngineError(ST_NOT_CONFIGURED)

    def _user_group(self, process: _Process, group_id: int) -> _Group:
        group = process.groups.get(group_id)
        if group is None:
            raise EngineError(ST_NOT_CONFIGURED)
        return group

    def dcgmGroupAddEntity(
        self, dcgm_handle: int, group_id: int, entityGroupId: int, entityId: int
    ) -> None:
        """Add an entity that exists now; BADPARAM otherwise, or if already in the group."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            group = self._user_group(process, group_id)
            entity = (entityGroupId, entityId)
            if not process.cache.exists(entity) or entity in group.entities:
                raise EngineError(ST_BADPARAM)
            if len(group.entities) >= MAX_ENTITIES_PER_GROUP:
                raise EngineError(ST_MAX_LIMIT)
            group.entities.append(entity)

    def dcgmGroupRemoveEntity(
        self, dcgm_handle: int, group_id: int, entityGroupId: int, entityId: int
    ) -> None:
        """Remove an entity from a group; BADPARAM if it is not in it."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            group = self._user_group(process, group_id)
            try:
                group.entities.remove((entityGroupId, entityId))
            except ValueError:
                raise EngineError(ST_BADPARAM) from None

    def dcgmGroupGetInfo(
        self, dcgm_handle: int, group_id: int
    ) -> tuple[str, list[tuple[int, int]]]:
        """(name, entities) of a group."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            entities = self._entities(process, group_id)
            group = process.groups.get(group_id)
            name = group.name if group is not None else _DEFAULT_GROUP_NAMES.get(group_id, "")
            return name, entities

    def dcgmGroupGetAllIds(self, dcgmHandle: int) -> list[int]:
        """Every group id, the two default groups first."""
        with self._lock:
            process, _ = self._enter(dcgmHandle)
            return [0, 1, *sorted(process.groups)]

    # --- field groups ---

    def dcgmFieldGroupCreate(
        self, dcgm_handle: int, fieldIds: Sequence[int], fieldGroupName: str
    ) -> int:
        """A new field group; names are unique per engine (DUPLICATE_KEY)."""
        with self._lock:
            process, connection = self._enter(dcgm_handle)
            ids = tuple(int(f) for f in fieldIds)
            if not 0 < len(ids) <= MAX_FIELDS_PER_GROUP or not all(0 < f < 65536 for f in ids):
                raise EngineError(ST_BADPARAM)
            if any(g.name == fieldGroupName for g in process.field_groups.values()):
                raise EngineError(ST_DUPLICATE_KEY)
            if len(process.field_groups) >= MAX_FIELD_GROUPS:
                raise EngineError(ST_MAX_LIMIT)
            group = FieldGroupInfo(
                next(process.field_group_ids), fieldGroupName, ids, connection.owner
            )
            process.field_groups[group.id] = group
            return group.id

    def dcgmFieldGroupDestroy(self, dcgm_handle: int, fieldGroupId: int) -> None:
        """Remove a field group (its watches stay until unwatched or disconnected)."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            if process.field_groups.pop(fieldGroupId, None) is None:
                raise EngineError(ST_NOT_CONFIGURED)

    def dcgmFieldGroupGetInfo(self, dcgm_handle: int, fieldGroupId: int) -> FieldGroupInfo:
        """One field group."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            return self._field_group(process, fieldGroupId)

    def dcgmFieldGroupGetAll(self, dcgm_handle: int) -> list[FieldGroupInfo]:
        """Every field group, by id."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            return [process.field_groups[i] for i in sorted(process.field_groups)]

    def _field_group(self, process: _Process, field_group_id: int) -> FieldGroupInfo:
        group = process.field_groups.get(field_group_id)
        if group is None:
            raise EngineError(ST_NOT_CONFIGURED)
        return group

    def DcgmFieldGetById(self, fieldId: int) -> FieldInfo | None:
        """A field's metadata, for the fields the simulator produces."""
        info = field_info(fieldId)
        return info if info.tag else None

    # --- watches and values ---

    def _keys(
        self, process: _Process, group_id: int, field_group_id: int
    ) -> list[tuple[int, int, int]]:
        """The cache keys (after redirection) of a group's entities times a field group."""
        field_ids = self._field_group(process, field_group_id).field_ids
        cache = process.cache
        keys = []
        for entity in self._entities(process, group_id):
            for field_id in field_ids:
                target = cache.practical(entity, field_id)
                if target is not None and cache.exists(target):
                    keys.append((*target, field_id))
        return list(dict.fromkeys(keys))

    def _check_single_pass(self, process: _Process, keys: list[tuple[int, int, int]]) -> None:
        """PROFILING_MULTI_PASS when one GPU would need two minor groups of one major."""
        cache = process.cache
        wanted: dict[int, set[int]] = {}
        for key in [*cache.watches, *keys]:
            gpu = cache.gpu_of((key[0], key[1]))
            if gpu is not None and is_profiling(key[2]):
                wanted.setdefault(gpu, set()).add(key[2])
        for gpu, field_ids in wanted.items():
            minors: dict[int, set[int]] = {}
            for major, minor, fields in self.profiling_groups(gpu):
                if field_ids & set(fields):
                    minors.setdefault(major, set()).add(minor)
            if any(len(found) > 1 for found in minors.values()):
                raise EngineError(ST_PROFILING_MULTI_PASS)

    def dcgmWatchFields(  # noqa: PLR0913, PLR0917 (the C function's parameters)
        self,
        dcgm_handle: int,
        groupId: int,
        fieldGroupId: int,
        updateFreq: int,
        maxKeepAge: float,
        maxKeepSamples: int,
    ) -> None:
        """Watch a field group on a group's entities (as they are now); all or nothing."""
        with self._lock:
            process, connection = self._enter(dcgm_handle)
            if updateFreq <= 0 or maxKeepAge < 0 or maxKeepSamples < 0:
                raise EngineError(ST_BADPARAM)
            keys = self._keys(process, groupId, fieldGroupId)
            self._check_single_pass(process, keys)
            watcher = Watcher(updateFreq / 1e6, maxKeepAge, maxKeepSamples)
            for key in keys:
                watch = process.cache.watches.setdefault(key, Watch(key))
                watch.watch(connection.owner, watcher)

    def dcgmUnwatchFields(self, dcgm_handle: int, groupId: int, fieldGroupId: int) -> None:
        """Stop this connection's watches of a field group on a group's entities."""
        with self._lock:
            process, connection = self._enter(dcgm_handle)
            for key in self._keys(process, groupId, fieldGroupId):
                process.cache.unwatch(key, connection.owner)

    def dcgmUpdateAllFields(self, dcgm_handle: int, waitForUpdate: int) -> None:  # noqa: ARG002
        """Sample every watch that is due (always synchronously)."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            process.cache.update(self.profiling_groups)

    def _value(self, process: _Process, entity: tuple[int, int], field_id: int) -> FieldValue:
        """The latest cached value of a field on an entity, or why there is none."""
        kind = field_info(field_id).type
        override = self._overrides.get((*entity, field_id))
        if override is not None:
            status, value = override
            chosen = sentinel(kind) if value is None else value
            return FieldValue(*entity, field_id, kind, status, self._stamp(), chosen)
        target = process.cache.practical(entity, field_id)
        watch = process.cache.watches.get((*target, field_id)) if target else None
        if watch is None:
            return FieldValue(*entity, field_id, kind, ST_NOT_WATCHED, 0, sentinel(kind))
        if not watch.samples:
            return FieldValue(*entity, field_id, kind, ST_NO_DATA, 0, sentinel(kind))
        latest = watch.samples[-1]
        return FieldValue(*entity, field_id, kind, latest.status, latest.ts, latest.value)

    def dcgmEntitiesGetLatestValues(
        self,
        dcgmHandle: int,
        entities: Sequence[tuple[int, int]],
        fieldIds: Sequence[int],
        flags: int,
    ) -> list[FieldValue]:
        """One value per entity and field, entity by entity; each with its own status."""
        with self._lock:
            process, _ = self._enter(dcgmHandle)
            if flags & _LIVE_DATA:
                return [self._live(process, e, f) for e in entities for f in fieldIds]
            process.cache.update(self.profiling_groups)
            return [self._value(process, e, f) for e in entities for f in fieldIds]

    def _live(self, process: _Process, entity: tuple[int, int], field_id: int) -> FieldValue:
        status, value = process.cache.read_live(entity, field_id)
        return FieldValue(
            *entity, field_id, field_info(field_id).type, status, self._stamp(), value
        )

    def dcgmGetValuesSince_v2(
        self, dcgm_handle: int, groupId: int, fieldGroupId: int, sinceTimestamp: int
    ) -> tuple[list[tuple[int, int, list[FieldValue]]], int]:
        """Per entity, every cached value with ``ts >= sinceTimestamp`` in time order.

        Returns the entities that have any, and the ``sinceTimestamp`` for the next call.
        """
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            process.cache.update(self.profiling_groups)
            fields = self._field_group(process, fieldGroupId).field_ids
            found, latest = [], sinceTimestamp - 1
            for entity in self._entities(process, groupId):
                values = [
                    FieldValue(*entity, f, field_info(f).type, s.status, s.ts, s.value)
                    for f in fields
                    for s in self._samples(process, entity, f)
                    if s.ts >= sinceTimestamp
                ]
                if values:
                    values.sort(key=lambda v: v.ts)
                    found.append((*entity, values))
                    latest = max(latest, values[-1].ts)
            return found, latest + 1

    def dcgmGetLatestValues_v2(
        self, dcgm_handle: int, groupId: int, fieldGroupId: int
    ) -> list[tuple[int, int, list[FieldValue]]]:
        """Per entity of a group, the latest value of every field of a field group."""
        with self._lock:
            process, _ = self._enter(dcgm_handle)
            process.cache.update(self.profiling_groups)
            fields = self._field_group(process, fieldGroupId).field_ids
            return [
                (*entity, [self._value(process, entity, f) for f in fields])
                for entity in self._entities(process, groupId)
            ]

    def _samples(self, process: _Process, entity: tuple[int, int], field_id: int) -> list[Sample]:
        target = process.cache.practical(entity, field_id)
        watch = process.cache.watches.get((*target, field_id)) if target else None
        return list(watch.samples) if watch is not None else []

    def dcgmProfGetSupportedMetricGroups(self, dcgmHandle: int, gpuId: int) -> list[MetricGroup]:
        """The GPU's profiling metric groups: one for GPM GPUs, Ampere's several otherwise."""
        with self._lock:
            self._enter(dcgmHandle)
            if not isinstance(gpuId, int) or not 0 <= gpuId < len(self.fleet.gpus):
                raise EngineError(ST_BADPARAM)
            return list(self.profiling_groups(gpuId))


# The process-global "loaded libdcgm": set by install, found by the bindings' loader.
_installed: SimHostEngine | None = None
_installed_lock = threading.Lock()


def install(engine: SimHostEngine) -> None:
    """Make ``engine`` the libdcgm.so.4 the simulator's bindings load in this process."""
    global _installed  # noqa: PLW0603 (the process-global library, as dlopen's would be)
    with _installed_lock:
        _installed = engine


def uninstall() -> None:
    """Remove the installed engine: loading the bindings' library fails again."""
    global _installed  # noqa: PLW0603
    with _installed_lock:
        _installed = None


def installed() -> SimHostEngine | None:
    """The installed engine, if any."""
    return _installed
