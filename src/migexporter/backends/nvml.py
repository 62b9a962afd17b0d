"""NVML backend: MIG topology, device and instance readings, GPM profiling and XID events."""

from __future__ import annotations

import ctypes
import logging
import math
import re
import struct
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from migexporter import catalog
from migexporter.backends.base import (
    BackendUnavailableError,
    DeviceEvent,
    EventKind,
    GpuSample,
    GpuUnavailableError,
    Readings,
)
from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Placement

if TYPE_CHECKING:
    from collections.abc import Callable

    from migexporter.catalog import Metric


log = logging.getLogger(__name__)
_T = TypeVar("_T")

UNATTRIBUTED = 0xFFFFFFFF  # NVML_GPU_INSTANCE_ID_ANY / NVML_COMPUTE_INSTANCE_ID_ANY in event data
MIB = 1 << 20
_SUCCESS = 0  # NVML_SUCCESS in every NVML; read per metric and field, so not looked up each time

# DCGM profiling field -> NVML GPM metric id (DCGM's own mapping, facts nvml-mig.md §4.3).
GPM_METRICS: dict[int, int] = {
    # activity and pipe ratios, in percent
    1001: 1, 1002: 2, 1003: 3, 1004: 5, 1005: 10, 1006: 11, 1007: 12, 1008: 13,
    # PCIe TX, RX and NVLink TX, RX, in MiB/s
    1009: 20, 1010: 21, 1011: 61, 1012: 60,
}  # fmt: skip
# The rates among them, GPU quantities in MiB/s, and the (family, direction) each fills.
GPM_RATES: dict[int, tuple[Metric, tuple[str, ...]]] = {
    field: catalog.DCGM_FIELDS[catalog.Scope.GPU][field] for field in (1009, 1010, 1011, 1012)
}
ALL_LINKS = 0xFFFFFFFF  # a field value's scope id for the sum over every NVLink (nvml.h)

# Errors after which nothing more can be read from the GPU this cycle.
_GPU_GONE = (
    "NVMLError_GpuIsLost",
    "NVMLError_DriverNotLoaded",
    "NVMLError_LibRmVersionMismatch",
    "NVMLError_ResetRequired",
)
# The library itself is shut down: the backend is down until gpu_count initialises it again,
# which the collector asks for on every cycle while it is down.
_LIBRARY_GONE = "NVMLError_Uninitialized"
# Errors meaning "this reading does not exist here": omit the series, ask again after a change.
_ABSENT = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound")

_EVENT_KINDS = (
    ("nvmlEventTypeXidCriticalError", EventKind.XID),
    ("nvmlEventTypeDoubleBitEccError", EventKind.ECC_DOUBLE_BIT),
    ("nvmlEventTypeSingleBitEccError", EventKind.ECC_SINGLE_BIT),
    ("nvmlEventMigConfigChange", EventKind.MIG_CONFIG_CHANGE),
    ("nvmlEventTypeGpuUnavailableError", EventKind.GPU_UNAVAILABLE),
    ("nvmlEventTypeGpuRecoveryAction", EventKind.RECOVERY_ACTION),
)
_GPM_SCOPES = {
    "gpu": catalog.Scope.GPU,
    "gpu_instance": catalog.Scope.GPU_INSTANCE,
    "compute_instance": catalog.Scope.COMPUTE_INSTANCE,
}
# Counters whose reads cost the driver milliseconds of CPU are read this often, not every cycle:
# on an H200 the energy counter costs 4.0-4.5 ms of CPU per call, the thermal violation time
# 0.6-0.7 ms and the PCIe replay counter 0.13-0.18 ms (benchmarks/results/nvml_calls-h200.json),
# which at a 1 s interval would be half a percent of a core per GPU. Between reads the last
# values stand: they are counters, so rates over a scrape window see the same increase.
SLOW_COUNTERS_PERIOD_S = 10.0
_MAX_EVENTS_PER_WAIT = 4096  # drain bursts in one hand-off, but hand off before memory grows
_UNIT_RATIO = 1 / 100  # NVML utilizations are whole percents
_PCIE_COUNTERS = (("tx", "NVML_PCIE_UTIL_TX_BYTES"), ("rx", "NVML_PCIE_UTIL_RX_BYTES"))


@dataclass(frozen=True)
class _Field:
    """One NVML field value the backend reads, and what it becomes."""

    name: str  # pynvml's constant
    scope: int  # scopeId: 0, or ALL_LINKS for NVLink sums
    metric: Metric
    extra: tuple[str, ...]
    member: str  # the c_nvmlValue_t member to read
    factor: float  # to base units
    slow: bool = False  # read every SLOW_COUNTERS_PERIOD_S, for its cost


