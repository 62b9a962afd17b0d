"""DCGM backend: one DCGM group per MIG GPU instance, profiling 1001-1005, memory and XIDs.

Topology comes from NVML when it is available locally (the same labels as the NVML backend),
else from DCGM's MIG hierarchy. DCGM entity ids are not NVML ids and change on every
reconfiguration, so each topology refresh re-reads the hierarchy and rebuilds the groups that
changed. XIDs are counted from NVML events when NVML can attribute them to instances, else from
every sample of DCGM field 230 since the previous read: one source at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migexporter import catalog
from migexporter.backends.base import (
    BackendUnavailableError,
    DeviceEvent,
    EventKind,
    GpuSample,
    GpuUnavailableError,
    Readings,
)
from migexporter.topology import ComputeInstance, Gpu, GpuInstance

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from migexporter.backends.dcgm_bindings import DcgmBindings
    from migexporter.backends.nvml import NvmlBackend
    from migexporter.catalog import Metric

log = logging.getLogger(__name__)

MIB = 1 << 20
MIN_INTERVAL_S = 0.1  # DCGM's floor for profiling fields (NVIDIA/DCGM #310)
BACKOFF_S = (1.0, 30.0)  # reconnect delay: first, then doubling up to the second
CONNECT_TIMEOUT_MS = 2000
# Numeric ids, stable from DCGM 3.3.9 to 4.6.0 (4.6 renamed the constants).
NAME, UUID, MINOR_NUMBER, MIG_MAX_SLICES, XID = 50, 54, 55, 69, 230
FB_TOTAL, FB_FREE, FB_USED, FB_RESERVED = 250, 251, 252, 253
FB_FIELDS = (FB_TOTAL, FB_FREE, FB_USED, FB_RESERVED)
CLOCK_EVENTS = 112  # a bitmask: one reading per reason
RECOVERY_ACTION = 1523  # an nvmlDeviceGpuRecoveryAction_t: one reading per action
PERCENT = 1 / 100  # DCGM's utilizations (203-207) are whole percents, not ratios
# Device fields, read on GPU entities only so nothing repeats per instance: field id -> factor
# to base units; the family each fills is the catalog's (``catalog.DCGM_FIELDS``).
_FACTORS: dict[int, float] = {
    **dict.fromkeys((150, 155, 164, 312, 313, 393, 394, 395, 396, 140, 202), 1.0),
    156: 1e-3,  # mJ
    100: 1e6,  # MHz
    101: 1e6,
    **dict.fromkeys((203, 204, 206, 207), PERCENT),
    240: 1e-9,  # ns
    241: 1e-9,
    449: 1000 * 1024,  # DCGM's "MB/s": KiB/s divided by 1000 (ReadAndCacheNvLinkBandwidth)
    # Profiling rates, bytes/s already. DCGM 200/201 answer "not supported" since 4.x.
    **dict.fromkeys((1009, 1010, 1011, 1012), 1.0),
}
GPU_FIELDS: dict[int, tuple[Metric, tuple[str, ...], float]] = {
    field: (*catalog.DCGM_FIELDS[catalog.Scope.GPU][field], factor)
    for field, factor in _FACTORS.items()
}
_DEVICE_FIELDS = tuple(f for f in GPU_FIELDS if f not in catalog.PROFILING_FIELDS)
_MEMORY = {
    scope: {field: catalog.DCGM_FIELDS[scope][field][0] for field in FB_FIELDS}
    for scope in (catalog.Scope.GPU, catalog.Scope.GPU_INSTANCE)
}
# DCGM status codes the backend acts on (dcgm_structs DCGM_ST_*).
ST_OK, ST_NOT_SUPPORTED, ST_GPU_IS_LOST, ST_CONNECTION_NOT_VALID = 0, -6, -18, -21
ST_MAX_LIMIT, ST_PROFILING_MULTI_PASS = -24, -38
_NO_PROFILING = (-6, -33, -36)  # NOT_SUPPORTED, MODULE_NOT_LOADED, PROFILING_NOT_SUPPORTED
_GroupKey = tuple[str, int]  # (GPU UUID, GI id); ("", n) are the GPUs' groups
_Members = tuple[tuple[int, int], ...]  # (entity group, entity id)


def _code(error: BaseException) -> int | None:
    return getattr(error, "value", None)


@dataclass(frozen=True)
class _Instance:
    """One GI or CI entity of DCGM's hierarchy, with its NVML identity."""

    entity_id: int
    gpu_uuid: str
    gpu_instance_id: int
    compute_instance_id: int | None  # None for a GPU instance
    profile_id: int
    slices: int


