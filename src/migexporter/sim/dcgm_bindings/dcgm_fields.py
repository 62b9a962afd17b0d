"""Simulator stand-in for DCGM 4.6's ``dcgm_fields``: entity groups, field types and ids.

Only the field ids the simulator produces are defined, under their 4.6 names; their 4.5 and
3.x names still resolve with a DeprecationWarning, as in DCGM 4.6.
"""

from __future__ import annotations

import sys
import types
import warnings
from ctypes import POINTER, c_char, c_int, c_short, c_ubyte, c_uint, c_uint32, pointer
from typing import Any

import dcgm_structs

# Field types: one ASCII letter; c_dcgmFieldValue_v*.fieldType holds its code (ord).
DCGM_FT_BINARY = "b"
DCGM_FT_DOUBLE = "d"
DCGM_FT_INT64 = "i"
DCGM_FT_STRING = "s"
DCGM_FT_TIMESTAMP = "t"

DCGM_FS_GLOBAL = 0
DCGM_FS_ENTITY = 1

DCGM_CLOCKS_EVENT_REASON_GPU_IDLE = 0x1
DCGM_CLOCKS_EVENT_REASON_CLOCKS_SETTING = 0x2
DCGM_CLOCKS_EVENT_REASON_SW_POWER_CAP = 0x4
DCGM_CLOCKS_EVENT_REASON_HW_SLOWDOWN = 0x8
DCGM_CLOCKS_EVENT_REASON_SYNC_BOOST = 0x10
DCGM_CLOCKS_EVENT_REASON_SW_THERMAL = 0x20
DCGM_CLOCKS_EVENT_REASON_HW_THERMAL = 0x40
DCGM_CLOCKS_EVENT_REASON_HW_POWER_BRAKE = 0x80
DCGM_CLOCKS_EVENT_REASON_DISPLAY_CLOCKS = 0x100

# Entity groups.
DCGM_FE_NONE = 0
DCGM_FE_GPU = 1
DCGM_FE_VGPU = 2
DCGM_FE_SWITCH = 3
DCGM_FE_GPU_I = 4
DCGM_FE_GPU_CI = 5
DCGM_FE_LINK = 6
DCGM_FE_CPU = 7
DCGM_FE_CPU_CORE = 8
DCGM_FE_CONNECTX = 9

c_dcgm_field_eid_t = c_uint32

DCGM_FI_DEV_GPU_NAME = 50
DCGM_FI_DEV_NVML_INDEX = 52
DCGM_FI_DEV_GPU_UUID = 54
DCGM_FI_DEV_PCI_BUS_ID = 57
DCGM_FI_DEV_MIG_MODE = 67
DCGM_FI_DEV_MIG_MAX_SLICES = 69
DCGM_FI_DEV_SM_CLOCK = 100
DCGM_FI_DEV_MEM_CLOCK = 101
DCGM_FI_DEV_CLOCKS_EVENT_REASONS = 112
DCGM_FI_DEV_MEMORY_TEMP_CELSIUS = 140
DCGM_FI_DEV_GPU_TEMP_CELSIUS = 150
DCGM_FI_DEV_BOARD_POWER_WATTS = 155
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 156
DCGM_FI_DEV_BOARD_POWER_LIMIT_ENFORCED_WATTS = 164
DCGM_FI_DEV_PCIE_TX_THROUGHPUT = 200  # deprecated in 4.6 for DCGM_FI_PROF_PCIE_TX_BYTES
DCGM_FI_DEV_PCIE_RX_THROUGHPUT = 201  # deprecated in 4.6 for DCGM_FI_PROF_PCIE_RX_BYTES
DCGM_FI_DEV_PCIE_REPLAY_TOTAL = 202
DCGM_FI_DEV_GPU_UTIL_RATIO = 203
DCGM_FI_DEV_MEM_COPY_UTIL = 204
DCGM_FI_DEV_ENC_UTIL = 206
DCGM_FI_DEV_DEC_UTIL = 207
DCGM_FI_DEV_XID_ERROR = 230
DCGM_FI_DEV_POWER_VIOLATION = 240
DCGM_FI_DEV_THERMAL_VIOLATION = 241
DCGM_FI_DEV_FB_TOTAL = 250
DCGM_FI_DEV_FB_FREE = 251
DCGM_FI_DEV_FB_USED = 252
DCGM_FI_DEV_FB_RESERVED = 253
DCGM_FI_DEV_FB_USED_RATIO = 254
DCGM_FI_DEV_ECC_SBE_VOL_TOTAL = 310
DCGM_FI_DEV_ECC_DBE_VOL_TOTAL = 311
DCGM_FI_DEV_ECC_SBE_AGG_TOTAL = 312
DCGM_FI_DEV_ECC_DBE_AGG_TOTAL = 313
DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL = 393
DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL = 394
DCGM_FI_DEV_ROW_REMAP_FAILED = 395
DCGM_FI_DEV_ROW_REMAP_PENDING = 396
DCGM_FI_DEV_NVLINK_THROUGHPUT_TOTAL = 449
DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO = 1001
DCGM_FI_PROF_SM_UTIL_RATIO = 1002
DCGM_FI_PROF_SM_OCCUPANCY_RATIO = 1003
DCGM_FI_PROF_TENSOR_UTIL_RATIO = 1004
DCGM_FI_PROF_DRAM_UTIL_RATIO = 1005
DCGM_FI_PROF_FP64_UTIL_RATIO = 1006
DCGM_FI_PROF_FP32_UTIL_RATIO = 1007
DCGM_FI_PROF_FP16_UTIL_RATIO = 1008
DCGM_FI_PROF_PCIE_TX_BYTES = 1009
DCGM_FI_PROF_PCIE_RX_BYTES = 1010
DCGM_FI_PROF_NVLINK_TX_BYTES = 1011
DCGM_FI_PROF_NVLINK_RX_BYTES = 1012
DCGM_FI_DEV_GPU_RECOVERY_ACTION = 1523