# Read in one nvmlDeviceGetFieldValues call per GPU: on an H200 the violation counters cost
# about 0.7 ms each through nvmlDeviceGetViolationStatus, so one batch shares the driver calls.
_FIELDS = (
    # DCGM reads uiVal whatever valueType says: an r545 driver typed it as a double.
    _Field("NVML_FI_DEV_MEMORY_TEMP", 0, catalog.GPU_MEMORY_TEMPERATURE, (), "uiVal", 1.0),
    _Field(
        "NVML_FI_DEV_PCIE_REPLAY_COUNTER", 0, catalog.GPU_PCIE_REPLAYS, (), "uiVal", 1.0, slow=True
    ),
    _Field("NVML_FI_DEV_PERF_POLICY_POWER", 0, catalog.GPU_THROTTLED, ("power",), "ullVal", 1e-9),
    _Field(
        "NVML_FI_DEV_PERF_POLICY_THERMAL",
        0,
        catalog.GPU_THROTTLED,
        ("thermal",),
        "ullVal",
        1e-9,
        slow=True,
    ),
    # Read every cycle, not only on a recovery-action event: the event may come before the
    # exporter, and an alert needs the action that stands now (catalog.recovery_action_states).
    _Field("NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", 0, catalog.GPU_RECOVERY_ACTION, (), "uiVal", 1.0),
    _Field(
        "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX",
        ALL_LINKS,
        catalog.GPU_NVLINK_BYTES,
        ("tx",),
        "ullVal",
        1024.0,  # KiB
    ),
    _Field(
        "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX",
        ALL_LINKS,
        catalog.GPU_NVLINK_BYTES,
        ("rx",),
        "ullVal",
        1024.0,
    ),
)
_MAX_TEMPERATURE_C = 200  # DCGM stores a blank above this: not a reading


def _set_field(spec: _Field, number: float, readings: Readings) -> None:
    """One field value that answered, into its reading(s)."""
    if spec.metric is catalog.GPU_MEMORY_TEMPERATURE and number > _MAX_TEMPERATURE_C:
        return
    if spec.metric is catalog.GPU_RECOVERY_ACTION:
        for action, current in catalog.recovery_action_states(int(number)).items():
            readings.set(spec.metric, current, action)
        return
    readings.set(spec.metric, number * spec.factor, *spec.extra)


# The profiling fields GPM is asked for per scope, in request order: rates are the GPU's.
_GPM_FIELDS: dict[catalog.Scope, tuple[int, ...]] = {
    catalog.Scope.GPU: tuple(GPM_METRICS),
    catalog.Scope.GPU_INSTANCE: tuple(catalog.PROFILING[catalog.Scope.GPU_INSTANCE]),
    catalog.Scope.COMPUTE_INSTANCE: tuple(catalog.PROFILING[catalog.Scope.COMPUTE_INSTANCE]),
}

# One physical-GPU reading: metric, extra label values, how to read it (value in base units).
_DeviceRead = tuple["Metric", tuple[str, ...], "Callable[[Any, Any], float]"]
_DEVICE_READS: tuple[_DeviceRead, ...] = (
    (
        catalog.GPU_TEMPERATURE,
        (),
        lambda n, h: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
    ),
    (catalog.GPU_POWER, (), lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1e3),
    (catalog.GPU_POWER_LIMIT, (), lambda n, h: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
    (catalog.GPU_SM_CLOCK, (), lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM) * 1e6),
    (
        catalog.GPU_MEMORY_CLOCK,
        (),
        lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM) * 1e6,
    ),
    (
        catalog.GPU_ENCODER_UTILIZATION,
        (),
        lambda n, h: n.nvmlDeviceGetEncoderUtilization(h)[0] * _UNIT_RATIO,
    ),
    (
        catalog.GPU_DECODER_UTILIZATION,
        (),
        lambda n, h: n.nvmlDeviceGetDecoderUtilization(h)[0] * _UNIT_RATIO,
    ),
    (
        catalog.GPU_ECC_ERRORS,
        ("corrected",),
        lambda n, h: n.nvmlDeviceGetTotalEccErrors(
            h, n.NVML_MEMORY_ERROR_TYPE_CORRECTED, n.NVML_AGGREGATE_ECC
        ),
    ),
    (
        catalog.GPU_ECC_ERRORS,
        ("uncorrected",),
        lambda n, h: n.nvmlDeviceGetTotalEccErrors(
            h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_AGGREGATE_ECC
        ),
    ),
)
_SLOW_DEVICE_READS: tuple[_DeviceRead, ...] = (
    (catalog.GPU_ENERGY, (), lambda n, h: n.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3),
)


