"""DCGM fields as the simulated host engine knows them: type, entity level, and NVML reader."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._model import MIB
from migexporter.sim._nvml_telemetry import GPM_RATES, GPM_RATIOS

if TYPE_CHECKING:
    from collections.abc import Callable

    from migexporter.sim.nvml import FakeNvml

# DCGM's numbers, as libdcgm (not the bindings) knows them: dcgm_fields.h, dcgm_structs.h.
FE_GPU, FE_GPU_I, FE_GPU_CI = 1, 4, 5
ST_OK = 0
ST_BADPARAM = -1
ST_NOT_CONFIGURED = -5
ST_NOT_SUPPORTED = -6
ST_INIT_ERROR = -7
ST_NVML_ERROR = -8
ST_UNINITIALIZED = -10
ST_NO_DATA = -14
ST_NOT_WATCHED = -16
ST_GPU_IS_LOST = -18
ST_FUNCTION_NOT_FOUND = -20
ST_CONNECTION_NOT_VALID = -21
ST_MAX_LIMIT = -24
ST_DUPLICATE_KEY = -26
ST_FIELD_UNSUPPORTED_BY_API = -32
ST_PROFILING_MULTI_PASS = -38
MAX_INSTANCES_PER_GPU = 8  # DCGM_MAX_INSTANCES_PER_GPU: the id stride when NVML says 0
XID = 230
NVLINK_THROUGHPUT_TOTAL = 449

# Sentinels stored instead of a value (dcgmvalue): BLANK + 0..3.
BLANK, NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED = range(4)
INT64_BLANK = 0x7FFFFFFFFFFFFFF0
FP64_BLANK = 140737488355328.0
_STR_SENTINELS = ("<<<NULL>>>", "<<<NOT_FOUND>>>", "<<<NOT_SUPPORTED>>>", "<<<NOT_PERM>>>")
# NvmlErrorToInt64Value (DcgmCMUtils.cpp): what an NVML failure is stored as.
NVML_SENTINELS = {
    pynvml.NVML_ERROR_NOT_FOUND: NOT_FOUND,
    pynvml.NVML_ERROR_NOT_SUPPORTED: NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION: NOT_PERMISSIONED,
}

Value = int | float | str
Entity = tuple[int, int]  # (entity group, entity id)
Key = tuple[int, int, int]  # (entity group, entity id, field id)


def sentinel(kind: str, which: int = BLANK) -> Value:
    """The blank (or not-found, not-supported, not-permissioned) value of a field type."""
    if kind == "d":
        return FP64_BLANK + which
    if kind == "s":
        return _STR_SENTINELS[which]
    return INT64_BLANK + which


@dataclass(frozen=True)
class FieldInfo:
    """What the engine knows about a field: its tag, type (``d``, ``i``, ``s``) and level."""

    id: int
    tag: str
    type: str
    level: int  # FE_GPU: a GI or CI reads its GPU's; FE_GPU_I: a CI reads its GI's


def _fields(*rows: tuple[int, str, str, int]) -> dict[int, FieldInfo]:
    return {row[0]: FieldInfo(*row) for row in rows}


# Types and entity levels from dcgm_fields.cpp (facts: dcgm-fields.json). Tags unverified,
# except those of 112, 140, 200-202, 206, 207, 240, 241 and 449 (DCGM 4.6's dcgm_fields.cpp).
FIELDS = _fields(
    (50, "name", "s", FE_GPU_CI),
    (52, "nvml_index", "i", FE_GPU),
    (54, "uuid", "s", FE_GPU_CI),
    (55, "minor_number", "i", FE_GPU),
    (57, "pci_busid", "s", FE_GPU),
    (67, "mig_mode", "i", FE_GPU),
    (69, "mig_max_slices", "i", FE_GPU),
    (100, "sm_clock", "i", FE_GPU),
    (101, "memory_clock", "i", FE_GPU),
    (112, "current_clocks_event_reasons", "i", FE_GPU),
    (140, "memory_temp", "i", FE_GPU),
    (150, "gpu_temp", "i", FE_GPU),
    (155, "power_usage", "d", FE_GPU),
    (156, "total_energy_consumption", "i", FE_GPU),
    (164, "enforced_power_limit", "d", FE_GPU),
    (200, "pcie_tx_throughput", "i", FE_GPU),
    (201, "pcie_rx_throughput", "i", FE_GPU),
    (202, "pcie_replay_counter", "i", FE_GPU),
    (203, "gpu_utilization", "i", FE_GPU),
    (204, "mem_copy_utilization", "i", FE_GPU),
    (206, "enc_utilization", "i", FE_GPU),
    (207, "dec_utilization", "i", FE_GPU),
    (XID, "xid_errors", "i", FE_GPU_CI),
    (240, "power_violation", "i", FE_GPU),
    (241, "thermal_violation", "i", FE_GPU),
    (250, "fb_total", "i", FE_GPU_CI),
    (251, "fb_free", "i", FE_GPU_CI),
    (252, "fb_used", "i", FE_GPU_CI),
    (253, "fb_resv", "i", FE_GPU_CI),
    (254, "fb_USDP", "d", FE_GPU_CI),
    (310, "ecc_sbe_volatile_total", "i", FE_GPU),
    (311, "ecc_dbe_volatile_total", "i", FE_GPU),
    (312, "ecc_sbe_aggregate_total", "i", FE_GPU),
    (313, "ecc_dbe_aggregate_total", "i", FE_GPU),
    (393, "uncorrectable_remapped_rows", "i", FE_GPU),
    (394, "correctable_remapped_rows", "i", FE_GPU),
    (395, "row_remap_failure", "i", FE_GPU),
    (396, "row_remap_pending", "i", FE_GPU),
    (NVLINK_THROUGHPUT_TOTAL, "nvlink_throughput_total", "i", FE_GPU),
    (1001, "gr_engine_active", "d", FE_GPU_CI),
    (1002, "sm_active", "d", FE_GPU_CI),
    (1003, "sm_occupancy", "d", FE_GPU_CI),
    (1004, "tensor_active", "d", FE_GPU_CI),
    (1005, "dram_active", "d", FE_GPU_I),
    (1006, "fp64_active", "d", FE_GPU_CI),
    (1007, "fp32_active", "d", FE_GPU_CI),
    (1008, "fp16_active", "d", FE_GPU_CI),
    (1009, "pcie_tx_bytes", "i", FE_GPU),
    (1010, "pcie_rx_bytes", "i", FE_GPU),
    (1011, "nvlink_tx_bytes", "i", FE_GPU),
    (1012, "nvlink_rx_bytes", "i", FE_GPU),
    (1523, "gpu_recovery_action", "i", FE_GPU),
)


def field_info(field_id: int) -> FieldInfo:
    """The field's info; a field the simulator does not produce reads as an int64 GPU field."""
    return FIELDS.get(field_id) or FieldInfo(field_id, "", "i", FE_GPU)