DCGM_DEPRECATED = 1  # 0 makes the pre-4.6 names raise AttributeError
# Pre-4.6 names of the fields above (facts/dcgm-bindings.md §3.1).
_DEPRECATED_ALIASES = {
    "DCGM_FI_DEV_NAME": "DCGM_FI_DEV_GPU_NAME",
    "DCGM_FI_DEV_UUID": "DCGM_FI_DEV_GPU_UUID",
    "DCGM_FI_DEV_GPU_TEMP": "DCGM_FI_DEV_GPU_TEMP_CELSIUS",
    "DCGM_FI_DEV_MEMORY_TEMP": "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "DCGM_FI_DEV_PCIE_REPLAY_TOTAL",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "DCGM_FI_DEV_NVLINK_THROUGHPUT_TOTAL",
    "DCGM_FI_DEV_POWER_USAGE": "DCGM_FI_DEV_BOARD_POWER_WATTS",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "DCGM_FI_DEV_BOARD_POWER_LIMIT_ENFORCED_WATTS",
    "DCGM_FI_DEV_GPU_UTIL": "DCGM_FI_DEV_GPU_UTIL_RATIO",
    "DCGM_FI_DEV_XID_ERRORS": "DCGM_FI_DEV_XID_ERROR",
    "DCGM_FI_DEV_FB_USED_PERCENT": "DCGM_FI_DEV_FB_USED_RATIO",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "DCGM_FI_DEV_ROW_REMAP_FAILED",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO",
    "DCGM_FI_PROF_SM_ACTIVE": "DCGM_FI_PROF_SM_UTIL_RATIO",
    "DCGM_FI_PROF_SM_OCCUPANCY": "DCGM_FI_PROF_SM_OCCUPANCY_RATIO",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "DCGM_FI_PROF_TENSOR_UTIL_RATIO",
    "DCGM_FI_PROF_DRAM_ACTIVE": "DCGM_FI_PROF_DRAM_UTIL_RATIO",
    "DCGM_FI_PROF_PIPE_FP64_ACTIVE": "DCGM_FI_PROF_FP64_UTIL_RATIO",
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE": "DCGM_FI_PROF_FP32_UTIL_RATIO",
    "DCGM_FI_PROF_PIPE_FP16_ACTIVE": "DCGM_FI_PROF_FP16_UTIL_RATIO",
    # In the alias table of DCGM's own dcgm_fields.py, not in the facts' table.
    "DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION": "DCGM_FI_DEV_GPU_RECOVERY_ACTION",
}


def _install_deprecated_alias_resolver() -> None:
    """Resolve the old names with a DeprecationWarning, as 4.6 does."""

    class _DcgmFieldsModule(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name in _DEPRECATED_ALIASES and DCGM_DEPRECATED:
                new_name = _DEPRECATED_ALIASES[name]
                warnings.warn(
                    f"{name} is deprecated, use {new_name} instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(self, new_name)
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    sys.modules[__name__].__class__ = _DcgmFieldsModule


_install_deprecated_alias_resolver()


class _PrintableStructure(dcgm_structs._DcgmStructure):  # noqa: SLF001 (as the real module)
    """``ClassName(field: value, ...)`` instead of ctypes' default repr."""

    def __str__(self) -> str:
        parts = [f"{name}: {getattr(self, name)}" for name, *_ in self._fields_]
        return f"{type(self).__name__}({', '.join(parts)})"


SHORTNAME_LENGTH = 10
UNIT_LENGTH = 4
TAG_LENGTH = 48


class c_dcgm_field_output_format_t(_PrintableStructure):
    _fields_ = [
        ("shortName", c_char * SHORTNAME_LENGTH),
        ("unit", c_char * UNIT_LENGTH),
        ("width", c_short),
    ]


class c_dcgm_field_meta_t(_PrintableStructure):
    _fields_ = [
        ("fieldId", c_short),
        ("fieldType", c_char),
        ("size", c_ubyte),
        ("tag", c_char * TAG_LENGTH),
        ("scope", c_int),
        ("nvmlFieldId", c_int),
        ("entityLevel", c_uint),
        ("valueFormat", POINTER(c_dcgm_field_output_format_t)),
    ]


_SIZES = {DCGM_FT_DOUBLE: 8, DCGM_FT_INT64: 8, DCGM_FT_STRING: 0}
_FORMAT = c_dcgm_field_output_format_t()  # kept alive: metadata points at it


def DcgmFieldsInit() -> None:
    """Load the field table (a no-op in the simulator, but it needs the library)."""
    dcgm_structs._dcgmGetFunctionPointer("dcgmVersionInfo")  # noqa: SLF001


def DcgmFieldGetById(fieldId: int) -> c_dcgm_field_meta_t | None:
    """Metadata of a field the simulator produces; None for others."""
    DcgmFieldsInit()
    info = dcgm_structs._dcgmGetFunctionPointer("DcgmFieldGetById")(fieldId)  # noqa: SLF001
    if info is None:
        return None
    meta = c_dcgm_field_meta_t()
    meta.fieldId = info.id
    meta.fieldType = info.type
    meta.size = _SIZES.get(info.type, 0)
    meta.tag = info.tag
    meta.scope = DCGM_FS_ENTITY
    meta.entityLevel = info.level
    meta.valueFormat = pointer(_FORMAT)
    return meta


def DcgmFieldGetTagById(fieldId: int) -> str | None:
    """A field's tag, or None."""
    meta = DcgmFieldGetById(fieldId)
    return str(meta.tag) if meta is not None else None
