"""The simulated host engine's cache manager: MIG entities, field watches and their samples.

Like DCGM's ``DcgmCacheManager`` it reads the fleet through its own privileged NVML session,
keeps samples per watched (entity, field), and learns about XIDs and MIG reconfiguration from
an NVML event set drained at the start of every engine call.
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pynvml

from migexporter.backends.nvml import ALL_LINKS, UNATTRIBUTED
from migexporter.sim._dcgm_fields import (
    ACTIVITIES,
    BLANK,
    FE_GPU,
    FE_GPU_CI,
    FE_GPU_I,
    GPM_METRICS,
    GPU_READERS,
    MAX_INSTANCES_PER_GPU,
    NOT_SUPPORTED,
    NVLINK_THROUGHPUT_TOTAL,
    NVML_SENTINELS,
    ST_FIELD_UNSUPPORTED_BY_API,
    ST_NO_DATA,
    ST_NOT_SUPPORTED,
    ST_OK,
    TRAFFIC,
    XID,
    Entity,
    Key,
    Value,
    dcgm_status,
    failed,
    field_info,
    framebuffer,
    is_profiling,
    read_nvml,
    sentinel,
)
from migexporter.sim._model import MIB
from migexporter.sim.nvml import FakeNvml

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from migexporter.sim._dcgm_fields import FieldInfo
    from migexporter.sim._model import SimGpu
    from migexporter.sim.fleet import Fleet


@dataclass(frozen=True)
class Instance:
    """One GPU instance or compute instance, as ``dcgmGetGpuInstanceHierarchy`` lists it."""

    entity: Entity
    parent: Entity
    gpu_index: int
    gpu_uuid: str
    gi_id: int  # NVML ids
    ci_id: int | None
    profile_id: int
    slices: int
    name: str  # the GI or CI profile name, "1g.10gb"
    mig_uuid: str  # a CI's MIG UUID; a GI's first CI's; "" for a GI without one
    device: Any  # the MIG device handle behind mig_uuid; None for a GI without CIs


class Sample(NamedTuple):
    """One cached value; ``time`` is fleet time, for retention."""

    ts: int  # microseconds since the epoch
    time: float
    status: int
    value: Value


@dataclass(frozen=True)
class Watcher:
    """One connection's request for a field: how often and how much to keep."""

    interval_s: float
    keep_age_s: float
    keep_samples: int

    @property
    def retention_s(self) -> float:
        """DCGM keeps max(age, interval * samples * 1.1, 1 s); the age in whole seconds."""
        by_count = self.interval_s * self.keep_samples * 1.1
        return max(float(math.trunc(self.keep_age_s)), by_count, 1.0)


@dataclass(eq=False)
class Watch:
    """The cache of one (entity, field) after redirection, shared by its watchers."""

    key: Key
    watchers: dict[int, Watcher] = field(default_factory=dict)  # by owner connection id
    samples: deque[Sample] = field(default_factory=deque)
    last: float | None = None  # fleet time of the last periodic sample
    baseline: Any = None  # profiling: (identity, previous counters)
    # 449: (fleet time, KiB) of the last stored sample, what DCGM keeps as its value2.
    nvlink_counter: tuple[float, int] | None = None

    # What the watchers ask for together, set by ``watch``/``unwatch``: every engine call
    # updates and trims every watch, so these are kept rather than recomputed each time.
    interval_s: float = 0.0  # the fastest watcher wins
    retention_s: float = 0.0  # the longest retention wins
    cap: int = 0  # the largest sample count when every watcher caps it, else 0

    def watch(self, owner: int, watcher: Watcher) -> None:
        """Add or replace one owner's watcher."""
        self.watchers[owner] = watcher
        self._combine()

    def unwatch(self, owner: int) -> None:
        """Remove one owner's watcher (the caller drops the watch with the last one)."""
        self.watchers.pop(owner, None)
        if self.watchers:
            self._combine()

    def _combine(self) -> None:
        watchers = self.watchers.values()
        self.interval_s = min(w.interval_s for w in watchers)
        self.retention_s = max(w.retention_s for w in watchers)
        counts = [w.keep_samples for w in watchers]
        self.cap = max(counts) if all(counts) else 0

    def trim(self, now: float) -> None:
        """Drop samples past the longest retention, and past the largest count if all cap it."""
        samples, oldest = self.samples, now - self.retention_s
        while samples and samples[0].time < oldest:
            samples.popleft()
        while self.cap and len(samples) > self.cap:
            samples.popleft()