@dataclass
class _GpuState:
    """What the backend keeps per physical GPU between calls; touched only by that GPU's thread."""

    handle: Any
    mig_enabled: bool
    gpm_supported: bool
    profiles: dict[int, Any]  # profile id -> nvmlGpuInstanceProfileInfo_v2
    mig_handles: dict[tuple[int, int], Any]  # (GI id, CI id) -> MIG device handle
    absent: set[str]  # readings known unsupported or forbidden on this GPU
    gpm_previous: dict[tuple[object, ...], Any]  # entity -> last GPM sample
    # Samples done with, to be filled again: allocating and freeing one per entity and cycle
    # would be driver calls spent on nothing. Holds one sample in steady state.
    gpm_spare: list[Any] = field(default_factory=list)
    # One metrics request per scope, its metric ids set once (see _gpm_layout on the cost).
    gpm_requests: dict[catalog.Scope, Any] = field(default_factory=dict)
    # Field values still asked for: one that answered "not supported" is not asked again.
    fields: tuple[_Field, ...] = ()
    clock_reasons: int | None = None  # the clock-event reasons the GPU supports, once read
    slow_counters: Readings = field(default_factory=Readings)  # as last read
    slow_due: float = -math.inf  # when the slow counters are read again (the backend's clock)
    nvlink_previous: tuple[int, float] | None = None  # NVML timestamp (us), RX+TX bytes


@dataclass
class _Pass:
    """One sampling pass over one GPU."""

    uuid: str
    state: _GpuState
    result: GpuSample


