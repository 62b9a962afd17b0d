"""Simulator stand-in for DCGM 4.6's ``dcgm_structs``: return codes, errors and ctypes structs.

Names, values, ``_fields_`` and C types follow NVIDIA's ``testing/python3/dcgm_structs.py``.
"Loading libdcgm.so.4" finds the host engine installed with
``migexporter.sim.dcgm_engine.install`` instead of a shared library.
"""

from __future__ import annotations

import string
import sys
import threading
from ctypes import (
    Structure,
    Union,
    c_byte,
    c_char,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_short,
    c_uint,
    c_uint16,
    c_uint32,
    c_ushort,
    c_void_p,
    sizeof,
)
from typing import TYPE_CHECKING, Any

from migexporter.sim import dcgm_engine

if TYPE_CHECKING:
    from collections.abc import Callable

DCGM_MAX_STR_LENGTH = 256
DCGM_MAX_NUM_DEVICES = 32
DCGM_MAX_CLOCKS = 256
DCGM_MAX_NUM_GROUPS = 64
DCGM_MAX_BLOB_LENGTH = 4096

DCGM_OPERATION_MODE_AUTO = 1
DCGM_OPERATION_MODE_MANUAL = 2

# Return codes (dcgm_structs.h dcgmReturn_t).
DCGM_ST_OK = 0
DCGM_ST_BADPARAM = -1
DCGM_ST_GENERIC_ERROR = -3
DCGM_ST_MEMORY = -4
DCGM_ST_NOT_CONFIGURED = -5
DCGM_ST_NOT_SUPPORTED = -6
DCGM_ST_INIT_ERROR = -7
DCGM_ST_NVML_ERROR = -8
DCGM_ST_PENDING = -9
DCGM_ST_UNINITIALIZED = -10
DCGM_ST_TIMEOUT = -11
DCGM_ST_VER_MISMATCH = -12
DCGM_ST_UNKNOWN_FIELD = -13
DCGM_ST_NO_DATA = -14
DCGM_ST_STALE_DATA = -15
DCGM_ST_NOT_WATCHED = -16
DCGM_ST_NO_PERMISSION = -17
DCGM_ST_GPU_IS_LOST = -18
DCGM_ST_RESET_REQUIRED = -19
DCGM_ST_FUNCTION_NOT_FOUND = -20
DCGM_ST_CONNECTION_NOT_VALID = -21
DCGM_ST_GPU_NOT_SUPPORTED = -22
DCGM_ST_GROUP_INCOMPATIBLE = -23
DCGM_ST_MAX_LIMIT = -24
DCGM_ST_LIBRARY_NOT_FOUND = -25
DCGM_ST_DUPLICATE_KEY = -26
DCGM_ST_GPU_IN_SYNC_BOOST_GROUP = -27
DCGM_ST_GPU_NOT_IN_SYNC_BOOST_GROUP = -28
DCGM_ST_REQUIRES_ROOT = -29
DCGM_ST_NVVS_ERROR = -30
DCGM_ST_INSUFFICIENT_SIZE = -31
DCGM_ST_FIELD_UNSUPPORTED_BY_API = -32
DCGM_ST_MODULE_NOT_LOADED = -33
DCGM_ST_IN_USE = -34
DCGM_ST_GROUP_IS_EMPTY = -35
DCGM_ST_PROFILING_NOT_SUPPORTED = -36
DCGM_ST_PROFILING_LIBRARY_ERROR = -37
DCGM_ST_PROFILING_MULTI_PASS = -38
DCGM_ST_DIAG_ALREADY_RUNNING = -39
DCGM_ST_DIAG_BAD_JSON = -40
DCGM_ST_DIAG_BAD_LAUNCH = -41
DCGM_ST_DIAG_UNUSED = -42
DCGM_ST_DIAG_THRESHOLD_EXCEEDED = -43
DCGM_ST_INSUFFICIENT_DRIVER_VERSION = -44
DCGM_ST_INSTANCE_NOT_FOUND = -45
DCGM_ST_COMPUTE_INSTANCE_NOT_FOUND = -46
DCGM_ST_CHILD_NOT_KILLED = -47
DCGM_ST_3RD_PARTY_LIBRARY_ERROR = -48
DCGM_ST_INSUFFICIENT_RESOURCES = -49
DCGM_ST_PLUGIN_EXCEPTION = -50
DCGM_ST_NVVS_ISOLATE_ERROR = -51
DCGM_ST_NVVS_BINARY_NOT_FOUND = -52
DCGM_ST_NVVS_KILLED = -53
DCGM_ST_PAUSED = -54
DCGM_ST_ALREADY_INITIALIZED = -55
DCGM_ST_NVML_NOT_LOADED = -56
DCGM_ST_NVML_DRIVER_TIMEOUT = -57
DCGM_ST_NVVS_NO_AVAILABLE_TEST = -58
DCGM_ST_MNDIAG_CONNECTION_NOT_AVAILABLE = -59
DCGM_ST_MNDIAG_CONNECTION_UNAUTHORIZED = -60
DCGM_ST_REMOTE_SSH_CONNECTION_FAILED = -61
DCGM_ST_CHILD_SPAWN_FAILED = -62
DCGM_ST_FILE_IO_ERROR = -63
DCGM_ST_CHILD_SIGNAL_RECEIVED = -64
DCGM_ST_GPUS_DETACHED = -67