def _strip_mig(name: str) -> str:
    return name.removeprefix("MIG ")


class Cache:
    """One engine process's view of the node: its NVML session, entities and watches."""

    def __init__(self, fleet: Fleet, stamp: Callable[[], int]) -> None:
        self.fleet = fleet
        self._stamp = stamp
        self.nv = FakeNvml(fleet, privileged=True, client=False)  # nv-hostengine: root
        self.nv.nvmlInit()
        self.watches: dict[Key, Watch] = {}
        self.instances: dict[int, list[Instance]] = {}  # by GPU index
        self.by_entity: dict[Entity, Instance] = {}
        self._dirty: set[int] = set()
        self._gpm: dict[int, bool] = {}
        self._gpu_by_address = {
            ctypes.addressof(self.gpu_handle(i).contents): i for i in range(len(fleet.gpus))
        }
        # Registered at start: only events from now on are seen, as for a real restart.
        self._events = self.nv.nvmlEventSetCreate()
        mask = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventMigConfigChange
        for index in range(len(fleet.gpus)):
            try:
                self.nv.nvmlDeviceRegisterEvents(self.gpu_handle(index), mask, self._events)
            except pynvml.NVMLError_GpuIsLost:
                continue
        for index in range(len(fleet.gpus)):
            self._enumerate(index)
        self._index()

    def close(self) -> None:
        """Free the event set and GPM samples and end the NVML session."""
        for watch in self.watches.values():
            self._free_baseline(watch)
        self.watches.clear()
        self.nv.nvmlEventSetFree(self._events)
        self.nv.nvmlShutdown()

    def gpu_handle(self, index: int) -> Any:
        """The NVML handle of GPU ``index``."""
        return self.nv.nvmlDeviceGetHandleByIndex(index)

    # --- the MIG hierarchy, rebuilt per GPU on its MIG config-change events ---

    def _enumerate(self, index: int) -> None:
        """List a GPU's instances through NVML; keep the old list if the GPU is unreachable."""
        try:
            self.instances[index] = self._read_instances(index)
            self._dirty.discard(index)
        except pynvml.NVMLError_GpuIsLost:
            self._dirty.discard(index)
        except pynvml.NVMLError:
            self._dirty.add(index)  # raced a reconfiguration: its events make us retry

    def _read_instances(self, index: int) -> list[Instance]:
        nv = self.nv
        device = self.gpu_handle(index)
        gpu_uuid = nv.nvmlDeviceGetUUID(device)
        if not nv.nvmlDeviceGetMigMode(device)[0]:
            return []
        max_devices = nv.nvmlDeviceGetMaxMigDeviceCount(device)
        stride = max_devices or MAX_INSTANCES_PER_GPU
        migs: dict[tuple[int, int], Any] = {}
        for slot in range(max_devices):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, slot)
            except pynvml.NVMLError_NotFound:
                continue
            ids = (nv.nvmlDeviceGetGpuInstanceId(mig), nv.nvmlDeviceGetComputeInstanceId(mig))
            migs[ids] = mig
        found: list[Instance] = []
        ci_count = 0
        for position, (gi_info, gi, profile) in enumerate(self._gpu_instances(device)):
            gi_entity = (FE_GPU_I, index * stride + position)
            cis = self._compute_instances(gi)
            first = migs.get((gi_info.id, cis[0][0].id)) if cis else None
            found.append(
                Instance(
                    entity=gi_entity,
                    parent=(FE_GPU, index),
                    gpu_index=index,
                    gpu_uuid=gpu_uuid,
                    gi_id=gi_info.id,
                    ci_id=None,
                    profile_id=profile.id,
                    slices=profile.sliceCount,
                    name=_strip_mig(profile.name),
                    mig_uuid=nv.nvmlDeviceGetUUID(first) if first is not None else "",
                    device=first,
                )
            )
            for ci_info, ci_profile in cis:
                mig = migs.get((gi_info.id, ci_info.id))
                found.append(
                    Instance(
                        entity=(FE_GPU_CI, index * stride + ci_count),
                        parent=gi_entity,
                        gpu_index=index,
                        gpu_uuid=gpu_uuid,
                        gi_id=gi_info.id,
                        ci_id=ci_info.id,
                        profile_id=ci_profile.id,
                        slices=ci_profile.sliceCount,
                        name=_strip_mig(ci_profile.name),
                        mig_uuid=nv.nvmlDeviceGetUUID(mig) if mig is not None else "",
                        device=mig,
                    )
                )
                ci_count += 1
        return found

    def _gpu_instances(self, device: Any) -> list[tuple[Any, Any, Any]]:
        """(info, handle, profile info) of every GPU instance, by NVML GI id."""
        nv, seen, found = self.nv, set(), []
        for profile_index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                profile = nv.nvmlDeviceGetGpuInstanceProfileInfo(device, profile_index)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            if profile.id in seen:
                continue
            seen.add(profile.id)
            handles = (pynvml.c_nvmlGpuInstance_t * max(1, profile.instanceCount))()
            count = ctypes.c_uint()
            nv.nvmlDeviceGetGpuInstances(device, profile.id, handles, ctypes.byref(count))
            found += [(nv.nvmlGpuInstanceGetInfo(gi), gi, profile) for gi in handles[: count.value]]
        return sorted(found, key=lambda item: int(item[0].id))

    def _compute_instances(self, gi: Any) -> list[tuple[Any, Any]]:
        """(info, profile info) of every compute instance of a GI, by NVML CI id."""
        nv, found = self.nv, []
        for profile_index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                profile = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, profile_index, 0)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            handles = (pynvml.c_nvmlComputeInstance_t * max(1, profile.instanceCount))()
            count = ctypes.c_uint()
            nv.nvmlGpuInstanceGetComputeInstances(gi, profile.id, handles, ctypes.byref(count))
            found += [(nv.nvmlComputeInstanceGetInfo(ci), profile) for ci in handles[: count.value]]
        return sorted(found, key=lambda item: int(item[0].id))

    def _index(self) -> None:
        """Look entities up by id; an id now naming another instance loses its cached values."""
        before = self.by_entity
        self.by_entity = {i.entity: i for items in self.instances.values() for i in items}
        for (group, entity_id, field_id), watch in self.watches.items():
            if group == FE_GPU or field_id == XID:  # XIDs are history: they stay
                continue
            entity = (group, entity_id)
            if _identity(before.get(entity)) != _identity(self.by_entity.get(entity)):
                watch.samples.clear()
                watch.last = None  # sampled afresh at the next update
                self._free_baseline(watch)

    def entities(self, entity_group: int) -> list[int]:
        """Ids of every GPU, GPU instance or compute instance."""
        if entity_group == FE_GPU:
            return list(range(len(self.fleet.gpus)))
        return [
            i.entity[1]
            for items in self.instances.values()
            for i in items
            if i.entity[0] == entity_group
        ]

    def exists(self, entity: Entity) -> bool:
        """Whether the entity is a GPU, or a GI/CI of the current hierarchy."""
        if entity[0] == FE_GPU:
            return 0 <= entity[1] < len(self.fleet.gpus)
        return entity in self.by_entity

    def gpu_of(self, entity: Entity) -> int | None:
        """The GPU index an entity lives on."""
        if entity[0] == FE_GPU:
            return entity[1] if self.exists(entity) else None
        instance = self.by_entity.get(entity)
        return instance.gpu_index if instance is not None else None

    def practical(self, entity: Entity, field_id: int) -> Entity | None:
        """Where DCGM reads a field requested on ``entity`` (SetPracticalEntityInfo)."""
        level = field_info(field_id).level
        if entity[0] == FE_GPU or level == FE_GPU_CI:
            return entity
        instance = self.by_entity.get(entity)
        if instance is None:
            return None
        if level == FE_GPU:
            return (FE_GPU, instance.gpu_index)
        return instance.parent if entity[0] == FE_GPU_CI else entity

    # --- events: XIDs become samples, MIG changes re-read the hierarchy ---

    def drain(self) -> None:
        """Take every pending NVML event, as DCGM's event thread would have by now."""
        changed = set(self._dirty)
        while True:
            try:
                event = self.nv.nvmlEventSetWait_v2(self._events, 0)
            except pynvml.NVMLError_Timeout:
                break
            gpu = self._gpu_by_address[ctypes.addressof(event.device.contents)]
            if event.eventType == pynvml.nvmlEventMigConfigChange:
                changed.add(gpu)
                continue
            if changed:  # attribute the XID with the hierarchy of its moment
                for index in changed:
                    self._enumerate(index)
                self._index()
                changed = set(self._dirty)
            self._record_xid(gpu, event)
        if changed:
            for index in changed:
                self._enumerate(index)
            self._index()

    def _record_xid(self, gpu: int, event: Any) -> None:
        """Store the XID on its CI, else its GI, else its GPU; only where 230 is watched."""
        gi_id, ci_id = int(event.gpuInstanceId), int(event.computeInstanceId)
        entity: Entity = (FE_GPU, gpu)
        if gi_id != UNATTRIBUTED:
            ranked = [
                (instance.ci_id is not None, instance.entity)
                for instance in self.instances.get(gpu, ())
                if instance.gi_id == gi_id and instance.ci_id in (None, ci_id)
            ]
            entity = max(ranked, default=(False, entity))[1]
        watch = self.watches.get((*entity, XID))
        if watch is not None:
            sample = Sample(self._stamp(), self.fleet.now(), ST_OK, int(event.eventData))
            watch.samples.append(sample)

    # --- sampling ---

    def update(
        self, metric_groups: Callable[[int], list[tuple[int, int, tuple[int, ...]]]]
    ) -> None:
        """Sample every watch whose last sample is at least one interval old; trim all."""
        now = self.fleet.now()
        for watch in list(self.watches.values()):
            if watch.key[2] != XID and (watch.last is None or now - watch.last >= watch.interval_s):
                status, value = self._read(watch, metric_groups)
                watch.samples.append(Sample(self._stamp(), now, status, value))
                watch.last = now
            watch.trim(now)

    def read_live(self, entity: Entity, field_id: int) -> tuple[int, Value]:
        """A value straight from NVML, for DCGM_FV_FLAG_LIVE_DATA."""
        info = field_info(field_id)
        if is_profiling(field_id) or field_id == XID:
            return ST_FIELD_UNSUPPORTED_BY_API, sentinel(info.type)
        target = self.practical(entity, field_id)
        if target is None or not self.exists(target):
            return ST_NO_DATA, sentinel(info.type)
        if field_id == NVLINK_THROUGHPUT_TOTAL:  # no previous sample: 0, as in DCGM
            return self._read_nvlink_total(None, target[1])
        return self._read_device(target, info)

    def _read(
        self, watch: Watch, metric_groups: Callable[[int], list[tuple[int, int, tuple[int, ...]]]]
    ) -> tuple[int, Value]:
        entity: Entity = (watch.key[0], watch.key[1])
        info = field_info(watch.key[2])
        gpu = self.gpu_of(entity)
        if gpu is None:
            return ST_NO_DATA, sentinel(info.type)  # the instance is gone
        if info.id == NVLINK_THROUGHPUT_TOTAL:
            return self._read_nvlink_total(watch, gpu)
        if not is_profiling(info.id):
            return self._read_device(entity, info)
        if not any(info.id in fields for _, _, fields in metric_groups(gpu)):
            return ST_NOT_SUPPORTED, sentinel(info.type)
        return self._read_profiling(watch, entity, gpu, info)

    def _read_device(self, entity: Entity, info: FieldInfo) -> tuple[int, Value]:
        instance = self.by_entity.get(entity)
        if instance is not None and info.id in (50, 54):
            text = instance.name if info.id == 50 else instance.mig_uuid
            return ST_OK, text or sentinel("s")
        if 250 <= info.id <= 254:
            if instance is None:
                handle = self.gpu_handle(entity[1])
            elif instance.device is None:
                return ST_OK, sentinel(info.type)  # a GI without CIs has no MIG device
            else:
                handle = instance.device
            return read_nvml(lambda: framebuffer(self.nv, handle, info.id), info.type)
        reader = GPU_READERS.get(info.id)
        gpu = self.gpu_of(entity)
        if reader is None or gpu is None:
            return ST_OK, sentinel(info.type, NOT_SUPPORTED)
        handle = self.gpu_handle(gpu)
        return read_nvml(lambda: reader(self.nv, handle), info.type)

    def _read_nvlink_total(self, watch: Watch | None, gpu: int) -> tuple[int, Value]:
        """DCGM_FI_DEV_NVLINK_THROUGHPUT_TOTAL as ReadAndCacheNvLinkBandwidth computes it.

        NVML's NVLink data RX and TX counters (KiB) of all links (scopeId 0xFFFFFFFF) are
        summed; the sample is the sum's growth since the previous sample, divided by the
        seconds between them and by 1000 (DCGM's "MB/s"), or 0 for the first sample, without
        a watch, or while the sum is 0. DCGM divides by the NVML timestamps' difference; the
        simulated counters follow fleet time, which a test clock moves, so the fleet time
        between the two reads is used instead. A failed NVML entry stores no value in DCGM,
        whose reads then answer the NVML error: NOT_SUPPORTED without NVLink or in MIG mode.
        """
        ids = [
            (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS),
            (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS),
        ]
        try:
            values = self.nv.nvmlDeviceGetFieldValues(self.gpu_handle(gpu), ids)
        except pynvml.NVMLError as error:
            return failed(error, "i")
        for value in values:
            if value.nvmlReturn != pynvml.NVML_SUCCESS:
                return dcgm_status(value.nvmlReturn), sentinel("i")
        total = sum(int(value.value.ullVal) for value in values)
        now = self.fleet.gpus[gpu].time  # what the counters are integrated up to
        if watch is None:
            return ST_OK, 0
        previous, watch.nvlink_counter = watch.nvlink_counter, (now, total)
        if not total or previous is None or now == previous[0]:
            return ST_OK, 0
        return ST_OK, int((total - previous[1]) / (now - previous[0]) / 1000)

    def _read_profiling(
        self, watch: Watch, entity: Entity, gpu: int, info: FieldInfo
    ) -> tuple[int, Value]:
        """A ratio (or rate) over the time since this watch's previous sample."""
        instance = self.by_entity.get(entity)
        if instance is not None and instance.device is None:
            self._free_baseline(watch)
            return ST_NO_DATA, sentinel(info.type)  # a GI without CIs has no counters
        identity = instance.mig_uuid if instance is not None else ""
        try:
            gpm = self._has_gpm(gpu)
        except pynvml.NVMLError as error:
            return failed(error, info.type)
        if gpm:
            return self._read_gpm(watch, instance, gpu, identity, info)
        return self._read_activity(watch, instance, gpu, identity, info)

    def _has_gpm(self, gpu: int) -> bool:
        if gpu not in self._gpm:
            support = self.nv.nvmlGpmQueryDeviceSupport(self.gpu_handle(gpu))
            self._gpm[gpu] = bool(support.isSupportedDevice)
        return self._gpm[gpu]

    def _read_gpm(
        self, watch: Watch, instance: Instance | None, gpu: int, identity: str, info: FieldInfo
    ) -> tuple[int, Value]:
        nv = self.nv
        device = self.gpu_handle(gpu)
        sample = nv.nvmlGpmSampleAlloc()
        try:
            if instance is None:
                nv.nvmlGpmSampleGet(device, sample)
            elif instance.ci_id is None:
                nv.nvmlGpmMigSampleGet(device, instance.gi_id, sample)
            else:
                nv.nvmlGpmSampleGet(instance.device, sample)
        except pynvml.NVMLError as error:
            nv.nvmlGpmSampleFree(sample)
            return failed(error, info.type)
        previous = watch.baseline
        watch.baseline = (identity, sample)
        if previous is None or previous[0] != identity:
            if previous is not None:
                nv.nvmlGpmSampleFree(previous[1])
            return ST_OK, sentinel(info.type)  # GPM needs two samples
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 1
        request.sample1, request.sample2 = previous[1], sample
        request.metrics[0].metricId = GPM_METRICS[info.id]
        nv.nvmlGpmMetricsGet(request)
        nv.nvmlGpmSampleFree(previous[1])
        metric = request.metrics[0]
        if metric.nvmlReturn != pynvml.NVML_SUCCESS:
            return ST_OK, sentinel(info.type, NVML_SENTINELS.get(metric.nvmlReturn, BLANK))
        if info.type == "i":  # PCIe/NVLink: NVML MiB/s, DCGM bytes/s
            return ST_OK, int(metric.value * MIB)
        return ST_OK, metric.value / 100

    def _read_activity(
        self, watch: Watch, instance: Instance | None, gpu: int, identity: str, info: FieldInfo
    ) -> tuple[int, Value]:
        """Pre-Hopper: the profiling module's ratios, from the same integrals GPM reads.

        PCIe and NVLink (1009-1012) are bytes/s: the levels times the model's bandwidths.
        """
        sim = self.fleet.gpus[gpu]
        try:
            self.fleet.wait_usable(sim)
        except pynvml.NVMLError as error:
            return failed(error, info.type)
        with self.fleet.lock:
            self.fleet.advance(sim)
            totals = _totals(sim, instance)
            now = sim.time
        if totals is None:
            return ST_NO_DATA, sentinel(info.type)
        previous = watch.baseline
        watch.baseline = (identity, (now, totals))
        if previous is None or previous[0] != identity:
            return ST_OK, sentinel(info.type)
        then, before = previous[1]
        elapsed = now - then

        def average(where: int) -> float:
            return max(0.0, (totals[where] - before[where]) / elapsed if elapsed else 0.0)

        if info.id in ACTIVITIES:
            return ST_OK, min(1.0, average(ACTIVITIES[info.id]))
        if info.id in TRAFFIC:  # GPU-level fields: these are the GPU's totals
            where, nvlink = TRAFFIC[info.id]
            model = sim.model
            bandwidth = model.nvlink_bytes_per_s if nvlink else model.pcie_bytes_per_s
            return ST_OK, int(average(where) * bandwidth)
        return ST_OK, sentinel(info.type, NOT_SUPPORTED)

    def _free_baseline(self, watch: Watch) -> None:
        if watch.baseline is not None and not isinstance(watch.baseline[1], tuple):
            self.nv.nvmlGpmSampleFree(watch.baseline[1])
        watch.baseline = None

    def unwatch(self, key: Key, owner: int) -> None:
        """Remove one owner's watcher; the watch and its samples go with the last one."""
        watch = self.watches.get(key)
        if watch is None:
            return
        watch.unwatch(owner)
        if not watch.watchers:
            self._free_baseline(watch)
            del self.watches[key]

    def owned(self, owner: int) -> Iterator[Key]:
        """Keys of the watches ``owner`` takes part in."""
        return iter([key for key, watch in self.watches.items() if owner in watch.watchers])


def _identity(instance: Instance | None) -> tuple[object, ...] | None:
    if instance is None:
        return None
    return (
        instance.gpu_index,
        instance.gi_id,
        instance.ci_id,
        instance.profile_id,
        instance.mig_uuid,
    )


def _totals(sim: SimGpu, instance: Instance | None) -> tuple[float, ...] | None:
    if instance is None:
        return sim.totals
    gi = sim.gpu_instances.get(instance.gi_id)
    if gi is None:
        return None
    if instance.ci_id is None:
        return gi.totals
    ci = gi.compute_instances.get(instance.ci_id)
    return None if ci is None else ci.workload.totals
