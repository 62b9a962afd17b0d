"""Simulator stand-in for DCGM's ``dcgmvalue``: the blank sentinels and their tests.

DCGM stores these in place of a value it could not read; numbers at or above BLANK are
never real readings (``dcgmlib/dcgm_structs.h``).
"""

from __future__ import annotations

DCGM_INT8_BLANK = 0x70
DCGM_INT32_BLANK = 0x7FFFFFF0
DCGM_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK = 140737488355328.0  # 2**47: doubles still count 0-15 above it exactly
DCGM_STR_BLANK = "<<<NULL>>>"

DCGM_INT32_NOT_FOUND = DCGM_INT32_BLANK + 1
DCGM_INT64_NOT_FOUND = DCGM_INT64_BLANK + 1
DCGM_FP64_NOT_FOUND = DCGM_FP64_BLANK + 1.0
DCGM_STR_NOT_FOUND = "<<<NOT_FOUND>>>"

DCGM_INT32_NOT_SUPPORTED = DCGM_INT32_BLANK + 2
DCGM_INT64_NOT_SUPPORTED = DCGM_INT64_BLANK + 2
DCGM_FP64_NOT_SUPPORTED = DCGM_FP64_BLANK + 2.0
DCGM_STR_NOT_SUPPORTED = "<<<NOT_SUPPORTED>>>"

DCGM_INT32_NOT_PERMISSIONED = DCGM_INT32_BLANK + 3
DCGM_INT64_NOT_PERMISSIONED = DCGM_INT64_BLANK + 3
DCGM_FP64_NOT_PERMISSIONED = DCGM_FP64_BLANK + 3.0
DCGM_STR_NOT_PERMISSIONED = "<<<NOT_PERM>>>"


def DCGM_INT8_IS_BLANK(val: int) -> bool:
    """Whether an int8 is a sentinel."""
    return val >= DCGM_INT8_BLANK


def DCGM_INT32_IS_BLANK(val: int) -> bool:
    """Whether an int32 is a sentinel."""
    return val >= DCGM_INT32_BLANK


def DCGM_INT64_IS_BLANK(val: int) -> bool:
    """Whether an int64 is a sentinel."""
    return val >= DCGM_INT64_BLANK


def DCGM_FP64_IS_BLANK(val: float) -> bool:
    """Whether a double is a sentinel."""
    return val >= DCGM_FP64_BLANK


def DCGM_STR_IS_BLANK(val: str) -> bool:
    """Whether a string is a sentinel: it starts with ``<<<`` and holds ``>>>``."""
    return val.find("<<<") == 0 and val.find(">>>") >= 0


class DcgmValue:
    """An int, double or string value that knows whether it is blank."""

    def __init__(self, value: float | str | None) -> None:
        self.value = value

    def SetFromInt32(self, i32Value: int) -> None:
        """Store an int32 reading, widening its sentinels to the int64 ones."""
        value = int(i32Value)
        if not DCGM_INT32_IS_BLANK(value):
            self.value = value
            return
        widened = {
            DCGM_INT32_NOT_FOUND: DCGM_INT64_NOT_FOUND,
            DCGM_INT32_NOT_SUPPORTED: DCGM_INT64_NOT_SUPPORTED,
            DCGM_INT32_NOT_PERMISSIONED: DCGM_INT64_NOT_PERMISSIONED,
        }
        self.value = widened.get(value, DCGM_INT64_BLANK)

    def IsBlank(self) -> bool:
        """Whether the stored value is missing or a sentinel."""
        value = self.value
        if value is None:
            return True
        if isinstance(value, int):
            return DCGM_INT64_IS_BLANK(value)
        if isinstance(value, float):
            return DCGM_FP64_IS_BLANK(value)
        return DCGM_STR_IS_BLANK(value)

    def __str__(self) -> str:
        return str(self.value)