DCGM_GROUP_DEFAULT = 0
DCGM_GROUP_EMPTY = 1
DCGM_GROUP_DEFAULT_NVSWITCHES = 2
DCGM_GROUP_DEFAULT_INSTANCES = 3
DCGM_GROUP_DEFAULT_COMPUTE_INSTANCES = 4
DCGM_GROUP_DEFAULT_ENTITIES = 5
DCGM_GROUP_ALL_GPUS = 0x7FFFFFFF
DCGM_GROUP_ALL_NVSWITCHES = 0x7FFFFFFE
DCGM_GROUP_ALL_INSTANCES = 0x7FFFFFFD
DCGM_GROUP_ALL_COMPUTE_INSTANCES = 0x7FFFFFFC
DCGM_GROUP_ALL_ENTITIES = 0x7FFFFFFB
DCGM_GROUP_NULL = 0x7FFFFFFA
DCGM_GROUP_MAX_ENTITIES_V2 = 1024  # 4.x only: 3.x groups hold 64

DCGM_MAX_INSTANCES_PER_GPU = 8
DCGM_MAX_TOTAL_INSTANCES = 14
DCGM_MAX_HIERARCHY_INFO = DCGM_MAX_NUM_DEVICES * DCGM_MAX_TOTAL_INSTANCES

DCGM_FV_FLAG_LIVE_DATA = 0x00000001
DCGM_GEGE_FLAG_ONLY_SUPPORTED = 0x00000001
DCGM_MAX_NUM_FIELD_GROUPS = 64
DCGM_MAX_FIELD_IDS_PER_FIELD_GROUP = 128
DCGM_PROF_MAX_NUM_GROUPS_V2 = 10
DCGM_PROF_MAX_FIELD_IDS_PER_GROUP_V2 = 64

# The "loaded library" and the bindings' own init count, as in the real module.
dcgmLib: Any = None
libLoadLock = threading.Lock()
_dcgmLib_refcount = 0

_MESSAGES = {
    DCGM_ST_OK: "Success",
    DCGM_ST_BADPARAM: "Bad parameter passed to function",
    DCGM_ST_GENERIC_ERROR: "Generic unspecified error",
    DCGM_ST_NOT_CONFIGURED: "Setting not configured",
    DCGM_ST_NOT_SUPPORTED: "Feature not supported",
    DCGM_ST_INIT_ERROR: "DCGM initialization error",
    DCGM_ST_UNINITIALIZED: "Object is in an undefined state",
    DCGM_ST_TIMEOUT: "Timeout",
    DCGM_ST_VER_MISMATCH: "API version mismatch",
    DCGM_ST_UNKNOWN_FIELD: "Unknown field",
    DCGM_ST_NO_DATA: "No data is available",
    DCGM_ST_NOT_WATCHED: "Field is not being updated",
    DCGM_ST_NO_PERMISSION: "Not permissioned",
    DCGM_ST_GPU_IS_LOST: "GPU is unreachable",
    DCGM_ST_FUNCTION_NOT_FOUND: "Unable to find function",
    DCGM_ST_CONNECTION_NOT_VALID: "The connection to the host engine is not valid any longer",
    DCGM_ST_MAX_LIMIT: "Max limit reached for the object",
    DCGM_ST_LIBRARY_NOT_FOUND: "DCGM library could not be found",
    DCGM_ST_DUPLICATE_KEY: "Duplicate key passed to function",
    DCGM_ST_REQUIRES_ROOT: "This operation needs a host engine running as root",
    DCGM_ST_FIELD_UNSUPPORTED_BY_API: "The given field ID is not supported by this API",
    DCGM_ST_MODULE_NOT_LOADED: "The DCGM module serving this request is not loaded",
    DCGM_ST_GROUP_IS_EMPTY: "The specified group is empty",
    DCGM_ST_PROFILING_NOT_SUPPORTED: "Profiling is not supported for this group of GPUs or GPU",
    DCGM_ST_PROFILING_MULTI_PASS: "The requested profiling metrics need more than one pass",
    DCGM_ST_INSTANCE_NOT_FOUND: "The specified GPU instance does not exist",
    DCGM_ST_COMPUTE_INSTANCE_NOT_FOUND: "The specified GPU compute instance does not exist",
}