class NvmlBackend:
    """Reads NVIDIA GPUs through NVML (``pynvml``, or the simulator's fake of it).

    Args:
        nvml: the ``pynvml`` module or an object with the same functions and constants.
        clock: monotonic seconds, for when the slow counters are due (injectable for tests).
    """

    name = "nvml"

    def __init__(self, nvml: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self._clock = clock
        self.driver_version = ""
        self._gpus: dict[int, _GpuState] = {}
        self._uuids_by_handle: dict[int, str] = {}
        self._said: set[str] = set()  # one-time log lines already written
        self._event_set: Any = None
        self._registered: set[str] = set()
        self._gpm_slots: tuple[int, struct.Struct] | None = None  # see _gpm_layout
        self._memory_version: int = nvml.nvmlMemory_v2  # a constant, but computed by pynvml
        # Unprivileged NVML delivers only whole-device events in MIG mode (nvml.h), so its
        # XIDs cannot be attributed to instances; the DCGM backend then counts DCGM's.
        self.sees_instance_events = True

    # --- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        """Initialise NVML and create the event set."""
        n = self._nvml
        try:
            n.nvmlInit()
            self.driver_version = n.nvmlSystemGetDriverVersion()
            self._event_set = n.nvmlEventSetCreate()
        except n.NVMLError as error:
            raise BackendUnavailableError(f"NVML: {error}") from error

    def close(self) -> None:
        """Free GPM samples and the event set, then shut NVML down."""
        n = self._nvml
        for state in self._gpus.values():
            for sample in [*state.gpm_previous.values(), *state.gpm_spare]:
                self._quietly(n.nvmlGpmSampleFree, sample)
            state.gpm_previous.clear()
            state.gpm_spare.clear()
        if self._event_set is not None:
            self._quietly(n.nvmlEventSetFree, self._event_set)
            self._event_set = None
        self._quietly(n.nvmlShutdown)

    def _quietly(self, call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except self._nvml.NVMLError as error:
            log.debug("NVML cleanup %s failed: %s", getattr(call, "__name__", call), error)

    # --- topology -------------------------------------------------------------------------------
    def gpu_count(self) -> int:
        """How many GPUs NVML lists; initialises NVML again if it was shut down under us."""
        n = self._nvml
        try:
            try:
                return int(n.nvmlDeviceGetCount())
            except n.NVMLError_Uninitialized:
                self._initialise_again()
                return int(n.nvmlDeviceGetCount())
        except n.NVMLError as error:
            raise BackendUnavailableError(f"NVML: {error}") from error

    def _initialise_again(self) -> None:
        """Initialise NVML again after another user of this process's NVML shut it down.

        Handles, GPM samples and the event set of the old session are not used any more; the
        GPUs are enumerated afresh and registered for events again.
        """
        log.warning("NVML was uninitialised under the exporter; initialising it again")
        n = self._nvml
        n.nvmlInit()
        self.driver_version = n.nvmlSystemGetDriverVersion()
        self._event_set = n.nvmlEventSetCreate()
        self._gpus.clear()
        self._uuids_by_handle.clear()
        self._registered.clear()

    def discover_gpu(self, index: int) -> Gpu:
        """Enumerate GPU ``index``: identity, MIG mode, GPU and compute instances."""
        n = self._nvml
        try:
            handle = n.nvmlDeviceGetHandleByIndex(index)
            uuid = n.nvmlDeviceGetUUID(handle)
            name = n.nvmlDeviceGetName(handle)
            bus_id = _text(n.nvmlDeviceGetPciInfo(handle).busId)
            minor = self._minor_number(handle)
            mig_enabled = self._mig_enabled(handle)
            previous = self._gpus.get(index)
            same = previous is not None and previous.mig_enabled == mig_enabled
            state = _GpuState(
                handle=handle,
                mig_enabled=mig_enabled,
                gpm_supported=self._gpm_supported(handle, uuid),
                profiles=previous.profiles if previous else self._profiles(handle),
                mig_handles={},
                # What is supported changes with the MIG mode: then probe everything again.
                absent=previous.absent if previous and same else set(),
                gpm_previous=previous.gpm_previous if previous else {},
                gpm_spare=previous.gpm_spare if previous else [],
                fields=previous.fields if previous and same else self._known_fields(),
            )
            if previous and same:  # re-enumeration every refresh must not make them due
                state.slow_counters, state.slow_due = previous.slow_counters, previous.slow_due
                state.nvlink_previous = previous.nvlink_previous
            instances = self._discover_instances(state) if mig_enabled else ()
        except n.NVMLError as error:
            raise GpuUnavailableError(f"GPU {index}: {error}") from error
        self._forget_gpm_of_vanished(state, instances)
        self._gpus[index] = state
        self._uuids_by_handle[_address(handle)] = uuid
        if uuid not in self._registered:
            self._register_events(uuid, handle)
        return Gpu(
            index=index,
            uuid=uuid,
            name=name,
            pci_bus_id=bus_id,
            mig_enabled=mig_enabled,
            mig_slices_total=max((p.sliceCount for p in state.profiles.values()), default=0)
            if mig_enabled
            else 0,
            gpu_instances=instances,
            minor_number=minor,
        )

    def _minor_number(self, handle: Any) -> int | None:
        """The GPU's /dev/nvidia minor number, which DRA device names use; None if unknown."""
        n = self._nvml
        try:
            return int(n.nvmlDeviceGetMinorNumber(handle))
        except (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound):
            return None

    def _mig_enabled(self, handle: Any) -> bool:
        n = self._nvml
        try:
            current, _pending = n.nvmlDeviceGetMigMode(handle)
        except (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound):
            return False
        return bool(current == n.NVML_DEVICE_MIG_ENABLE)

    def _gpm_supported(self, handle: Any, uuid: str) -> bool:
        n = self._nvml
        try:
            return bool(n.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        except (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound):
            self._say_once(f"gpm:{uuid}", "GPU %s has no GPM: no profiling ratios", uuid)
            return False

    def _profiles(self, handle: Any) -> dict[int, Any]:
        """The GPU's GPU-instance profile table by profile id (immutable while MIG mode lasts)."""
        n = self._nvml
        table: dict[int, Any] = {}
        for index in range(n.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = n.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
            except n.NVMLError_InvalidArgument:
                break  # NVML's documented end of the list
            except (n.NVMLError_NotSupported, n.NVMLError_NoPermission):
                continue
            table[info.id] = info
        return table

    def _discover_instances(self, state: _GpuState) -> tuple[GpuInstance, ...]:
        """Walk the MIG device slots (sparse) and group compute instances by GPU instance."""
        n = self._nvml
        by_gi: dict[int, list[tuple[ComputeInstance, Any]]] = {}
        for slot in range(n.nvmlDeviceGetMaxMigDeviceCount(state.handle)):
            try:
                mig = n.nvmlDeviceGetMigDeviceHandleByIndex(state.handle, slot)
            except (n.NVMLError_NotFound, n.NVMLError_InvalidArgument):
                continue  # empty slot
            gi_id = n.nvmlDeviceGetGpuInstanceId(mig)
            ci_id = n.nvmlDeviceGetComputeInstanceId(mig)
            attributes = n.nvmlDeviceGetAttributes(mig)
            ci = ComputeInstance(
                id=ci_id,
                mig_uuid=n.nvmlDeviceGetUUID(mig),
                profile=_profile_from_device_name(n.nvmlDeviceGetName(mig)),
                slices=attributes.computeInstanceSliceCount,
                sms=attributes.multiprocessorCount,
            )
            state.mig_handles[(gi_id, ci_id)] = mig
            by_gi.setdefault(gi_id, []).append((ci, attributes))
        return tuple(
            self._gpu_instance(state, gi_id, members) for gi_id, members in sorted(by_gi.items())
        )

    def _gpu_instance(
        self, state: _GpuState, gi_id: int, members: list[tuple[ComputeInstance, Any]]
    ) -> GpuInstance:
        n = self._nvml
        cis = tuple(sorted((ci for ci, _ in members), key=lambda ci: ci.id))
        attributes = members[0][1]
        profile_id: int | None = None
        placement: Placement | None = None
        try:  # privileged: root or CAP_SYS_ADMIN
            info = n.nvmlGpuInstanceGetInfo(n.nvmlDeviceGetGpuInstanceById(state.handle, gi_id))
            profile_id = int(info.profileId)
            placement = Placement(int(info.placement.start), int(info.placement.size))
        except n.NVMLError_NoPermission:
            self.sees_instance_events = False
            self._say_once(
                "placement",
                "no permission for GPU instance details (placement, profile id): "
                "run as root or with CAP_SYS_ADMIN to get them",
            )
        profile_info = state.profiles.get(profile_id) if profile_id is not None else None
        if profile_info is not None:
            profile = _profile_from_device_name(_text(profile_info.name))
            sms = int(profile_info.multiprocessorCount)
        else:  # unprivileged: the MIG device name of a whole-GI compute instance is the profile
            profile = re.sub(r"^\d+c\.", "", cis[0].profile)
            sms = sum(ci.sms or 0 for ci in cis)
        return GpuInstance(
            id=gi_id,
            profile=profile,
            slices=int(attributes.gpuInstanceSliceCount),
            memory_bytes=int(attributes.memorySizeMB) * MIB,
            sms=sms,
            profile_id=profile_id,
            placement=placement,
            compute_instances=cis,
        )

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, gpu: Gpu) -> GpuSample:
        """Read GPU-level values, then every GPU instance and compute instance of ``gpu``."""
        state = self._gpus.get(gpu.index)
        if state is None:
            raise GpuUnavailableError(f"GPU {gpu.index} was not discovered")
        run = _Pass(gpu.uuid, state, GpuSample())
        self._sample_device(run)
        self._read_slow_counters(run)
        self._read_clock_events(run)
        self._read_fields(run, run.result.gpu, slow=False)
        supported = dict.fromkeys(catalog.PROFILING_FIELDS, state.gpm_supported)
        if state.mig_enabled:
            supported.update(dict.fromkeys(catalog.NVLINK_FIELDS, False))
        run.result.fields_supported = supported
        if state.gpm_supported:
            handle = state.handle
            self._read_gpm(
                run, ("gpu",), run.result.gpu, lambda s: self._nvml.nvmlGpmSampleGet(handle, s)
            )
        else:
            self._read_pcie_throughput(run)
        for gi in gpu.gpu_instances:
            self._sample_gpu_instance(run, gi)
        return run.result

    def _sample_device(self, run: _Pass) -> None:
        """The physical GPU's own readings: one call (or one table row) each."""
        n, handle, readings = self._nvml, run.state.handle, run.result.gpu
        self._read_device(run, _DEVICE_READS, readings)
        memory = self._read(run, "memory", partial(_memory_info, n, self._memory_version, handle))
        if memory is not None:
            _set_memory(readings, catalog.Scope.GPU, memory)
        busy = self._read(run, "utilization", lambda: n.nvmlDeviceGetUtilizationRates(handle))
        if busy is not None:
            readings.set(catalog.GPU_UTILIZATION, busy.gpu * _UNIT_RATIO)
            readings.set(catalog.GPU_MEMORY_COPY_UTILIZATION, busy.memory * _UNIT_RATIO)
        rows = self._read(run, "remapped_rows", lambda: n.nvmlDeviceGetRemappedRows(handle))
        if rows is not None:
            corrected, uncorrected, pending, failed = rows
            readings.set(catalog.GPU_REMAPPED_ROWS, corrected, "corrected")
            readings.set(catalog.GPU_REMAPPED_ROWS, uncorrected, "uncorrected")
            readings.set(catalog.GPU_ROW_REMAP_PENDING, bool(pending))
            readings.set(catalog.GPU_ROW_REMAP_FAILED, bool(failed))

    def _read_device(self, run: _Pass, reads: tuple[_DeviceRead, ...], readings: Readings) -> None:
        n, handle = self._nvml, run.state.handle
        for metric, extra, read in reads:
            value = self._read(run, metric.name + "".join(extra), partial(read, n, handle))
            if value is not None:
                readings.set(metric, value, *extra)

    def _read_slow_counters(self, run: _Pass) -> None:
        """The costly counters, every SLOW_COUNTERS_PERIOD_S; the last values in between."""
        state, now = run.state, self._clock()
        if now >= state.slow_due:
            counters = Readings()
            self._read_device(run, _SLOW_DEVICE_READS, counters)
            self._read_fields(run, counters, slow=True)
            state.slow_counters, state.slow_due = counters, now + SLOW_COUNTERS_PERIOD_S
        run.result.gpu.values.update(state.slow_counters.values)

    def _read_pcie_throughput(self, run: _Pass) -> None:
        """Without GPM: the driver's own 20 ms window; each call waits for it (21 ms, H200)."""
        n, handle = self._nvml, run.state.handle
        for direction, counter in _PCIE_COUNTERS:
            kilobytes = self._read(
                run,
                f"pcie_{direction}",
                partial(n.nvmlDeviceGetPcieThroughput, handle, getattr(n, counter)),
            )
            if kilobytes is not None:
                run.result.gpu.set(catalog.GPU_PCIE_THROUGHPUT, kilobytes * 1024, direction)

    def _sample_gpu_instance(self, run: _Pass, gi: GpuInstance) -> None:
        n, state = self._nvml, run.state
        readings = run.result.gpu_instances.setdefault(gi.id, Readings())
        first = state.mig_handles[(gi.id, gi.compute_instances[0].id)]
        memory = self._read(
            run, "instance_memory", partial(_memory_info, n, self._memory_version, first)
        )
        if memory is not None:
            _set_memory(readings, catalog.Scope.GPU_INSTANCE, memory)
        if not state.gpm_supported:
            return
        self._read_gpm(
            run,
            ("gpu_instance", gi.generation),
            readings,
            lambda s: n.nvmlGpmMigSampleGet(state.handle, gi.id, s),
        )
        if len(gi.compute_instances) < 2:
            return  # one CI spans the whole GI: its values would only repeat the GI's
        for ci in gi.compute_instances:
            mig = state.mig_handles[(gi.id, ci.id)]
            self._read_gpm(
                run,
                ("compute_instance", gi.generation, ci.id),
                run.result.compute_instances.setdefault((gi.id, ci.id), Readings()),
                partial(n.nvmlGpmSampleGet, mig),
            )

    def _read_gpm(
        self,
        run: _Pass,
        entity: tuple[object, ...],
        readings: Readings,
        take: Callable[[Any], object],
    ) -> None:
        """Take a GPM sample and, from the second one on, report ratios over the interval."""
        n = self._nvml
        scope = _GPM_SCOPES[str(entity[0])]
        spare = run.state.gpm_spare
        sample = spare.pop() if spare else self._read(run, f"gpm_{entity[0]}", n.nvmlGpmSampleAlloc)
        if sample is None:
            return
        if self._read(run, f"gpm_{entity[0]}", lambda: take(sample)) is None:
            spare.append(sample)
            return
        previous = run.state.gpm_previous.pop(entity, None)
        run.state.gpm_previous[entity] = sample
        if previous is None:
            return  # GPM reports over an interval: the first sample only seeds it
        request = self._gpm_request(run.state, scope)
        request.sample1, request.sample2 = previous, sample
        got = self._read(run, "gpm_metrics", lambda: n.nvmlGpmMetricsGet(request))
        spare.append(previous)
        if got is not None:
            self._store_gpm(request, scope, readings, skip_nvlink=run.state.mig_enabled)

    def _gpm_request(self, state: _GpuState, scope: catalog.Scope) -> Any:
        """The GPU's metrics request for ``scope``, made on first use with the metric ids set."""
        request = state.gpm_requests.get(scope)
        if request is None:
            n = self._nvml
            request = state.gpm_requests[scope] = n.c_nvmlGpmMetricsGet_t()
            request.version = n.NVML_GPM_METRICS_GET_VERSION
            fields = _GPM_FIELDS[scope]
            request.numMetrics = len(fields)
            slots = request.metrics
            for slot, field_id in enumerate(fields):
                slots[slot].metricId = GPM_METRICS[field_id]
        return request

    def _store_gpm(
        self, request: Any, scope: catalog.Scope, readings: Readings, *, skip_nvlink: bool
    ) -> None:
        """The answered metrics: ratios from percent, rates from MiB/s to bytes/s."""
        fields, ratios = _GPM_FIELDS[scope], catalog.PROFILING[scope]
        offset, layout = self._gpm_layout()
        raw = ctypes.string_at(ctypes.addressof(request) + offset, layout.size * len(fields))
        for field_id, (status, value) in zip(fields, layout.iter_unpack(raw), strict=True):
            if status != _SUCCESS or math.isnan(value):
                continue
            if field_id in ratios:  # GPM speaks percent; clamp the driver's rounding past 100 %
                readings.set(ratios[field_id], min(max(value, 0.0), 100.0) / 100)
            elif not (skip_nvlink and field_id in catalog.NVLINK_FIELDS):
                rate, direction = GPM_RATES[field_id]
                readings.set(rate, max(value, 0.0) * MIB, *direction)

    def _gpm_layout(self) -> tuple[int, struct.Struct]:
        """Where a metrics request's results lie, and each slot's (nvmlReturn, value).

        Read as bytes in one call: through pynvml's struct classes every field access is a
        Python call, which was most of this backend's own cost per instance.
        """
        if self._gpm_slots is None:
            n = self._nvml
            slot = n.c_nvmlGpmMetric_t
            status, value, size = slot.nvmlReturn.offset, slot.value.offset, ctypes.sizeof(slot)
            layout = struct.Struct(f"={status}xI{value - status - 4}xd{size - value - 8}x")
            self._gpm_slots = (n.c_nvmlGpmMetricsGet_t.metrics.offset, layout)
        return self._gpm_slots

    def _read_clock_events(self, run: _Pass) -> None:
        """One 0/1 reading per clock-event reason the GPU supports."""
        n, state = self._nvml, run.state
        if state.clock_reasons is None:
            supported = self._read(
                run,
                "clock_events",
                lambda: n.nvmlDeviceGetSupportedClocksEventReasons(state.handle),
            )
            if supported is None:
                return
            state.clock_reasons = int(supported)
        active = self._read(
            run, "clock_events", lambda: n.nvmlDeviceGetCurrentClocksEventReasons(state.handle)
        )
        if active is None:
            return
        for bit, reason in catalog.CLOCK_EVENT_REASONS.items():
            if state.clock_reasons & bit:
                run.result.gpu.set(catalog.GPU_CLOCK_EVENT, bool(active & bit), reason)

    def _known_fields(self) -> tuple[_Field, ...]:
        """The field values these bindings can name: older ones lack the newest constants."""
        return tuple(f for f in _FIELDS if hasattr(self._nvml, f.name))

    def _read_fields(self, run: _Pass, readings: Readings, *, slow: bool) -> None:
        """The batched field values of one cadence; each entry answers on its own."""
        n, state = self._nvml, run.state
        wanted = tuple(
            f
            for f in state.fields
            if f.slow is slow
            # NVLink is not supported in MIG mode
            and not (state.mig_enabled and f.metric is catalog.GPU_NVLINK_BYTES)
        )
        if not wanted:
            return
        ids = [(getattr(n, f.name), f.scope) for f in wanted]
        values = self._read(
            run, "field_values", lambda: n.nvmlDeviceGetFieldValues(state.handle, ids)
        )
        if values is None:
            return
        absent = set()
        nvlink_stamp = 0
        for spec, value in zip(wanted, values, strict=True):
            status = value.nvmlReturn
            if status == _SUCCESS:
                _set_field(spec, getattr(value.value, spec.member), readings)
                if spec.metric is catalog.GPU_NVLINK_BYTES:
                    nvlink_stamp = max(nvlink_stamp, int(value.timestamp))
            elif status in (
                n.NVML_ERROR_NOT_SUPPORTED,
                n.NVML_ERROR_NO_PERMISSION,
                n.NVML_ERROR_INVALID_ARGUMENT,  # a field this driver does not know
            ):
                absent.add(spec.name)
                log.debug("GPU %s: field %s unavailable (%d)", run.uuid, spec.name, status)
            else:
                run.result.errors += 1
        if absent:
            state.fields = tuple(f for f in state.fields if f.name not in absent)
        if nvlink_stamp:
            self._nvlink_rate(state, readings, nvlink_stamp)

    @staticmethod
    def _nvlink_rate(state: _GpuState, readings: Readings, stamp_us: int) -> None:
        """Both directions' NVLink payload as a rate since the last read, as DCGM 449 has it.

        DCGM (ReadAndCacheNvLinkBandwidth) divides the growth of the RX+TX sum by the time
        between the NVML timestamps of two reads; so does this, in bytes per second. The first
        read, and one after the counters went back (a driver reload), give no value.
        """
        directions = [readings.get(catalog.GPU_NVLINK_BYTES, d) for d in ("tx", "rx")]
        if None in directions:
            return
        total = sum(d for d in directions if d is not None)
        previous, state.nvlink_previous = state.nvlink_previous, (stamp_us, total)
        if previous is None or stamp_us <= previous[0] or total < previous[1]:
            return
        rate = (total - previous[1]) / ((stamp_us - previous[0]) / 1e6)
        readings.set(catalog.GPU_NVLINK_DATA_RATE, rate)

    def _forget_gpm_of_vanished(self, state: _GpuState, instances: tuple[GpuInstance, ...]) -> None:
        """Free GPM samples of instances that no longer exist, so none diff across generations."""
        alive = {gi.generation for gi in instances}
        for entity in [e for e in state.gpm_previous if len(e) > 1 and e[1] not in alive]:
            self._quietly(self._nvml.nvmlGpmSampleFree, state.gpm_previous.pop(entity))

    def _read(self, run: _Pass, key: str, call: Callable[[], _T]) -> _T | None:
        """Call NVML once; map "not supported" and "no permission" to an absent reading.

        Raises:
            GpuUnavailableError: when the GPU is lost or the driver went away.
        """
        if key in run.state.absent:
            return None
        n = self._nvml
        try:
            return call()
        except n.NVMLError as error:
            kind = type(error).__name__
            if kind == _LIBRARY_GONE:
                raise BackendUnavailableError(f"NVML: {error}") from error
            if kind in _GPU_GONE:
                raise GpuUnavailableError(f"GPU {run.uuid}: {error}") from error
            if kind in _ABSENT:
                run.state.absent.add(key)
                log.debug("GPU %s: %s is not supported (%s)", run.uuid, key, error)
            elif kind == "NVMLError_NoPermission":
                run.state.absent.add(key)
                self._say_once(f"perm:{key}", "no permission to read %s: series omitted", key)
            else:
                run.result.errors += 1
                log.debug("GPU %s: reading %s failed: %s", run.uuid, key, error)
            return None

    def _say_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)

    # --- events ---------------------------------------------------------------------------------
    def wait_events(self, timeout_s: float) -> list[DeviceEvent]:
        """Wait for the next driver event, then drain whatever else is queued."""
        n = self._nvml
        events: list[DeviceEvent] = []
        wait_ms = max(int(timeout_s * 1000), 0)
        while len(events) < _MAX_EVENTS_PER_WAIT:
            try:
                data = n.nvmlEventSetWait_v2(self._event_set, wait_ms)
            except n.NVMLError_Timeout:
                break
            event = self._event(data)
            if event is not None:
                events.append(event)
            wait_ms = 0
        return events

    def _register_events(self, uuid: str, handle: Any) -> None:
        """Register at discovery: NVML drops events that happen before registration."""
        n = self._nvml
        try:
            mask = n.nvmlDeviceGetSupportedEventTypes(handle) & _wanted_event_mask(n)
            n.nvmlDeviceRegisterEvents(handle, mask, self._event_set)
        except n.NVMLError as error:
            self._say_once(f"events:{uuid}", "GPU %s: no driver events (%s)", uuid, error)
            return
        self._registered.add(uuid)

    def _event(self, data: Any) -> DeviceEvent | None:
        n = self._nvml
        uuid = self._uuids_by_handle.get(_address(data.device))
        if uuid is None:
            try:
                uuid = n.nvmlDeviceGetUUID(data.device)
            except n.NVMLError as error:  # a lost GPU: count the event anyway, unnamed
                self._say_once("event-uuid", "event from a GPU that cannot be named: %s", error)
                uuid = ""
        kind = next((k for name, k in _EVENT_KINDS if data.eventType & getattr(n, name, 0)), None)
        if kind is None:
            return None
        gi = None if data.gpuInstanceId == UNATTRIBUTED else int(data.gpuInstanceId)
        ci = None if data.computeInstanceId == UNATTRIBUTED else int(data.computeInstanceId)
        return DeviceEvent(
            gpu_uuid=uuid,
            kind=kind,
            time=time.time(),
            xid=int(data.eventData) if kind is EventKind.XID else None,
            gpu_instance_id=gi,
            compute_instance_id=ci if gi is not None else None,
            recovery_action=(
                self._recovery_action(data.device) if kind is EventKind.RECOVERY_ACTION else None
            ),
        )

    def _recovery_action(self, device: Any) -> str:
        """What the driver asks for now; the event itself carries no data (eventData is 0)."""
        n = self._nvml
        try:
            [value] = n.nvmlDeviceGetFieldValues(device, [n.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION])
        except (n.NVMLError, AttributeError) as error:  # a lost GPU, or bindings without it
            log.debug("recovery action unreadable: %s", error)
            return "unknown"
        if value.nvmlReturn != n.NVML_SUCCESS:
            return "unknown"
        return catalog.recovery_action_name(int(value.value.uiVal))


# The families of memory info's used, total, free and reserved (DCGM 252, 250, 251, 253).
_MEMORY_METRICS = {
    scope: tuple(catalog.DCGM_FIELDS[scope][field][0] for field in (252, 250, 251, 253))
    for scope in (catalog.Scope.GPU, catalog.Scope.GPU_INSTANCE)
}


def _set_memory(readings: Readings, scope: catalog.Scope, memory: Any) -> None:
    used, total, free, reserved = _MEMORY_METRICS[scope]
    readings.set(used, memory.used)
    readings.set(total, memory.total)
    readings.set(free, memory.free)
    readings.set(reserved, memory.reserved)


def _memory_info(n: Any, version: int, handle: Any) -> Any:
    """Memory info v2, whose ``used`` excludes the driver's reservation, as DCGM's FB_USED."""
    return n.nvmlDeviceGetMemoryInfo(handle, version=version)


def _wanted_event_mask(n: Any) -> int:
    mask = 0
    for name, _kind in _EVENT_KINDS:
        mask |= getattr(n, name, 0)  # older bindings lack the newest event types
    return mask


def _address(handle: Any) -> int:
    """A handle's pointer value: stable per device, and what event data carries."""
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _profile_from_device_name(name: str | bytes) -> str:
    """``"NVIDIA H100 80GB HBM3 MIG 3g.40gb"`` or ``"MIG 3g.40gb"`` -> ``"3g.40gb"``."""
    text = _text(name)
    return text.rsplit("MIG ", 1)[-1].strip()