def is_profiling(field_id: int) -> bool:
    """DCGM_FI_PROF_*: served by the profiling module (or GPM) and its metric groups."""
    return 1001 <= field_id <= 1099


# Profiling field -> GPM metric (DcgmGpmManager) and -> position in the fleet's activity vectors.
GPM_METRICS = {
    1001: pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL,
    1002: pynvml.NVML_GPM_METRIC_SM_UTIL,
    1003: pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    1004: pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    1005: pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
    1006: pynvml.NVML_GPM_METRIC_FP64_UTIL,
    1007: pynvml.NVML_GPM_METRIC_FP32_UTIL,
    1008: pynvml.NVML_GPM_METRIC_FP16_UTIL,
    1009: pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC,
    1010: pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC,
    1011: pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC,
    1012: pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC,
}
# The profiling module (pre-Hopper) reads the same integrals as GPM: a field's position in
# the activity vectors is that of its GPM metric. Ratios, and PCIe/NVLink rates in bytes/s as
# (position, whether NVLink rather than PCIe bandwidth).
ACTIVITIES = {f: GPM_RATIOS[m] for f, m in GPM_METRICS.items() if m in GPM_RATIOS}
TRAFFIC = {f: GPM_RATES[m] for f, m in GPM_METRICS.items() if m in GPM_RATES}


def _max_slices(nv: FakeNvml, handle: Any) -> int:
    """DCGM_FI_DEV_MIG_MAX_SLICES: the slices of the GPU's largest GPU instance profile."""
    slices = [0]
    for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        with contextlib.suppress(pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            slices.append(nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, index).sliceCount)
    return max(slices)


def failed(error: pynvml.NVMLError, kind: str) -> tuple[int, Value]:
    """An NVML failure as DCGM caches it: a lost GPU is a status, the rest are sentinels."""
    if error.value == pynvml.NVML_ERROR_GPU_IS_LOST:
        return ST_GPU_IS_LOST, sentinel(kind)
    return ST_OK, sentinel(kind, NVML_SENTINELS.get(error.value, BLANK))


# NvmlReturnToDcgmReturn (DcgmUtilities.h), for the NVML errors the simulator raises.
_DCGM_STATUS = {
    pynvml.NVML_ERROR_NOT_SUPPORTED: ST_NOT_SUPPORTED,
    pynvml.NVML_ERROR_GPU_IS_LOST: ST_GPU_IS_LOST,
    pynvml.NVML_ERROR_INVALID_ARGUMENT: ST_BADPARAM,
    pynvml.NVML_ERROR_NOT_FOUND: ST_NO_DATA,
}


def dcgm_status(nvml_return: int) -> int:
    """The DCGM status of an NVML return code."""
    return _DCGM_STATUS.get(nvml_return, ST_NVML_ERROR)


def read_nvml(read: Callable[[], Value], kind: str) -> tuple[int, Value]:
    try:
        value = read()
    except pynvml.NVMLError as error:
        return failed(error, kind)
    if kind == "d":
        return ST_OK, float(value)
    return ST_OK, value if kind == "s" else int(value)