class DCGMError(Exception):
    """A DCGM return code; ``DCGMError(code)`` builds the code's subclass."""

    _valClassMapping: dict[int, type[DCGMError]] = {}
    _error_code_to_string = _MESSAGES
    value: int
    info: object

    def __new__(typ, value: int) -> DCGMError:  # noqa: PYI034 (it returns the code's subclass)
        """Map ``value`` to its DCGMError_* subclass."""
        chosen: type[DCGMError] = typ
        if chosen is DCGMError:
            chosen = DCGMError._valClassMapping.get(value, chosen)
        error = Exception.__new__(chosen)
        error.info = None
        error.value = value
        return error

    def __str__(self) -> str:
        message = _MESSAGES.get(self.value) or f"DCGM Error with code {self.value}"
        if self.info is not None:
            message = f"{message.rstrip('.')}: '{self.info}'"
        return message

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", None)

    def __hash__(self) -> int:
        return hash(self.value)

    def SetAdditionalInfo(self, msg: object) -> None:
        """Attach more text for ``str()``."""
        self.info = msg


def dcgmExceptionClass(error_code: int) -> type[DCGMError] | None:
    """The DCGMError subclass of a code, for ``except``."""
    return DCGMError._valClassMapping.get(error_code)  # noqa: SLF001


def _extractDCGMErrorsAsClasses() -> None:
    """Give each DCGM_ST_* a subclass: DCGM_ST_NO_DATA becomes DCGMError_NoData."""
    module = sys.modules[__name__]
    for name in [n for n in dir(module) if n.startswith("DCGM_ST_")]:
        words = string.capwords(name.removeprefix("DCGM_ST_"), "_").replace("_", "")
        code: int = getattr(module, name)

        def new(typ: type[DCGMError], code: int = code) -> DCGMError:
            return DCGMError.__new__(typ, code)

        subclass = type(f"DCGMError_{words}", (DCGMError,), {"__new__": new})
        subclass.__module__ = __name__
        setattr(module, subclass.__name__, subclass)
        DCGMError._valClassMapping[code] = subclass  # noqa: SLF001


_extractDCGMErrorsAsClasses()


def _text_or_number(fields: list[tuple[str, Any]], key: str, raw_value: Any) -> Any:
    """What ctypes can store: bytes for strings, ints for ``c_uint``/``c_int`` fields."""
    kind = next((f[1] for f in fields if f[0] == key), None)
    if kind is c_uint and not isinstance(raw_value, c_uint32):
        return int(raw_value)
    if kind is c_int and not isinstance(raw_value, c_int32):
        return int(raw_value)
    if isinstance(raw_value, str):
        return raw_value.encode("utf-8")
    return raw_value


class _DcgmStructure(Structure):
    """A Structure whose ``char`` arrays read as ``str`` and accept ``str``."""

    def __getattribute__(self, key: str) -> Any:
        value = super().__getattribute__(key)
        return value.decode("utf-8") if isinstance(value, bytes) else value

    def __setattr__(self, key: str, raw_value: Any) -> None:
        super().__setattr__(key, _text_or_number(self._fields_, key, raw_value))  # type: ignore[arg-type]


