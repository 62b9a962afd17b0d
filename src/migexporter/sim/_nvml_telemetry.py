"""Fake NVML telemetry: memory, power, thermals, clocks, codecs, PCIe, ECC, fields, events, GPM."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.backends.nvml import ALL_LINKS
from migexporter.sim._events import EventQueue
from migexporter.sim._model import MIB
from migexporter.sim._nvml_base import Session, fail
from migexporter.sim._workload import (
    DECODE,
    DRAM,
    FP16,
    FP32,
    FP64,
    GR,
    NVLINK_RX,
    NVLINK_TX,
    OCCUPANCY,
    PCIE_RX,
    PCIE_TX,
    SM,
    TENSOR,
    Vector,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from migexporter.sim._model import SimGpu

# GPM metric id -> position in an activity vector, for the metrics that are ratios.
GPM_RATIOS = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: GR,
    pynvml.NVML_GPM_METRIC_SM_UTIL: SM,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: TENSOR,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: DRAM,
    pynvml.NVML_GPM_METRIC_FP64_UTIL: FP64,
    pynvml.NVML_GPM_METRIC_FP32_UTIL: FP32,
    pynvml.NVML_GPM_METRIC_FP16_UTIL: FP16,
}
# GPM rates in MiB/s: metric id -> (position, whether NVLink rather than PCIe).
GPM_RATES = {
    pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC: (PCIE_TX, False),
    pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC: (PCIE_RX, False),
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: (NVLINK_TX, True),
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: (NVLINK_RX, True),
}
_NVDEC = range(pynvml.NVML_GPM_METRIC_NVDEC_0_UTIL, pynvml.NVML_GPM_METRIC_NVDEC_7_UTIL + 1)
# Engines the simulated GPUs do not use: 0.0 with SUCCESS, as an H200 answered for all of them.
_IDLE_ENGINES = frozenset(
    [
        *range(pynvml.NVML_GPM_METRIC_NVJPG_0_UTIL, pynvml.NVML_GPM_METRIC_NVJPG_7_UTIL + 1),
        *range(pynvml.NVML_GPM_METRIC_NVENC_0_UTIL, pynvml.NVML_GPM_METRIC_NVENC_3_UTIL + 1),
    ]
)
_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
# What nvmlDevice{En,De}coderUtilization say the sampling period is: 100 ms on an H200.
_CODEC_PERIOD_US = 100_000


def _nvlinks(gpu: SimGpu) -> int:
    """The GPU's NVLink count; NOT_SUPPORTED without links or in MIG mode (DCGM 2.0.15 notes)."""
    if not gpu.model.nvlinks or gpu.mig_enabled:
        raise fail(_NOT_SUPPORTED)
    return gpu.model.nvlinks


def _nvlink_kib(position: int) -> Callable[[SimGpu, int], int]:
    """NVLink data counter in KiB since the GPU appeared, of one link or of all (scopeId)."""

    def read(gpu: SimGpu, scope: int) -> int:
        links = _nvlinks(gpu)
        kib = gpu.totals[position] * gpu.model.nvlink_bytes_per_s / 1024
        if scope == ALL_LINKS:  # the sum of all links (nvml.h)
            return int(kib)
        if not 0 <= scope < links:
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(kib / links)  # traffic spread evenly over the links: an assumption

    return read