def framebuffer(nv: FakeNvml, handle: Any, field_id: int) -> Value:
    memory = nv.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    if field_id == 254:
        usable = memory.total - memory.reserved
        return memory.used / usable if usable else 0.0
    values = {250: memory.total, 251: memory.free, 252: memory.used, 253: memory.reserved}
    return int(values[field_id]) // MIB


def _ecc(error_type: int, counter: int) -> Callable[[FakeNvml, Any], Value]:
    return lambda nv, h: nv.nvmlDeviceGetTotalEccErrors(h, error_type, counter)


def _remapped(position: int) -> Callable[[FakeNvml, Any], Value]:
    # NVML answers corrected, uncorrected, pending and failure, in that order.
    return lambda nv, h: nv.nvmlDeviceGetRemappedRows(h)[position]


def _field_value(field_id: int) -> Callable[[FakeNvml, Any], Value]:
    """A field DCGM reads through nvmlDeviceGetFieldValues (its nvmlFieldId in dcgm_fields.cpp).

    A failed entry is cached as its NVML error's sentinel (BufferOrCacheLatestGpuValues).
    """

    def read(nv: FakeNvml, handle: Any) -> Value:
        value = nv.nvmlDeviceGetFieldValues(handle, [field_id])[0]
        if value.nvmlReturn != pynvml.NVML_SUCCESS:
            raise pynvml.NVMLError(value.nvmlReturn)
        if value.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
            return int(value.value.ullVal)
        return int(value.value.uiVal)

    return read


def _memory_temperature(nv: FakeNvml, handle: Any) -> Value:
    """DCGM_FI_DEV_MEMORY_TEMP_CELSIUS as DcgmCacheManager reads it: NVML field 82's uiVal.

    DCGM checks the call's return only, ignores the value type (nvbugs/4300930), and
    stores blank for anything above 200 C.
    """
    value = nv.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
    celsius = int(value.value.uiVal)
    return celsius if celsius <= 200 else sentinel("i")


def _deprecated_pcie(_nv: FakeNvml, _handle: Any) -> Value:
    """DCGM_FI_DEV_PCIE_TX/RX_THROUGHPUT: DCGM 4.6 stores NOT_SUPPORTED without asking NVML.

    Deprecated in favour of DCGM_FI_PROF_PCIE_TX_BYTES and _RX_BYTES (1009, 1010).
    """
    return sentinel("i", NOT_SUPPORTED)


_CORRECTED, _UNCORRECTED = 0, 1
GPU_READERS: dict[int, Callable[[FakeNvml, Any], Value]] = {
    50: lambda nv, h: nv.nvmlDeviceGetName(h),
    52: lambda nv, h: nv.nvmlDeviceGetIndex(h),
    54: lambda nv, h: nv.nvmlDeviceGetUUID(h),
    55: lambda nv, h: nv.nvmlDeviceGetMinorNumber(h),
    57: lambda nv, h: nv.nvmlDeviceGetPciInfo(h).busId,
    67: lambda nv, h: nv.nvmlDeviceGetMigMode(h)[0],
    69: _max_slices,
    100: lambda nv, h: nv.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
    101: lambda nv, h: nv.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
    112: lambda nv, h: nv.nvmlDeviceGetCurrentClocksEventReasons(h),
    140: _memory_temperature,
    150: lambda nv, h: nv.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
    155: lambda nv, h: nv.nvmlDeviceGetPowerUsage(h) / 1000,
    156: lambda nv, h: nv.nvmlDeviceGetTotalEnergyConsumption(h),
    164: lambda nv, h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
    200: _deprecated_pcie,
    201: _deprecated_pcie,
    202: lambda nv, h: nv.nvmlDeviceGetPcieReplayCounter(h),
    203: lambda nv, h: nv.nvmlDeviceGetUtilizationRates(h).gpu,
    204: lambda nv, h: nv.nvmlDeviceGetUtilizationRates(h).memory,
    206: lambda nv, h: nv.nvmlDeviceGetEncoderUtilization(h)[0],
    207: lambda nv, h: nv.nvmlDeviceGetDecoderUtilization(h)[0],
    # Mapped to NVML_FI_DEV_PERF_POLICY_POWER / _THERMAL in dcgm_fields.cpp: the same ns
    # counters nvmlDeviceGetViolationStatus reports.
    240: _field_value(pynvml.NVML_FI_DEV_PERF_POLICY_POWER),
    241: _field_value(pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL),
    310: _ecc(_CORRECTED, pynvml.NVML_VOLATILE_ECC),
    311: _ecc(_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
    312: _ecc(_CORRECTED, pynvml.NVML_AGGREGATE_ECC),
    313: _ecc(_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC),
    393: _remapped(1),
    394: _remapped(0),
    395: _remapped(3),
    396: _remapped(2),
    # DCGM_FI_DEV_GPU_RECOVERY_ACTION: NVML's field, an nvmlDeviceGpuRecoveryAction_t.
    1523: _field_value(pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION),
}