class DcgmUnion(Union):
    """A Union whose ``char`` arrays read as ``str`` and accept ``str``."""

    def __getattribute__(self, key: str) -> Any:
        value = super().__getattribute__(key)
        return value.decode("utf-8") if isinstance(value, bytes) else value

    def __setattr__(self, key: str, raw_value: Any) -> None:
        super().__setattr__(key, _text_or_number(self._fields_, key, raw_value))  # type: ignore[arg-type]


class _PrintableStructure(_DcgmStructure):
    """``ClassName(field: value, ...)`` instead of ctypes' default repr."""

    _fmt_: dict[str, str] = {}

    def __str__(self) -> str:
        parts = []
        for name, *_ in self._fields_:
            fmt = self._fmt_.get(name, self._fmt_.get("<default>", "%s"))
            parts.append(f"{name}: {fmt % (getattr(self, name),)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def FieldsSizeof(self) -> int:
        """Sum of the fields' sizes, without padding."""
        return sum(sizeof(kind) for _, kind in self._fields_)  # type: ignore[misc]


def make_dcgm_version(struct: Any, ver: int) -> int:
    """A struct's version word: its size, and the version in the top byte."""
    return int(sizeof(struct)) | (ver << 24)


def _dcgmGetFunctionPointer(name: str) -> Callable[..., Any]:
    """A library function of the installed engine; its error codes raise DCGMError."""
    engine = dcgm_engine.installed()
    if dcgmLib is None or engine is None:
        raise DCGMError(DCGM_ST_UNINITIALIZED)
    function = getattr(engine, name, None)
    if function is None:
        raise DCGMError(DCGM_ST_FUNCTION_NOT_FOUND)

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except dcgm_engine.EngineError as error:
            raise DCGMError(error.status) from None

    return call


def _LoadDcgmLibrary(libDcgmPath: str | None = None) -> None:  # noqa: ARG001 (no files here)
    """Load "libdcgm.so.4": find the installed engine, else DCGM_ST_LIBRARY_NOT_FOUND."""
    global dcgmLib  # noqa: PLW0603 (the real module's global)
    with libLoadLock:
        # Checked on every load, not once: tests install and remove engines.
        dcgmLib = dcgm_engine if dcgm_engine.installed() is not None else None
    if dcgmLib is None:
        _dcgmCheckReturn(DCGM_ST_LIBRARY_NOT_FOUND)


def _dcgmInit(libDcgmPath: str | None = None) -> None:
    """Load the library and count one more user."""
    global _dcgmLib_refcount  # noqa: PLW0603
    _LoadDcgmLibrary(libDcgmPath)
    with libLoadLock:
        _dcgmLib_refcount += 1


def _dcgmCheckReturn(ret: int) -> int:
    """Raise DCGMError for any code but DCGM_ST_OK."""
    if ret != DCGM_ST_OK:
        raise DCGMError(ret)
    return ret


def _dcgmShutdown() -> None:
    """Shut the library's interface down, keeping it loaded."""
    global _dcgmLib_refcount  # noqa: PLW0603
    _dcgmGetFunctionPointer("dcgmShutdown")()
    with libLoadLock:
        _dcgmLib_refcount = max(0, _dcgmLib_refcount - 1)


def _dcgmErrorString(result: int) -> str:
    """The library's text for a code."""
    return str(_dcgmGetFunctionPointer("dcgmErrorString")(result))


class c_dcgmConnectV2Params_v1(_PrintableStructure):
    _fields_ = [("version", c_uint), ("persistAfterDisconnect", c_uint)]


c_dcgmConnectV2Params_version1 = make_dcgm_version(c_dcgmConnectV2Params_v1, 1)


class c_dcgmConnectV2Params_v2(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("persistAfterDisconnect", c_uint),
        ("timeoutMs", c_uint),
        ("addressIsUnixSocket", c_uint),
    ]


c_dcgmConnectV2Params_version2 = make_dcgm_version(c_dcgmConnectV2Params_v2, 2)
c_dcgmConnectV2Params_version = c_dcgmConnectV2Params_version2


class c_dcgmConnectV3Params_v1(_PrintableStructure):
    _fields_ = [("version", c_uint), ("persistAfterDisconnect", c_uint), ("timeoutMs", c_uint)]


c_dcgmConnectV3Params_version1 = make_dcgm_version(c_dcgmConnectV3Params_v1, 1)
c_dcgmConnectV3Params_version = c_dcgmConnectV3Params_version1


class c_dcgmHostengineHealth_v1(_PrintableStructure):
    _fields_ = [("version", c_uint), ("overallHealth", c_uint)]


dcgmHostengineHealth_version1 = make_dcgm_version(c_dcgmHostengineHealth_v1, 1)
dcgmHostengineHealth_version = dcgmHostengineHealth_version1


class c_dcgmClockSet_v1(_PrintableStructure):
    _fields_ = [("version", c_uint), ("memClock", c_uint), ("smClock", c_uint)]


class c_dcgmGroupEntityPair_t(_PrintableStructure):  # noqa: PLW1641 (unhashable, as the real one)
    _fields_ = [("entityGroupId", c_uint32), ("entityId", c_uint32)]

    def __eq__(self, other: object) -> bool:
        return bool(
            self.entityGroupId == getattr(other, "entityGroupId", None)
            and self.entityId == getattr(other, "entityId", None)
        )


class c_dcgmGroupInfo_v3(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("count", c_uint),
        ("groupName", c_char * DCGM_MAX_STR_LENGTH),
        ("entityList", c_dcgmGroupEntityPair_t * DCGM_GROUP_MAX_ENTITIES_V2),
    ]


c_dcgmGroupInfo_version3 = make_dcgm_version(c_dcgmGroupInfo_v3, 3)


class c_dcgmMigHierarchyInfo_t(_PrintableStructure):
    _fields_ = [
        ("entity", c_dcgmGroupEntityPair_t),
        ("parent", c_dcgmGroupEntityPair_t),
        ("sliceProfile", c_uint),
    ]


class c_dcgmMigEntityInfo_t(_PrintableStructure):
    _fields_ = [
        ("gpuUuid", c_char * 128),
        ("nvmlGpuIndex", c_uint),
        ("nvmlInstanceId", c_uint),
        ("nvmlComputeInstanceId", c_uint),
        ("nvmlMigProfileId", c_uint),
        ("nvmlProfileSlices", c_uint),
    ]


class c_dcgmMigHierarchyInfo_v2(_PrintableStructure):
    _fields_ = [
        ("entity", c_dcgmGroupEntityPair_t),
        ("parent", c_dcgmGroupEntityPair_t),
        ("info", c_dcgmMigEntityInfo_t),
    ]


class c_dcgmMigHierarchy_v2(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("count", c_uint),
        ("entityList", c_dcgmMigHierarchyInfo_v2 * DCGM_MAX_HIERARCHY_INFO),
    ]


c_dcgmMigHierarchy_version2 = make_dcgm_version(c_dcgmMigHierarchy_v2, 2)


class c_dcgmDeviceSupportedClockSets_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("count", c_uint),
        ("clockSet", c_dcgmClockSet_v1 * DCGM_MAX_CLOCKS),
    ]


