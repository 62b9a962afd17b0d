"""Fake NVML calls for telemetry: memory, power, thermals, clocks, ECC, fields, events, GPM."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._events import EventQueue
from migexporter.sim._model import MIB
from migexporter.sim._nvml_base import Session, fail
from migexporter.sim._workload import DRAM, GR, OCCUPANCY, SM, TENSOR, Vector

if TYPE_CHECKING:
    from collections.abc import Callable

    from migexporter.sim._model import SimGpu

# GPM metric id -> position in an activity vector. Everything else is "not supported".
_GPM_METRICS = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: GR,
    pynvml.NVML_GPM_METRIC_SM_UTIL: SM,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: TENSOR,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: DRAM,
}
_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
# The fields nvmlDeviceGetFieldValues answers: id -> (value type, union member, reader).
_FIELDS: dict[int, tuple[int, str, Callable[[SimGpu], int]]] = {
    pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: (
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
        "uiVal",
        lambda gpu: gpu.recovery_action,
    ),
}


@dataclass(eq=False)
class GpmSample:
    """What an ``nvmlGpmSample_t`` holds: when, and the activity counters at that moment."""

    struct: Any  # kept here so the handle's address stays valid until freed
    time: float | None = None
    totals: Vector | None = None


class TelemetryCalls(Session):
    """Physical-GPU telemetry on parent handles; MIG handles answer NotSupported for it."""

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        """Memory of a GPU, or of the GPU instance behind a MIG device handle."""
        with self._call(handle):
            gpu, mig = self._device(handle)
            self._fleet.advance(gpu)
            if mig is not None:
                gi = mig.gpu_instance
                total, reserved, used = gi.memory_bytes, 0, gi.memory_used_bytes()
            else:
                if gpu.mig_enabled and not self._privileged:
                    # nvml.h: aggregate data on the parent in MIG mode needs privileges.
                    raise fail(pynvml.NVML_ERROR_NO_PERMISSION)
                total = gpu.model.memory_mib * MIB
                reserved, used = gpu.reserved_bytes, gpu.memory_used_bytes()
            if not version:
                memory = pynvml.c_nvmlMemory_t()
                memory.used = used + reserved  # v1 "used" includes the reserved memory
            elif version != pynvml.nvmlMemory_v2:
                raise fail(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
            else:
                memory = pynvml.c_nvmlMemory_v2_t()
                memory.version = version
                memory.reserved = reserved
                memory.used = used
            memory.total = total
            memory.free = total - reserved - used
            return memory

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        """GPU temperature in C (sensor NVML_TEMPERATURE_GPU only)."""
        with self._call(handle):
            gpu = self._gpu(handle)
            if sensor != pynvml.NVML_TEMPERATURE_GPU:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            self._fleet.advance(gpu)
            return gpu.temperature_c()

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        """Power draw in mW."""
        with self._call(handle):
            gpu = self._gpu(handle)
            self._fleet.advance(gpu)
            return gpu.power_mw()

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        """Power limit in mW."""
        with self._call(handle):
            return self._gpu(handle).model.power_limit_w * 1000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        """Energy since the driver loaded, in mJ; never decreases."""
        with self._call(handle):
            gpu = self._gpu(handle)
            self._fleet.advance(gpu)
            return gpu.energy_mj()

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:  # noqa: A002 (pynvml's name)
        """Current clock in MHz: graphics/SM follow the load, memory is fixed."""
        with self._call(handle):
            gpu = self._gpu(handle)
            self._fleet.advance(gpu)
            if type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
                return gpu.sm_clock_mhz()
            if type == pynvml.NVML_CLOCK_MEM:
                return gpu.model.mem_clock_mhz
            if type == pynvml.NVML_CLOCK_VIDEO:
                return gpu.sm_clock_mhz() * 9 // 10
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        """ECC error count; 0 unless the fleet injected some."""
        with self._call(handle):
            gpu = self._gpu(handle)
            if errorType not in (0, 1) or counterType not in (0, 1):
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return gpu.ecc.get((errorType, counterType), 0)

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        """(corrected, uncorrected, pending, failure); NotSupported with MIG instances."""
        with self._call(device):
            gpu = self._gpu(device)
            if gpu.mig_enabled and gpu.gpu_instances:  # nvml.h: "not supported" then
                raise fail(_NOT_SUPPORTED)
            return (0, 0, 0, 0)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        """``c_nvmlUtilization_t`` in percent; NotSupported for anything MIG."""
        with self._call(handle):
            gpu = self._gpu(handle)
            if gpu.mig_enabled:
                raise fail(_NOT_SUPPORTED)
            self._fleet.advance(gpu)
            levels = gpu.levels()
            utilization = pynvml.c_nvmlUtilization_t()
            utilization.gpu = round(100 * levels[GR])
            utilization.memory = round(100 * levels[DRAM])
            return utilization

    # --- field values: one status per entry ---

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Any) -> Any:
        """A ``c_nvmlFieldValue_t`` array, one per item of ``fieldIds``, each with its status.

        Items are field ids or ``(fieldId, scopeId)`` pairs, as for pynvml. Only
        NVML_FI_DEV_GET_GPU_RECOVERY_ACTION is answered (unsigned int, ``value.uiVal``).
        Every other entry fails on its own while the call succeeds, as on an H100 with driver
        580.159.04: ids NVML does not know (0, NVML_FI_MAX and above) with
        NVML_ERROR_INVALID_ARGUMENT and no timestamp, the fields the simulator does not model
        with NVML_ERROR_NOT_SUPPORTED. The call fails as a whole for an uninitialised
        library, an empty ``fieldIds``, a bad handle or a lost GPU.
        """
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        self._check_init()  # pynvml looks the function up before it unpacks the ids
        for position, item in enumerate(fieldIds):  # pynvml's own unpacking, same errors
            try:
                (values[position].fieldId, values[position].scopeId) = item
            except TypeError:
                values[position].fieldId = item
        if not values:
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # valuesCount 0, as measured
        with self._call(handle):
            gpu, mig = self._device(handle)
            stamp = int(time.time() * 1_000_000)  # CPU time in microseconds since 1970
            for value in values:
                if not 0 < value.fieldId < pynvml.NVML_FI_MAX:
                    value.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
                    continue
                value.timestamp = stamp  # the driver stamps unsupported entries too
                field = _FIELDS.get(value.fieldId)
                # nvml.h documents field values for "the device handle of the GPU" and says
                # nothing of MIG device handles (and the measured GPU was not in MIG mode);
                # the recovery action belongs to the whole GPU, so a MIG device handle
                # answers NOT_SUPPORTED per entry: an assumption, not a measurement.
                if field is None or mig is not None:
                    value.nvmlReturn = _NOT_SUPPORTED
                    continue
                value_type, member, read = field
                value.valueType = value_type
                setattr(value.value, member, read(gpu))
                value.nvmlReturn = pynvml.NVML_SUCCESS
        return values

    # --- events: registered on parent GPUs; waits never block on a hung GPU ---

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        """Every event type (0xff9f on H100, driver 580)."""
        with self._call(handle, block=False):
            self._gpu(handle)
            return int(pynvml.nvmlEventTypeAll)

    def nvmlEventSetCreate(self) -> Any:
        """A new, empty event set."""
        self._check_init()
        with self._fleet.lock:
            struct, queue = self._fleet.create_event_set(self._privileged)
            self.own_event_set(queue)
            return ctypes.pointer(struct)

    def _event_set(self, eventSet: Any) -> EventQueue:
        queue = self._fleet.resolve(eventSet, "event_set")
        if not isinstance(queue, EventQueue):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return queue

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        """Record events of ``eventTypes`` from this GPU from now on (not earlier ones)."""
        with self._call(handle, block=False):
            gpu = self._gpu(handle)  # per-MIG-device events are not supported (nvml.h)
            queue = self._event_set(eventSet)
            if eventTypes & ~pynvml.nvmlEventTypeAll:
                raise fail(_NOT_SUPPORTED)
            queue.register(gpu.index, eventTypes)

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        """One event, waiting up to ``timeoutms``; NVMLError_Timeout when none came."""
        self._check_init()
        queue = self._event_set(eventSet)
        event = queue.wait(timeoutms / 1000)
        if event is None:
            if self._fleet.resolve(eventSet, "event_set") is None:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # freed while waiting
            raise fail(pynvml.NVML_ERROR_TIMEOUT)
        data = pynvml.c_nvmlEventData_t()
        data.device = ctypes.pointer(self._fleet.gpus[event.gpu].device)
        data.eventType = event.event_type
        data.eventData = event.data
        data.gpuInstanceId = event.gpu_instance_id
        data.computeInstanceId = event.compute_instance_id
        return data

    def nvmlEventSetWait(self, eventSet: Any, timeoutms: int) -> Any:
        """Same as ``nvmlEventSetWait_v2``, as in pynvml."""
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        """Free an event set."""
        self._check_init()
        with self._fleet.lock:
            queue = self._event_set(eventSet)
            self._fleet.free_event_set(queue)
            if queue in self._event_queues:
                self._event_queues.remove(queue)

    # --- GPM: counters sampled per GPU, per GPU instance, or per MIG device ---

    def nvmlGpmQueryDeviceSupport(self, device: Any) -> Any:
        """``c_nvmlGpmSupport_t``: supported on Hopper (H100, H200), not on Ampere."""
        with self._call(device):
            gpu, _ = self._device(device)
            support = pynvml.c_nvmlGpmSupport_t()
            support.version = pynvml.NVML_GPM_SUPPORT_VERSION
            support.isSupportedDevice = int(gpu.model.gpm)
            return support

    def nvmlGpmSampleAlloc(self) -> Any:
        """A new, empty GPM sample."""
        self._check_init()
        sample = GpmSample(pynvml.struct_c_nvmlGpmSample_t())
        with self._fleet.lock:
            self._fleet.register(sample.struct, sample, "gpm_sample")
            self._gpm_samples[ctypes.addressof(sample.struct)] = sample.struct
        return ctypes.pointer(sample.struct)

    def _sample(self, gpmSample: Any) -> GpmSample:
        sample = self._fleet.resolve(gpmSample, "gpm_sample")
        if not isinstance(sample, GpmSample):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return sample

    def nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        """Free a GPM sample."""
        self._check_init()
        with self._fleet.lock:
            struct = self._sample(gpmSample).struct
            self._fleet.retire(struct, keep=False)
            self._gpm_samples.pop(ctypes.addressof(struct), None)

    def nvmlGpmSampleGet(self, device: Any, gpmSample: Any) -> Any:
        """Sample a whole GPU, or one MIG device (compute instance)."""
        with self._call(device):
            gpu, mig = self._device(device)
            if not gpu.model.gpm:
                raise fail(_NOT_SUPPORTED)
            sample = self._sample(gpmSample)
            self._fleet.advance(gpu)
            sample.time = gpu.time
            sample.totals = gpu.totals if mig is None else mig.workload.totals
            return gpmSample

    def nvmlGpmMigSampleGet(self, device: Any, gpuInstanceId: int, gpmSample: Any) -> Any:
        """Sample one GPU instance of a MIG-enabled GPU (InvalidArgument without MIG)."""
        with self._call(device):
            gpu = self._gpu(device, pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if not gpu.model.gpm:
                raise fail(_NOT_SUPPORTED)
            if not gpu.mig_enabled:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            gi = gpu.gpu_instances.get(gpuInstanceId)
            if gi is None:
                raise fail(pynvml.NVML_ERROR_NOT_FOUND)
            sample = self._sample(gpmSample)
            self._fleet.advance(gpu)
            sample.time = gpu.time
            sample.totals = gi.totals
            return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        """Averages between ``sample1`` and ``sample2`` in percent, per-metric return codes."""
        self._check_init()
        if not isinstance(metricsGet, pynvml.c_nvmlGpmMetricsGet_t):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if metricsGet.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise fail(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        if metricsGet.numMetrics > pynvml.NVML_GPM_METRIC_MAX:
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        with self._fleet.lock:
            first, second = self._sample(metricsGet.sample1), self._sample(metricsGet.sample2)
            if first.totals is None or second.totals is None:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            elapsed = (second.time or 0.0) - (first.time or 0.0)
            for position in range(metricsGet.numMetrics):
                metric = metricsGet.metrics[position]
                where = _GPM_METRICS.get(metric.metricId)
                if where is None:
                    known = 0 < metric.metricId < pynvml.NVML_GPM_METRIC_MAX
                    metric.nvmlReturn = (
                        _NOT_SUPPORTED if known else pynvml.NVML_ERROR_INVALID_ARGUMENT
                    )
                    metric.value = 0.0
                    continue
                delta = second.totals[where] - first.totals[where]
                # Samples out of order or of different entities give garbage, as on hardware.
                percent = 100 * delta / elapsed if elapsed else 0.0
                metric.value = min(100.0, max(0.0, percent))
                metric.nvmlReturn = pynvml.NVML_SUCCESS
        return metricsGet