@dataclass
class _Hierarchy:
    """DCGM's MIG hierarchy, indexed both ways."""

    by_nvml: dict[tuple[str, int, int | None], _Instance] = field(default_factory=dict)
    by_entity: dict[tuple[int, int], _Instance] = field(default_factory=dict)

    def gpu_instances(self, uuid: str) -> list[_Instance]:
        return sorted(
            (i for k, i in self.by_nvml.items() if k[0] == uuid and k[2] is None),
            key=lambda i: i.gpu_instance_id,
        )

    def compute_instances(self, uuid: str, gi_id: int) -> list[_Instance]:
        return sorted(
            (
                i
                for k, i in self.by_nvml.items()
                if k[0] == uuid and k[1] == gi_id and k[2] is not None
            ),
            key=lambda i: i.compute_instance_id or 0,
        )


@dataclass
class _Group:
    """A DCGM group this backend created and watches."""

    id: Any  # as dcgmGroupCreate returned it (a c_void_p)
    members: tuple[tuple[int, int], ...]
    field_group: Any
    xid_since: int = 0


class DcgmBackend:
    """Reads GPUs and MIG instances through DCGM's Python bindings.

    Args:
        bindings: the loaded DCGM modules (real, or the simulator's fakes).
        address: ``HOST[:PORT]`` or a unix socket path of an nv-hostengine; None embeds one.
        interval: seconds between watch updates; raised to DCGM's 100 ms floor.
        nvml: a local NVML backend for topology and XID events, when NVML is present.
        clock: monotonic clock for the reconnect backoff (injectable for tests).
    """

    name = "dcgm"

    def __init__(
        self,
        bindings: DcgmBindings,
        *,
        address: str | None = None,
        interval: float = 1.0,
        nvml: NvmlBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < MIN_INTERVAL_S:
            log.warning(
                "interval %gs is under DCGM's %g ms floor for profiling: watching every %g ms",
                interval,
                MIN_INTERVAL_S * 1000,
                MIN_INTERVAL_S * 1000,
            )
        self._b = bindings
        self._address = address
        self._interval = max(interval, MIN_INTERVAL_S)
        self._nvml = nvml
        self._clock = clock
        self.driver_version = ""
        self._lock = threading.RLock()  # connection, groups and maps: shared by all threads
        self._handle: Any = None  # pydcgm.DcgmHandle
        self._delay = BACKOFF_S[0]
        self._next_attempt = 0.0
        self._gpu_ids: list[int] = []  # DCGM GPU id by position
        self._gpu_uuids: dict[int, str] = {}  # DCGM GPU id -> UUID
        self._gpu_ids_by_uuid: dict[str, int] = {}
        self._hierarchy = _Hierarchy()
        self._profiling: dict[str, tuple[int, ...]] = {}  # GPU UUID -> watchable fields
        self._groups: dict[_GroupKey, _Group] = {}  # (uuid or "", GI id)
        self._field_groups: dict[tuple[int, ...], Any] = {}
        self._names = itertools.count(1)
        self._next_xid_read = 0.0
        self._xid_since = 0  # latest DCGM timestamp read up to: where new groups start
        self._pending_events: list[DeviceEvent] = []  # XIDs read from groups being destroyed
        self._nvml_open = False
        self._said: set[str] = set()

    # --- connection -----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The host engine, in words, for logs."""
        return f"nv-hostengine at {self._address}" if self._address else "an embedded host engine"

    def open(self) -> None:
        """Connect to the host engine (no-op when connected) and open local NVML if given."""
        with self._lock:
            if self._handle is None:
                self._connect()
        if self._nvml is not None and not self._nvml_open:
            try:
                self._nvml.open()
                self._nvml_open = True
            except BackendUnavailableError as error:
                log.info("no local NVML (%s): topology and XIDs come from DCGM", error)
                self._nvml = None

    def _connect(self) -> None:
        """Open a fresh connection; on failure schedule the next try with backoff."""
        s = self._b.structs
        kwargs: dict[str, Any] = {
            "opMode": s.DCGM_OPERATION_MODE_AUTO,
            "persistAfterDisconnect": False,  # the engine drops our groups if we vanish
            "timeoutMs": CONNECT_TIMEOUT_MS,
        }
        if self._address and self._address.startswith("/"):
            kwargs["unixSocketPath"] = self._address
        elif self._address:
            kwargs["ipAddress"] = self._address
        try:
            handle = self._b.pydcgm.DcgmHandle(**kwargs)
        except s.DCGMError as error:
            self._schedule_retry()
            raise BackendUnavailableError(f"DCGM: cannot reach {self.where}: {error}") from error
        self._handle = handle
        self._delay = BACKOFF_S[0]
        # A new connection (or a restarted engine) holds none of our groups, and its ids may
        # differ: forget everything learnt from the last one.
        self._groups.clear()
        self._field_groups.clear()
        self._profiling.clear()
        self._gpu_uuids.clear()
        self._xid_since = 0
        log.info("DCGM: connected to %s", self.where)

    def _schedule_retry(self) -> None:
        """Backoff: 1 s after a failure, doubling with each failure to at most 30 s."""
        self._next_attempt = self._clock() + self._delay
        self._delay = min(self._delay * 2, BACKOFF_S[1])

    def _ensure_connected(self) -> Any:
        """The raw handle; reconnects when the backoff allows, else BackendUnavailableError."""
        with self._lock:
            if self._handle is None:
                wait = self._next_attempt - self._clock()
                if wait > 0:
                    raise BackendUnavailableError(
                        f"DCGM: {self.where} is unreachable; next attempt in {wait:.1f}s"
                    )
                self._connect()
            return self._handle.handle

    def _connected(self) -> Any:
        """The raw handle, for sampling and events: only a topology refresh reconnects."""
        with self._lock:
            if self._handle is None:
                raise BackendUnavailableError(f"DCGM: not connected to {self.where}")
            return self._handle.handle

    def _lost(self, error: BaseException) -> BackendUnavailableError:
        """Forget the connection after CONNECTION_NOT_VALID; the next refresh reconnects."""
        with self._lock:
            if self._handle is not None:
                log.error("DCGM: lost %s: %s", self.where, error)
                self._quietly(self._handle.Shutdown)
                self._handle = None
                self._schedule_retry()
        return BackendUnavailableError(f"DCGM: lost {self.where}: {error}")

    def close(self) -> None:
        """Destroy our groups and field groups, disconnect, and close local NVML."""
        with self._lock:
            if self._handle is not None:
                raw = self._handle.handle
                for key in list(self._groups):
                    self._drop_group(raw, key)
                for field_group in self._field_groups.values():
                    self._quietly(self._b.agent.dcgmFieldGroupDestroy, raw, field_group)
                self._field_groups.clear()
                self._quietly(self._handle.Shutdown)
                self._handle = None
        if self._nvml is not None and self._nvml_open:
            self._nvml.close()
            self._nvml_open = False

    def _quietly(self, call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except self._b.structs.DCGMError as error:
            log.debug("DCGM cleanup %s failed: %s", getattr(call, "__name__", call), error)

    def _call(self, call: Callable[..., Any], *args: Any) -> Any:
        """One DCGM call; a dropped connection becomes BackendUnavailableError."""
        try:
            return call(*args)
        except self._b.structs.DCGMError as error:
            if _code(error) == ST_CONNECTION_NOT_VALID:
                raise self._lost(error) from error
            raise

    # --- topology -------------------------------------------------------------------------------
    def gpu_count(self) -> int:
        """List GPUs, re-read the MIG hierarchy, and bring groups and watches up to date."""
        raw = self._ensure_connected()
        a = self._b.agent
        try:
            with self._lock:
                ids = sorted(self._call(a.dcgmGetAllSupportedDevices, raw))
                for gpu_id in ids:
                    if gpu_id not in self._gpu_uuids:
                        attributes = self._call(a.dcgmGetDeviceAttributes, raw, gpu_id)
                        self._gpu_uuids[gpu_id] = _text(attributes.identifiers.uuid)
                        self.driver_version = _text(attributes.identifiers.driverVersion)
                self._gpu_ids = ids
                self._gpu_ids_by_uuid = {self._gpu_uuids[i]: i for i in ids}
                self._hierarchy = self._read_hierarchy(raw)
                self._sync_groups(raw)
        except self._b.structs.DCGMError as error:
            raise BackendUnavailableError(f"DCGM: {error}") from error
        if self._nvml is not None:
            # Local NVML initialises itself again here if it was shut down under the exporter;
            # until it can, discovery of that GPU keeps what the last enumeration knew.
            with contextlib.suppress(BackendUnavailableError):
                self._nvml.gpu_count()
        return len(ids)

    def _read_hierarchy(self, raw: Any) -> _Hierarchy:
        f = self._b.fields
        hierarchy = _Hierarchy()
        info = self._call(self._b.agent.dcgmGetGpuInstanceHierarchy, raw)
        for entry in info.entityList[: info.count]:
            group, entity_id = int(entry.entity.entityGroupId), int(entry.entity.entityId)
            meta = entry.info
            ci_id = int(meta.nvmlComputeInstanceId)
            instance = _Instance(
                entity_id=entity_id,
                gpu_uuid=_text(meta.gpuUuid),
                gpu_instance_id=int(meta.nvmlInstanceId),
                compute_instance_id=None if group == f.DCGM_FE_GPU_I else ci_id,
                profile_id=int(meta.nvmlMigProfileId),
                slices=int(meta.nvmlProfileSlices),
            )
            key = (instance.gpu_uuid, instance.gpu_instance_id, instance.compute_instance_id)
            hierarchy.by_nvml[key] = instance
            hierarchy.by_entity[(group, entity_id)] = instance
        return hierarchy

    def discover_gpu(self, index: int) -> Gpu:
        """GPU ``index`` as NVML names it when local, else from DCGM's hierarchy."""
        with self._lock:
            if index >= len(self._gpu_ids):
                raise GpuUnavailableError(f"GPU {index} is not listed by DCGM")
            gpu_id = self._gpu_ids[index]
        if self._nvml is not None:
            return self._nvml.discover_gpu(index)
        return self._discover_from_dcgm(index, gpu_id)

    def _discover_from_dcgm(self, index: int, gpu_id: int) -> Gpu:
        """Without NVML: names and sizes from DCGM fields; placement and SMs stay unknown."""
        raw = self._connected()
        f = self._b.fields
        try:
            attributes = self._call(self._b.agent.dcgmGetDeviceAttributes, raw, gpu_id)
            uuid = _text(attributes.identifiers.uuid)
            mig_enabled = bool(attributes.settings.migModeEnabled)
            hierarchy = self._hierarchy
            entities: list[tuple[int, int]] = []
            for gi in hierarchy.gpu_instances(uuid):
                entities.append((f.DCGM_FE_GPU_I, gi.entity_id))
                entities += [
                    (f.DCGM_FE_GPU_CI, ci.entity_id)
                    for ci in hierarchy.compute_instances(uuid, gi.gpu_instance_id)
                ]
            values = self._latest(raw, entities, (NAME, UUID, FB_TOTAL))
            slices = self._latest(raw, [(f.DCGM_FE_GPU, gpu_id)], (MIG_MAX_SLICES, MINOR_NUMBER))
        except self._b.structs.DCGMError as error:
            raise GpuUnavailableError(f"GPU {index}: DCGM: {error}") from error
        instances = []
        for gi in hierarchy.gpu_instances(uuid):
            gi_values = values.get((f.DCGM_FE_GPU_I, gi.entity_id), {})
            cis = tuple(
                ComputeInstance(
                    id=ci.compute_instance_id or 0,
                    mig_uuid=str(values.get((f.DCGM_FE_GPU_CI, ci.entity_id), {}).get(UUID, "")),
                    profile=str(values.get((f.DCGM_FE_GPU_CI, ci.entity_id), {}).get(NAME, "")),
                    slices=ci.slices,
                    sms=None,
                )
                for ci in hierarchy.compute_instances(uuid, gi.gpu_instance_id)
            )
            total = gi_values.get(FB_TOTAL)
            instances.append(
                GpuInstance(
                    id=gi.gpu_instance_id,
                    profile=str(gi_values.get(NAME, "")),
                    slices=gi.slices,
                    memory_bytes=int(float(total) * MIB) if total is not None else 0,
                    sms=None,
                    profile_id=gi.profile_id,
                    compute_instances=cis,
                )
            )
        gpu_values = slices.get((f.DCGM_FE_GPU, gpu_id), {})
        max_slices, minor = gpu_values.get(MIG_MAX_SLICES), gpu_values.get(MINOR_NUMBER)
        return Gpu(
            index=index,
            uuid=uuid,
            name=_text(attributes.identifiers.deviceName),
            pci_bus_id=_text(attributes.identifiers.pciBusId),
            mig_enabled=mig_enabled,
            mig_slices_total=int(float(max_slices)) if mig_enabled and max_slices else 0,
            gpu_instances=tuple(instances),
            minor_number=int(float(minor)) if minor is not None else None,
        )

    # --- groups and watches ---------------------------------------------------------------------
    def _sync_groups(self, raw: Any) -> None:
        """Create, keep or destroy groups so they match the hierarchy; called with the lock."""
        wanted = self._wanted_groups(raw)
        for key in [
            k for k, g in self._groups.items() if k not in wanted or g.members != wanted[k][0]
        ]:
            self._drop_group(raw, key)
        added = False
        for key, (members, fields) in wanted.items():
            group = self._groups.get(key)
            if group is not None and group.field_group is self._field_groups.get(fields):
                continue
            if group is not None:  # the GPU's watchable fields changed
                self._drop_group(raw, key)
            added |= self._add_group(raw, key, members, fields)
        in_use = {id(g.field_group) for g in self._groups.values()}
        for fields, field_group in list(self._field_groups.items()):
            if id(field_group) not in in_use and fields != (XID,):
                self._quietly(self._b.agent.dcgmFieldGroupDestroy, raw, field_group)
                del self._field_groups[fields]
        if added:  # the first samples would otherwise wait a full update period
            self._call(self._b.agent.dcgmUpdateAllFields, raw, 1)

    def _wanted_groups(self, raw: Any) -> dict[_GroupKey, tuple[_Members, tuple[int, ...]]]:
        """One group for the GPUs, one per GPU instance: members and watched fields."""
        f, hierarchy = self._b.fields, self._hierarchy
        for uuid in self._gpu_ids_by_uuid:
            if uuid not in self._profiling:
                self._profiling[uuid] = self._watchable_profiling(raw, uuid)
        # One group for the GPUs, or one per set of watchable profiling fields where GPUs
        # differ: a field group is watched on every member alike.
        gpus_by_profiling: dict[tuple[int, ...], list[int]] = {}
        for uuid, gpu_id in self._gpu_ids_by_uuid.items():
            gpus_by_profiling.setdefault(self._profiling[uuid], []).append(gpu_id)
        wanted: dict[_GroupKey, tuple[_Members, tuple[int, ...]]] = {
            ("", n): (tuple((f.DCGM_FE_GPU, i) for i in gpu_ids), self._gpu_fields(profiling))
            for n, (profiling, gpu_ids) in enumerate(gpus_by_profiling.items())
        }
        for uuid in self._gpu_ids_by_uuid:
            for gi in hierarchy.gpu_instances(uuid):
                # The CIs are members even when they repeat the GI: DCGM records an XID that
                # names a compute instance on the CI entity, so field 230 must be watched there.
                cis = hierarchy.compute_instances(uuid, gi.gpu_instance_id)
                members = (
                    (f.DCGM_FE_GPU_I, gi.entity_id),
                    *((f.DCGM_FE_GPU_CI, ci.entity_id) for ci in cis),
                )
                wanted[(uuid, gi.gpu_instance_id)] = (members, self._instance_fields(uuid))
        return wanted

    def _gpu_fields(self, profiling: Sequence[int]) -> tuple[int, ...]:
        extra = (MIG_MAX_SLICES, MINOR_NUMBER) if self._nvml is None else ()
        return (
            *_DEVICE_FIELDS,
            CLOCK_EVENTS,
            RECOVERY_ACTION,
            *FB_FIELDS,
            XID,
            *profiling,
            *extra,
        )

    def _instance_fields(self, uuid: str) -> tuple[int, ...]:
        extra = (NAME, UUID) if self._nvml is None else ()  # names, when NVML cannot tell
        return (*FB_FIELDS, XID, *_instance_profiling(self._profiling.get(uuid, ())), *extra)

    def _add_group(
        self,
        raw: Any,
        key: _GroupKey,
        members: tuple[tuple[int, int], ...],
        fields: tuple[int, ...],
    ) -> bool:
        a = self._b.agent
        uuid, gi_id = key
        # Recognisable in `dcgmi group -l`: whose exporter, which GPU, which GPU instance.
        name = f"migexporter-{os.getpid()}-" + (
            f"{uuid}-gi{gi_id}" if uuid else f"gpus{gi_id or ''}"
        )
        try:
            group_id = self._call(a.dcgmGroupCreate, raw, self._b.structs.DCGM_GROUP_EMPTY, name)
        except self._b.structs.DCGMError as error:
            if _code(error) != ST_MAX_LIMIT:
                raise
            self._say_once("max-groups", "DCGM group limit reached: %s is not watched", name)
            return False
        # Start where the last read ended: another client may keep 230 watched on these
        # entities, and samples already counted through a dropped group must not count twice.
        group = _Group(group_id, members, None, self._xid_since)
        self._groups[key] = group
        for entity_group, entity_id in members:
            self._call(a.dcgmGroupAddEntity, raw, group_id, entity_group, entity_id)
        uuids = [uuid] if uuid else [self._gpu_uuids[gpu_id] for _, gpu_id in members]
        group.field_group = self._watch(raw, uuids, group_id, fields)
        return True

    def _watch(self, raw: Any, uuids: list[str], group_id: Any, fields: tuple[int, ...]) -> Any:
        """Watch ``fields`` on a group, dropping profiling fields the GPU cannot watch together."""
        a = self._b.agent
        keep_s = max(30.0, 10 * self._interval)  # XID samples wait here until the next read
        while True:
            field_group = self._field_group(raw, fields)
            try:
                self._call(
                    a.dcgmWatchFields,
                    raw,
                    group_id,
                    field_group,
                    int(self._interval * 1e6),
                    keep_s,
                    0,
                )
            except self._b.structs.DCGMError as error:
                profiling = [f for f in fields if f in PROFILING_ORDER]
                if _code(error) != ST_PROFILING_MULTI_PASS or not profiling:
                    raise
                dropped = profiling[-1]
                fields = tuple(f for f in fields if f != dropped)
                for uuid in uuids:
                    self._profiling[uuid] = tuple(f for f in self._profiling[uuid] if f != dropped)
                    self._say_once(
                        f"multipass:{uuid}:{dropped}",
                        "DCGM: field %d cannot be watched together with the others on GPU %s "
                        "(profiling multi-pass): not exported",
                        dropped,
                        uuid,
                    )
                continue
            return field_group

    def _field_group(self, raw: Any, fields: tuple[int, ...]) -> Any:
        existing = self._field_groups.get(fields)
        if existing is None:
            name = f"migexporter-{os.getpid()}-{next(self._names)}"  # names are unique per engine
            existing = self._call(self._b.agent.dcgmFieldGroupCreate, raw, list(fields), name)
            self._field_groups[fields] = existing
        return existing

    def _drop_group(self, raw: Any, key: _GroupKey) -> None:
        """Count the group's last XIDs, then unwatch and destroy it."""
        group = self._groups.pop(key)
        if self._xid_from_dcgm():
            self._collect_xids(raw, [group], self._pending_events)
        a = self._b.agent
        if group.field_group is not None:
            self._quietly(a.dcgmUnwatchFields, raw, group.id, group.field_group)
        self._quietly(a.dcgmGroupDestroy, raw, group.id)

    def _watchable_profiling(self, raw: Any, uuid: str) -> tuple[int, ...]:
        """Profiling fields the GPU offers, at most one metric group per hardware unit."""
        try:
            groups = self._call(
                self._b.agent.dcgmProfGetSupportedMetricGroups, raw, self._gpu_ids_by_uuid[uuid]
            )
        except self._b.structs.DCGMError as error:
            if _code(error) not in _NO_PROFILING:
                raise
            self._say_once(f"noprof:{uuid}", "DCGM: no profiling on GPU %s (%s)", uuid, error)
            return ()
        chosen: dict[int, int] = {}  # majorId -> minorId: groups of one major multiplex
        watchable: list[int] = []
        offered: set[int] = set()
        for field_id in PROFILING_ORDER:
            for group in groups.metricGroups[: groups.numMetricGroups]:
                if field_id not in list(group.fieldIds[: group.numFieldIds]):
                    continue
                offered.add(field_id)
                major, minor = int(group.majorId), int(group.minorId)
                if chosen.setdefault(major, minor) == minor:
                    watchable.append(field_id)
                    break
        clashing = [f for f in PROFILING_ORDER if f in offered and f not in watchable]
        if clashing:
            self._say_once(
                f"prof:{uuid}",
                "DCGM: GPU %s cannot watch profiling fields %s together with the others: "
                "their series are absent",
                uuid,
                ", ".join(map(str, clashing)),
            )
        if len(offered) < len(PROFILING_ORDER):
            log.info(
                "DCGM: GPU %s does not offer profiling fields %s",
                uuid,
                ", ".join(str(f) for f in PROFILING_ORDER if f not in offered),
            )
        return tuple(watchable)

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, gpu: Gpu) -> GpuSample:
        """Latest values of the GPU entity and of its GI (and multi-CI) entities."""
        raw = self._connected()
        f = self._b.fields
        with self._lock:
            gpu_id = self._gpu_ids_by_uuid.get(gpu.uuid)
            hierarchy = self._hierarchy
            profiling = self._profiling.get(gpu.uuid, ())
        if gpu.mig_enabled:  # as the NVML backend: no NVLink in MIG mode
            profiling = tuple(f for f in profiling if f not in catalog.NVLINK_FIELDS)
        if gpu_id is None:
            raise GpuUnavailableError(f"GPU {gpu.uuid} is not listed by DCGM")
        result = GpuSample(
            fields_supported={f_id: f_id in profiling for f_id in catalog.PROFILING_FIELDS}
        )
        instances: dict[tuple[int, int], tuple[catalog.Scope, Readings]] = {}
        for gi in gpu.gpu_instances:
            entity = hierarchy.by_nvml.get((gpu.uuid, gi.id, None))
            if entity is None:
                continue  # created after the last hierarchy read: the next refresh adds it
            readings = result.gpu_instances.setdefault(gi.id, Readings())
            instances[(f.DCGM_FE_GPU_I, entity.entity_id)] = (catalog.Scope.GPU_INSTANCE, readings)
            if len(gi.compute_instances) < 2:
                continue  # one CI spans the GI: its values would only repeat the GI's
            for ci in gi.compute_instances:
                ci_entity = hierarchy.by_nvml.get((gpu.uuid, gi.id, ci.id))
                if ci_entity is not None:
                    ci_readings = result.compute_instances.setdefault((gi.id, ci.id), Readings())
                    instances[(f.DCGM_FE_GPU_CI, ci_entity.entity_id)] = (
                        catalog.Scope.COMPUTE_INSTANCE,
                        ci_readings,
                    )
        try:
            device = self._latest(
                raw, [(f.DCGM_FE_GPU, gpu_id)], self._gpu_fields(profiling), result
            )
            values = self._latest(
                raw, list(instances), (*FB_FIELDS, *_instance_profiling(profiling)), result
            )
        except self._b.structs.DCGMError as error:
            raise GpuUnavailableError(f"GPU {gpu.index}: DCGM: {error}") from error
        _fill(result.gpu, catalog.Scope.GPU, device.get((f.DCGM_FE_GPU, gpu_id), {}))
        for pair, (scope, readings) in instances.items():
            _fill(readings, scope, values.get(pair, {}))
        return result

    def _latest(
        self,
        raw: Any,
        entities: Sequence[tuple[int, int]],
        fields: Iterable[int],
        result: GpuSample | None = None,
    ) -> dict[tuple[int, int], dict[int, float | str]]:
        """Latest cached values by entity and field; blanks and failed statuses are left out.

        Raises:
            GpuUnavailableError: when DCGM says the GPU is lost.
        """
        field_ids = list(dict.fromkeys(fields))
        if not entities or not field_ids:
            return {}
        s, value = self._b.structs, self._b.value
        pairs = [s.c_dcgmGroupEntityPair_t(group, entity) for group, entity in entities]
        raw_values = self._call(self._b.agent.dcgmEntitiesGetLatestValues, raw, pairs, field_ids, 0)
        out: dict[tuple[int, int], dict[int, float | str]] = {}
        for fv in raw_values:
            status = int(fv.status)
            if status == ST_GPU_IS_LOST:
                raise GpuUnavailableError(f"DCGM: GPU of entity {fv.entityId} is lost")
            if status != ST_OK:
                if result is not None and status not in (ST_NOT_SUPPORTED, -14, -16):
                    result.errors += 1  # beyond "no data yet" / "not watched" / "unsupported"
                continue
            decoded = _decode(fv, value)
            if decoded is not None:
                key = (int(fv.entityGroupId), int(fv.entityId))
                out.setdefault(key, {})[int(fv.fieldId)] = decoded
        return out

    # --- events ---------------------------------------------------------------------------------
    def _xid_from_dcgm(self) -> bool:
        """One XID source: NVML when it can attribute events to instances, else DCGM."""
        return self._nvml is None or not self._nvml.sees_instance_events

    def wait_events(self, timeout_s: float) -> list[DeviceEvent]:
        """NVML's events when it is the XID source; else DCGM's XID samples since last read."""
        if not self._xid_from_dcgm():
            assert self._nvml is not None
            return self._nvml.wait_events(timeout_s)
        events: list[DeviceEvent] = []
        if self._nvml is not None:  # its MIG-change events still speed up a refresh
            events += [e for e in self._nvml.wait_events(0) if e.kind is not EventKind.XID]
        wait = self._next_xid_read - self._clock()
        if wait > 0:
            time.sleep(min(wait, timeout_s))
            if self._clock() < self._next_xid_read:
                return events
        self._next_xid_read = self._clock() + self._interval
        with self._lock:
            events += self._pending_events
            self._pending_events = []
            if self._handle is None:
                return events
            raw = self._handle.handle
            try:
                self._collect_xids(raw, list(self._groups.values()), events)
            except BackendUnavailableError:
                return events
        return events

    def _collect_xids(self, raw: Any, groups: list[_Group], into: list[DeviceEvent]) -> None:
        """Every XID sample since each group's last read, as events (called with the lock)."""
        s, f = self._b.structs, self._b.fields
        xid_fields = self._field_group(raw, (XID,))
        found: list[tuple[int, int, float | str | None, float]] = []

        def collect(entity_group: int, entity_id: int, values: Any, count: int, _: Any) -> int:
            # DCGM frees the buffer when the callback returns: copy what we need now.
            found.extend(
                (entity_group, entity_id, _decode(fv, self._b.value), int(fv.ts) / 1e6)
                for fv in values[:count]
                if int(fv.fieldId) == XID and int(fv.status) == ST_OK
            )
            return 0

        callback = self._b.agent.dcgmFieldValueEntityEnumeration_f(collect)
        for group in groups:
            try:
                group.xid_since = self._call(
                    self._b.agent.dcgmGetValuesSince_v2,
                    raw,
                    group.id,
                    xid_fields,
                    group.xid_since,
                    callback,
                    None,
                )
            except s.DCGMError as error:
                log.debug("DCGM: reading XIDs of a group failed: %s", error)
            self._xid_since = max(self._xid_since, int(group.xid_since))
        for entity_group, entity_id, xid, when in found:
            event = self._xid_event(entity_group, entity_id, xid, when, f)
            if event is not None:
                into.append(event)

    def _xid_event(
        self, entity_group: int, entity_id: int, xid: float | str | None, when: float, f: Any
    ) -> DeviceEvent | None:
        """An XID sample as an event, attributed to the entity DCGM recorded it on."""
        if not isinstance(xid, float):
            return None
        if entity_group == f.DCGM_FE_GPU:
            uuid = self._gpu_uuids.get(entity_id, "")
            return DeviceEvent(uuid, EventKind.XID, when, int(xid))
        instance = self._hierarchy.by_entity.get((entity_group, entity_id))
        if instance is None:
            return None
        return DeviceEvent(
            instance.gpu_uuid,
            EventKind.XID,
            when,
            int(xid),
            instance.gpu_instance_id,
            instance.compute_instance_id,
        )

    def _say_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)