class c_dcgmDeviceThermals_v1(_PrintableStructure):
    _fields_ = [("version", c_uint), ("slowdownTemp", c_uint), ("shutdownTemp", c_uint)]


class c_dcgmDevicePowerLimits_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("curPowerLimit", c_uint),
        ("defaultPowerLimit", c_uint),
        ("enforcedPowerLimit", c_uint),
        ("minPowerLimit", c_uint),
        ("maxPowerLimit", c_uint),
    ]


class c_dcgmDeviceIdentifiers_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("brandName", c_char * DCGM_MAX_STR_LENGTH),
        ("deviceName", c_char * DCGM_MAX_STR_LENGTH),
        ("pciBusId", c_char * DCGM_MAX_STR_LENGTH),
        ("serial", c_char * DCGM_MAX_STR_LENGTH),
        ("uuid", c_char * DCGM_MAX_STR_LENGTH),
        ("vbios", c_char * DCGM_MAX_STR_LENGTH),
        ("inforomImageVersion", c_char * DCGM_MAX_STR_LENGTH),
        ("pciDeviceId", c_uint32),
        ("pciSubSystemId", c_uint32),
        ("driverVersion", c_char * DCGM_MAX_STR_LENGTH),
        ("virtualizationMode", c_uint32),
    ]


class c_dcgmDeviceMemoryUsage_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("bar1Total", c_uint),
        ("fbTotal", c_uint),
        ("fbUsed", c_uint),
        ("fbFree", c_uint),
    ]