_UINT = (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal")
_ULL = (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal")
# The fields nvmlDeviceGetFieldValues answers: id -> ((value type, union member), reader of
# (GPU, scopeId)). A reader raising an NVMLError fails its entry only. Types as an H200 with
# driver 580.159.04 answered (benchmarks/results/nvml_calls-h200.json): 82 and 94 unsigned int,
# 74 and 75 unsigned long long in ns. 91, 138 and 139 answered NOT_SUPPORTED there (no NVLink
# visible): their types are assumed, unsigned int for the count and unsigned long long for
# the KiB counters, which DCGM reads as ``value.ullVal`` (ReadAndCacheNvLinkBandwidth).
_FIELDS: dict[int, tuple[tuple[int, str], Callable[[SimGpu, int], int]]] = {
    pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: (_UINT, lambda gpu, _: gpu.recovery_action),
    pynvml.NVML_FI_DEV_MEMORY_TEMP: (_UINT, lambda gpu, _: gpu.memory_temperature_c()),
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: (_UINT, lambda gpu, _: gpu.pcie_replays),
    pynvml.NVML_FI_DEV_PERF_POLICY_POWER: (
        _ULL,
        lambda gpu, _: int(gpu.power_violation_s * 1e9),
    ),
    pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL: (
        _ULL,
        lambda gpu, _: int(gpu.thermal_violation_s * 1e9),
    ),
    # ECC on, none pending: datacenter GPUs ship so, and the simulator has no ECC mode switch.
    pynvml.NVML_FI_DEV_ECC_CURRENT: (_ULL, lambda _gpu, _: 1),
    pynvml.NVML_FI_DEV_ECC_PENDING: (_ULL, lambda _gpu, _: 1),
    pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT: (_UINT, lambda gpu, _: _nvlinks(gpu)),
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: (_ULL, _nvlink_kib(NVLINK_TX)),
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: (_ULL, _nvlink_kib(NVLINK_RX)),
}

# latencyUsec of each field's entry as the H200 answered (benchmarks/results/fidelity-h200.json,
# "observed"); the others answered 0 there.
_LATENCY_US = {
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: 293,
    pynvml.NVML_FI_DEV_PERF_POLICY_POWER: 2,
    pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL: 944,
    pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: 9,
    pynvml.NVML_FI_DEV_ECC_CURRENT: 1,
    pynvml.NVML_FI_DEV_ECC_PENDING: 350,
}
# GPM metric names and units (c_metricInfo_t) as the H200 filled them in: short, long, unit.
# Metrics not listed were not read there and keep NULL pointers.
_GPM_INFO = {
    metric: tuple(text.encode() for text in info)
    for metric, info in {
        pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: ("gract", "GRAPHICS_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_SM_UTIL: ("smutil", "SM_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: ("smocc", "SM_OCCUPANCY", "%"),
        pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: ("mmaact", "ANY_TENSOR_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: ("dram", "DRAM_BW_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_FP64_UTIL: ("fp64", "FP64_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_FP32_UTIL: ("fp32", "FP32_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_FP16_UTIL: ("fp16", "FP16_UTIL", "%"),
        pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC: ("pcitx", "PCIE_TX_PER_SEC", "MiB/s"),
        pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC: ("pcirx", "PCIE_RX_PER_SEC", "MiB/s"),
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: (
            "nvlrx",
            "NVLINK_TOTAL_RX_PER_SEC",
            "MiB/s",
        ),
        pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: (
            "nvltx",
            "NVLINK_TOTAL_TX_PER_SEC",
            "MiB/s",
        ),
    }.items()
}


@dataclass(eq=False)
class GpmSample:
    """What an ``nvmlGpmSample_t`` holds: when, the activity counters, and of what.

    ``whole_gpu`` is false for GPU-instance and MIG-device samples; ``decoders`` is the
    NVDEC count of what was sampled; the bandwidths turn PCIe/NVLink levels into bytes/s.
    """

    struct: Any  # kept here so the handle's address stays valid until freed
    time: float | None = None
    totals: Vector | None = None
    whole_gpu: bool = True
    decoders: int = 0
    pcie_bytes_per_s: float = 0.0
    nvlink_bytes_per_s: float = 0.0

    def take(self, gpu: SimGpu, totals: Vector, decoders: int, whole_gpu: bool) -> None:
        """Record ``totals`` of something on ``gpu``, at the GPU's time."""
        self.time, self.totals = gpu.time, totals
        self.whole_gpu, self.decoders = whole_gpu, decoders
        self.pcie_bytes_per_s = gpu.model.pcie_bytes_per_s
        self.nvlink_bytes_per_s = gpu.model.nvlink_bytes_per_s


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
            # NVML_CLOCK_COUNT, COUNT + 1 and 99 all answered NOT_SUPPORTED on an H200 (driver
            # 580.159.04: benchmarks/results/fidelity-h200.json), not INVALID_ARGUMENT.
            raise fail(_NOT_SUPPORTED)

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
            # The memory controller's busy time, modelled as the DRAM level. An H200 said 23 %
            # where GPM DRAM_BW_UTIL said 14.7 %: close, not equal, on hardware.
            utilization.memory = round(100 * levels[DRAM])
            return utilization

    def _codec_gpu(self, handle: Any) -> SimGpu:
        """The GPU behind an encoder/decoder query; NotSupported for anything MIG."""
        gpu = self._gpu(handle)
        if gpu.mig_enabled:  # nvml.h: not supported on MIG-enabled GPUs
            raise fail(_NOT_SUPPORTED)
        self._fleet.advance(gpu)
        return gpu

    def nvmlDeviceGetEncoderUtilization(self, handle: Any) -> list[int]:
        """``[utilization %, samplingPeriodUs]``: 0, the simulated GPUs have no NVENC.

        An H200 (no NVENC either) answers ``[0, 100000]``, not NotSupported.
        """
        with self._call(handle):
            self._codec_gpu(handle)
            return [0, _CODEC_PERIOD_US]

    def nvmlDeviceGetDecoderUtilization(self, handle: Any) -> list[int]:
        """``[utilization %, samplingPeriodUs]``: the decode level of the GPU's workload."""
        with self._call(handle):
            gpu = self._codec_gpu(handle)
            return [round(100 * gpu.levels()[DECODE]), _CODEC_PERIOD_US]

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        """PCIe TX or RX throughput in KB/s (of 1024 bytes), the whole GPU's, MIG mode or not.

        An H200 answered 3899213 KB/s TX where GPM said 3814 MiB/s: KB are KiB. The driver
        measures over a 20 ms window (each call took 20.9 ms there); the fake answers the
        instantaneous level at once, without sleeping, as it holds the fleet lock.
        """
        with self._call(device):
            gpu = self._gpu(device)
            positions = {
                pynvml.NVML_PCIE_UTIL_TX_BYTES: PCIE_TX,
                pynvml.NVML_PCIE_UTIL_RX_BYTES: PCIE_RX,
            }
            if counter not in positions:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            self._fleet.advance(gpu)
            return int(gpu.levels()[positions[counter]] * gpu.model.pcie_bytes_per_s / 1024)

    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int:
        """PCIe replays since the driver loaded; 0 unless the fleet injected some."""
        with self._call(handle):
            return self._gpu(handle).pcie_replays & 0xFFFFFFFF  # a C unsigned int

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        """Bitmask of ``nvmlClocksEventReason*``: GPU idle, SW power cap, SW thermal slowdown.

        An H200 said 0x1 idle and 0x4 at 692 W of its 700 W limit.
        """
        with self._call(handle):
            gpu = self._gpu(handle)
            self._fleet.advance(gpu)
            return gpu.clocks_event_reasons()

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: Any) -> int:
        """``nvmlClocksEventReasonAll`` (0x1ff), as an H200 answers."""
        with self._call(handle):
            self._gpu(handle)
            return int(pynvml.nvmlClocksEventReasonAll)

    def nvmlDeviceGetViolationStatus(self, device: Any, perfPolicyType: int) -> Any:
        """``c_nvmlViolationTime_t``: now in us since 1970, and ns spent held back so far.

        POWER counts the time power-capped, THERMAL the time thermally slowed down (the
        overheat fault), TOTAL_BASE_CLOCKS the time below base clocks (idle or overheated);
        the other policies below NVML_PERF_POLICY_COUNT stay at 0.
        """
        with self._call(device):
            gpu = self._gpu(device)
            valid = isinstance(perfPolicyType, int) and not isinstance(perfPolicyType, bool)
            if not valid or not 0 <= perfPolicyType < pynvml.NVML_PERF_POLICY_COUNT:
                raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            self._fleet.advance(gpu)
            seconds = {
                pynvml.NVML_PERF_POLICY_POWER: gpu.power_violation_s,
                pynvml.NVML_PERF_POLICY_THERMAL: gpu.thermal_violation_s,
                pynvml.NVML_PERF_POLICY_TOTAL_BASE_CLOCKS: gpu.below_base_clocks_s,
            }.get(perfPolicyType, 0.0)
            status = pynvml.c_nvmlViolationTime_t()
            status.referenceTime = int(time.time() * 1_000_000)  # as the H200 answered
            status.violationTime = int(seconds * 1e9)
            return status

    # --- field values: one status per entry ---

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Any) -> Any:
        """A ``c_nvmlFieldValue_t`` array, one per item of ``fieldIds``, each with its status.

        Items are field ids or ``(fieldId, scopeId)`` pairs, as for pynvml. Answered: the
        recovery action, ECC mode (current and pending: on), memory temperature, PCIe
        replays, the power and thermal violation counters (ns), the NVLink count and the
        NVLink data TX/RX counters (KiB; scopeId a
        link index, or 0xFFFFFFFF for all links; another scopeId fails its entry with
        NVML_ERROR_INVALID_ARGUMENT). The NVLink fields answer NVML_ERROR_NOT_SUPPORTED on a
        GPU without links and in MIG mode. Every other entry fails on its own while the call
        succeeds, as on an H100 with driver 580.159.04: ids NVML does not know (0,
        NVML_FI_MAX and above) with NVML_ERROR_INVALID_ARGUMENT and no timestamp, the fields
        the simulator does not model with NVML_ERROR_NOT_SUPPORTED. The call fails as a whole
        for an uninitialised library, an empty ``fieldIds``, a bad handle or a lost GPU.
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
            self._fleet.advance(gpu)
            stamp = self._fleet.timestamp_us(gpu.time)  # when the counters were last integrated
            for value in values:
                if not 0 < value.fieldId < pynvml.NVML_FI_MAX:
                    value.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
                    continue
                value.timestamp = stamp  # the driver stamps unsupported entries too
                field = _FIELDS.get(value.fieldId)
                # nvml.h documents field values for "the device handle of the GPU" and says
                # nothing of MIG device handles (and the measured GPU was not in MIG mode);
                # these fields belong to the whole GPU, so a MIG device handle answers
                # NOT_SUPPORTED per entry: an assumption, not a measurement.
                if field is None or mig is not None:
                    value.nvmlReturn = _NOT_SUPPORTED
                    continue
                (value_type, member), read = field
                value.valueType = value_type  # typed even when the GPU lacks it, as measured
                try:
                    answer = read(gpu, value.scopeId)
                except pynvml.NVMLError as error:
                    value.nvmlReturn = error.value
                    continue
                setattr(value.value, member, answer)
                value.latencyUsec = _LATENCY_US.get(value.fieldId, 0)
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
            if mig is None:
                sample.take(gpu, gpu.totals, gpu.model.decoders, whole_gpu=True)
            else:  # a MIG device shares its GPU instance's decoders
                decoders = mig.gpu_instance.profile.decoders
                sample.take(gpu, mig.workload.totals, decoders, whole_gpu=False)
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
            sample.take(gpu, gi.totals, gi.profile.decoders, whole_gpu=False)
            return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        """Averages between ``sample1`` and ``sample2``, per-metric return codes.

        Ratios in percent (GR, SM, occupancy, tensor, DRAM, FP64/32/16, NVDEC per engine),
        PCIe and NVLink in MiB/s. NVDEC engines past the sampled entity's decoder count, and
        NVJPG and NVENC, answer 0.0 with SUCCESS, as on an H200. PCIe and NVLink belong to the
        GPU: GPU-instance and MIG-device samples answer NOT_SUPPORTED for them (an
        assumption); NVLink reads 0.0 in MIG mode. Other metrics answer NOT_SUPPORTED.
        """
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
            # Samples out of order or of different entities give garbage, as on hardware.
            elapsed = (second.time or 0.0) - (first.time or 0.0)
            rates = tuple(
                (b - a) / elapsed if elapsed else 0.0
                for a, b in zip(first.totals, second.totals, strict=True)
            )
            for position in range(metricsGet.numMetrics):
                metric = metricsGet.metrics[position]
                metric.nvmlReturn, metric.value = _gpm_metric(metric.metricId, rates, second)
                names = _GPM_INFO.get(metric.metricId)
                if names is not None:
                    info = metric.metricInfo
                    info.shortName, info.longName, info.unit = names
        return metricsGet


def _gpm_metric(metric_id: int, rates: Vector, sample: GpmSample) -> tuple[int, float]:
    """(nvmlReturn, value) of one GPM metric, from the levels' averages over the window."""
    ratio = _gpm_ratio(metric_id, rates, sample.decoders)
    if ratio is not None:
        return pynvml.NVML_SUCCESS, min(100.0, max(0.0, 100 * ratio))
    if metric_id in GPM_RATES:
        if not sample.whole_gpu:
            return _NOT_SUPPORTED, 0.0
        where, nvlink = GPM_RATES[metric_id]
        bandwidth = sample.nvlink_bytes_per_s if nvlink else sample.pcie_bytes_per_s
        return pynvml.NVML_SUCCESS, max(0.0, rates[where] * bandwidth / MIB)
    known = 0 < metric_id < pynvml.NVML_GPM_METRIC_MAX
    return (_NOT_SUPPORTED if known else pynvml.NVML_ERROR_INVALID_ARGUMENT), 0.0


def _gpm_ratio(metric_id: int, rates: Vector, decoders: int) -> float | None:
    """The 0-1 average behind a GPM utilization metric; None for the other metrics."""
    if metric_id in GPM_RATIOS:
        return rates[GPM_RATIOS[metric_id]]
    if metric_id in _NVDEC:
        return rates[DECODE] if metric_id - _NVDEC.start < decoders else 0.0
    if metric_id in _IDLE_ENGINES:
        return 0.0
    return None