PROFILING_ORDER: tuple[int, ...] = catalog.PROFILING_FIELDS


def _instance_profiling(profiling: Sequence[int]) -> tuple[int, ...]:
    """The profiling fields worth watching on instances: PCIe and NVLink are the GPU's."""
    return tuple(f for f in profiling if f in catalog.PROFILING[catalog.Scope.GPU_INSTANCE])


def _fill(readings: Readings, scope: catalog.Scope, values: dict[int, float | str]) -> None:
    """Turn one entity's decoded values into catalog readings in base units."""
    for field_id, value in values.items():
        if not isinstance(value, float):
            continue
        if scope is catalog.Scope.GPU and field_id == CLOCK_EVENTS:
            for bit, reason in catalog.CLOCK_EVENT_REASONS.items():
                readings.set(catalog.GPU_CLOCK_EVENT, bool(int(value) & bit), reason)
        elif scope is catalog.Scope.GPU and field_id == RECOVERY_ACTION:
            for action, current in catalog.recovery_action_states(int(value)).items():
                readings.set(catalog.GPU_RECOVERY_ACTION, current, action)
        elif scope is catalog.Scope.GPU and field_id in GPU_FIELDS:
            metric, extra, factor = GPU_FIELDS[field_id]
            readings.set(metric, value * factor, *extra)
        elif field_id in _MEMORY.get(scope, {}):
            readings.set(_MEMORY[scope][field_id], value * MIB)
        elif field_id in catalog.PROFILING[scope]:
            readings.set(catalog.PROFILING[scope][field_id], min(max(value, 0.0), 1.0))


def _decode(fv: Any, value: Any) -> float | str | None:
    """A value's payload, or None for DCGM's blank sentinels (never a 0, never 2**63)."""
    kind = chr(int(fv.fieldType))
    if kind == "d":
        number = float(fv.value.dbl)
        return None if value.DCGM_FP64_IS_BLANK(number) or math.isnan(number) else number
    if kind == "i":
        integer = int(fv.value.i64)
        return None if value.DCGM_INT64_IS_BLANK(integer) else float(integer)
    if kind == "s":
        text = _text(fv.value.str)
        return None if value.DCGM_STR_IS_BLANK(text) else text
    return None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