class c_dcgmDeviceSettings_v2(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("persistenceModeEnabled", c_uint),
        ("migModeEnabled", c_uint),
        ("confidentialComputeMode", c_uint),
    ]


class c_dcgmDeviceAttributes_v3(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("clockSets", c_dcgmDeviceSupportedClockSets_v1),
        ("thermalSettings", c_dcgmDeviceThermals_v1),
        ("powerLimits", c_dcgmDevicePowerLimits_v1),
        ("identifiers", c_dcgmDeviceIdentifiers_v1),
        ("memoryUsage", c_dcgmDeviceMemoryUsage_v1),
        ("settings", c_dcgmDeviceSettings_v2),
    ]


dcgmDeviceAttributes_version3 = make_dcgm_version(c_dcgmDeviceAttributes_v3, 3)


class c_dcgmFieldValue_v1_value(DcgmUnion):
    _fields_ = [
        ("i64", c_int64),
        ("dbl", c_double),
        ("str", c_char * DCGM_MAX_STR_LENGTH),
        ("blob", c_byte * DCGM_MAX_BLOB_LENGTH),
    ]


class c_dcgmFieldValue_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("fieldId", c_ushort),
        ("fieldType", c_short),  # the ASCII code of a dcgm_fields.DCGM_FT_* letter
        ("status", c_int),
        ("ts", c_int64),  # microseconds since 1970
        ("value", c_dcgmFieldValue_v1_value),
    ]


dcgmFieldValue_version1 = make_dcgm_version(c_dcgmFieldValue_v1, 1)


class c_dcgmFieldValue_v2(_PrintableStructure):
    _fields_ = [
        ("version", c_uint),
        ("entityGroupId", c_uint),
        ("entityId", c_uint),
        ("fieldId", c_ushort),
        ("fieldType", c_short),
        ("status", c_int),
        ("unused", c_uint),
        ("ts", c_int64),
        ("value", c_dcgmFieldValue_v1_value),
    ]


dcgmFieldValue_version2 = make_dcgm_version(c_dcgmFieldValue_v2, 2)


class c_dcgmFieldGroupInfo_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint32),
        ("numFieldIds", c_uint32),
        ("fieldGroupId", c_void_p),
        ("fieldGroupName", c_char * DCGM_MAX_STR_LENGTH),
        ("fieldIds", c_uint16 * DCGM_MAX_FIELD_IDS_PER_FIELD_GROUP),
    ]


dcgmFieldGroupInfo_version1 = make_dcgm_version(c_dcgmFieldGroupInfo_v1, 1)


class c_dcgmAllFieldGroup_v1(_PrintableStructure):
    _fields_ = [
        ("version", c_uint32),
        ("numFieldGroups", c_uint32),
        ("fieldGroups", c_dcgmFieldGroupInfo_v1 * DCGM_MAX_NUM_FIELD_GROUPS),
    ]


dcgmAllFieldGroup_version1 = make_dcgm_version(c_dcgmAllFieldGroup_v1, 1)


class c_dcgmProfMetricGroupInfo_v2(_PrintableStructure):
    _fields_ = [
        ("majorId", c_ushort),
        ("minorId", c_ushort),
        ("numFieldIds", c_uint32),
        ("fieldIds", c_ushort * DCGM_PROF_MAX_FIELD_IDS_PER_GROUP_V2),
    ]


class c_dcgmProfGetMetricGroups_v3(_PrintableStructure):
    _fields_ = [
        ("version", c_uint32),
        ("unused", c_uint32),
        ("gpuId", c_uint32),
        ("numMetricGroups", c_uint32),
        ("metricGroups", c_dcgmProfMetricGroupInfo_v2 * DCGM_PROF_MAX_NUM_GROUPS_V2),
    ]


dcgmProfGetMetricGroups_version3 = make_dcgm_version(c_dcgmProfGetMetricGroups_v3, 3)


class c_dcgmVersionInfo_v2(_PrintableStructure):
    _fields_ = [
        ("version", c_uint32),
        ("rawBuildInfoString", c_char * (DCGM_MAX_STR_LENGTH * 2)),
    ]


dcgmVersionInfo_version2 = make_dcgm_version(c_dcgmVersionInfo_v2, 2)
dcgmVersionInfo_version = dcgmVersionInfo_version2
