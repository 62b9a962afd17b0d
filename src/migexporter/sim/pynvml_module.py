"""The simulated fleet as an importable ``pynvml`` module, for NVML tools written elsewhere.

``FakeNvml`` is an object; tools such as nvitop and gpustat need a module: they read
``vars(pynvml)``, star-import it, keep only ``nvml*`` names that are plain functions, and look for
pynvml's private ``_nvmlGetFunctionPointer``. ``build`` makes a ``types.ModuleType`` that carries
the real module's constants, structs, error classes and the helpers that only convert data; the
fake's ``nvml*`` functions as plain functions; and, for every real function that would reach the
NVIDIA library (directly or through another), one that raises ``NVMLError_FunctionNotFound``
naming itself, as real pynvml does for a symbol the library lacks. Nothing reaches the library.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import types
from typing import TYPE_CHECKING, Any, NoReturn

import pynvml

from migexporter.sim.nvml import FakeNvml

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from migexporter.sim.fleet import Fleet

# What a function of pynvml reaches the NVIDIA library through.
_LIBRARY_NAMES = frozenset({"_nvmlGetFunctionPointer", "_LoadNvmlLibrary", "nvmlLib"})
_MODULE_KEYS = frozenset(
    {"__name__", "__doc__", "__loader__", "__spec__", "__file__", "__cached__"}
)
# C entry points pynvml reaches under another name than its Python function's.
_ENTRY_POINTS = {
    "nvmlDeviceGetMemoryInfo_v2": "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoV": "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoByIdV": "nvmlDeviceGetGpuInstanceProfileInfoById",
    "nvmlComputeInstanceGetInfo_v2": "nvmlComputeInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": (
        "nvmlGpuInstanceGetComputeInstanceProfileInfo"
    ),
}


class SimulatorFunctionNotFound(pynvml.NVMLError_FunctionNotFound):  # type: ignore[misc]
    """NVML_ERROR_FUNCTION_NOT_FOUND for a function the simulator does not implement."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.function = name

    def __str__(self) -> str:
        return f"Function Not Found: the NVML simulator does not implement {self.function}"


def _missing(error: Exception, *_args: object) -> NoReturn:
    raise error


def _target(ref: Any) -> Any:
    """What a ``byref(x)`` or ``pointer(x)`` argument points to."""
    return ref._obj if hasattr(ref, "_obj") else ref.contents  # noqa: SLF001 (ctypes' byref)


def _c_value(argument: Any) -> Any:
    return getattr(argument, "value", argument)  # c_uint(3) or 3


def _copy(source: Any, destination: Any) -> None:
    ctypes.memmove(ctypes.addressof(destination), ctypes.addressof(source), ctypes.sizeof(source))


def _write_array(ref: Any, items: Sequence[Any]) -> None:
    """Write ``items`` one after another where ``ref`` points, as C fills a caller's array.

    The C layout is the items' own, whatever the type of the caller's buffer. A buffer known to
    be too small is refused loudly: the real library would write past its end.
    """
    buffer = ref if isinstance(ref, ctypes.Array) else _target(ref)
    size = sum(ctypes.sizeof(item) for item in items)
    if not hasattr(ref, "contents") and ctypes.sizeof(buffer) < size:
        raise TypeError(f"a buffer of {ctypes.sizeof(buffer)} bytes cannot take {size}")
    address = ctypes.addressof(buffer)
    for item in items:
        ctypes.memmove(address, ctypes.addressof(item), ctypes.sizeof(item))
        address += ctypes.sizeof(item)


class _ProcessInfoV1(ctypes.Structure):
    """nvml.h's nvmlProcessInfo_v1_t, which pynvml lacks: the unversioned C functions fill it."""

    _fields_ = (("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong))


def _process_list(fake: FakeNvml, mode: int, version: str) -> Callable[..., None]:
    """nvmlDeviceGet*RunningProcesses*: infoCount in (array size) and out (entries).

    nvml.h: "call this function with *infoCount = 0. The return code will be
    NVML_ERROR_INSUFFICIENT_SIZE, or NVML_SUCCESS if none are running"; a short array gets
    INSUFFICIENT_SIZE with the count needed. The unversioned symbol fills
    nvmlProcessInfo_v1_t, _v2 and _v3 nvmlProcessInfo_v2_t.
    """

    def entry(handle: Any, count_ref: Any, infos: Any) -> None:
        found = fake.process_infos(handle, mode)
        if count_ref is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        count = _target(count_ref)
        room, count.value = count.value, len(found)
        if not found:
            return
        if infos is None or room < len(found):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        if not version:
            found = [_ProcessInfoV1(info.pid, info.usedGpuMemory) for info in found]
        _write_array(infos, found)

    return entry


def _c_entry_points(fake: FakeNvml) -> dict[str, Callable[..., None]]:
    """C entry points that tools call through ``_nvmlGetFunctionPointer``, with C semantics.

    Each writes its answer through the caller's pointers; ``_c_call`` returns the status.
    """

    def memory(version: int | None) -> Callable[..., None]:
        def entry(handle: Any, ref: Any) -> None:
            _copy(fake.nvmlDeviceGetMemoryInfo(handle, version=version), _target(ref))

        return entry

    def field_values(handle: Any, count: Any, ref: Any) -> None:
        values = _target(ref) if not isinstance(ref, ctypes.Array) else ref
        items = [(v.fieldId, v.scopeId) for v in values[: _c_value(count)]]
        for position, answer in enumerate(fake.nvmlDeviceGetFieldValues(handle, items)):
            _copy(answer, values[position])

    def temperature(handle: Any, sensor: Any, ref: Any) -> None:
        _target(ref).value = fake.nvmlDeviceGetTemperature(handle, _c_value(sensor))

    def temperature_v(handle: Any, ref: Any) -> None:
        reading = _target(ref)  # a c_nvmlTemperature_v1_t: version and sensor in, reading out
        if reading.version != pynvml.nvmlTemperature_v1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        reading.temperature = fake.nvmlDeviceGetTemperature(handle, reading.sensorType)

    modes = {
        "Compute": pynvml.NVML_PROCESS_MODE_COMPUTE,
        "Graphics": pynvml.NVML_PROCESS_MODE_GRAPHICS,
        "MPSCompute": pynvml.NVML_PROCESS_MODE_MPS,
    }
    process_lists = {
        f"nvmlDeviceGet{kind}RunningProcesses{version}": _process_list(fake, mode, version)
        for kind, mode in modes.items()
        for version in ("", "_v2", "_v3")
    }

    def driver_model(handle: Any, _current: Any, _pending: Any) -> None:
        fake.nvmlDeviceGetDriverModel(handle)

    def handle_by_pci_bus_id(bus_id: Any, ref: Any) -> None:
        _target(ref).contents = fake.nvmlDeviceGetHandleByPciBusId(_c_value(bus_id)).contents

    return {
        **process_lists,
        "nvmlDeviceGetDriverModel": driver_model,
        "nvmlDeviceGetDriverModel_v2": driver_model,
        "nvmlDeviceGetHandleByPciBusId": handle_by_pci_bus_id,
        "nvmlDeviceGetHandleByPciBusId_v2": handle_by_pci_bus_id,
        "nvmlDeviceGetMemoryInfo": memory(None),
        "nvmlDeviceGetMemoryInfo_v2": memory(pynvml.nvmlMemory_v2),
        "nvmlDeviceGetFieldValues": field_values,
        "nvmlDeviceGetTemperature": temperature,
        "nvmlDeviceGetTemperatureV": temperature_v,
    }


def _c_call(entry: Callable[..., None]) -> Callable[..., int]:
    """``entry`` returning an nvmlReturn_t, as the C function does, instead of raising."""

    def call(*args: Any) -> int:
        try:
            entry(*args)
        except pynvml.NVMLError as error:
            return int(error.value)
        return int(pynvml.NVML_SUCCESS)

    return call


def library_functions(module: types.ModuleType = pynvml) -> frozenset[str]:
    """Names of the module's functions that reach the library, directly or through another."""
    functions = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__
    }
    calls = {name: _names_used(f) for name, f in functions.items()}
    reaching = {name for name, names in calls.items() if names & _LIBRARY_NAMES}
    while True:  # a fixed point: callers of functions that reach the library reach it too
        more = {name for name, names in calls.items() if names & reaching} - reaching
        if not more:
            return frozenset(reaching)
        reaching |= more


def _names_used(function: types.FunctionType) -> set[str]:
    """Global names a function's code uses, with those of the functions it closes over.

    pynvml decorates many functions (``convertStrBytes``): the module-level name is then a
    wrapper whose own code only calls the function held in its closure.
    """
    names: set[str] = set()
    pending: list[types.FunctionType] = [function]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        codes = [current.__code__]
        while codes:
            code = codes.pop()
            names.update(code.co_names)
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        for cell in current.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not filled yet
                continue
            if isinstance(contents, types.FunctionType):
                pending.append(contents)
    return names


def _not_implemented(name: str) -> Callable[..., NoReturn]:
    def function(*_args: object, **_kwargs: object) -> NoReturn:
        raise SimulatorFunctionNotFound(name)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"Not in the NVML simulator: raises NVMLError_FunctionNotFound ({name})."
    return function


def _answered_by(method: Callable[..., Any]) -> Callable[..., Any]:
    """A plain function calling the fake's bound method (tools keep only FunctionType)."""

    @functools.wraps(method)
    def function(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    return function


def build(fake: FakeNvml, name: str = "pynvml") -> types.ModuleType:
    """A ``pynvml`` module over ``fake``."""
    module = types.ModuleType(name, __doc__)
    reaching = library_functions()
    for key, value in vars(pynvml).items():
        if key not in _MODULE_KEYS:
            module.__dict__[key] = _not_implemented(key) if key in reaching else value
    implemented = {key for key in dir(FakeNvml) if key.startswith("nvml")}
    for key in implemented:
        module.__dict__[key] = _answered_by(getattr(fake, key))
    cache: dict[str, Callable[..., Any]] = {}
    entry_points = _c_entry_points(fake)

    def _nvmlGetFunctionPointer(name: str) -> Callable[..., Any]:
        """A C entry point's stand-in, if the simulator answers it; as pynvml, cached."""
        if name in cache:
            return cache[name]
        fake.nvmlSystemGetDriverVersion()  # NVMLError_Uninitialized before nvmlInit, as pynvml
        if name in entry_points:
            cache[name] = _c_call(entry_points[name])
        elif _ENTRY_POINTS.get(name, name) in implemented:
            # Answered through pynvml's Python function only, not called as C.
            cache[name] = functools.partial(_missing, SimulatorFunctionNotFound(f"{name} as C"))
        else:
            raise SimulatorFunctionNotFound(name)
        return cache[name]

    module.__dict__.update(
        _nvmlGetFunctionPointer=_nvmlGetFunctionPointer,
        _nvmlGetFunctionPointer_cache=cache,
        nvmlLib=None,
    )
    return module


def install(fleet: Fleet) -> types.ModuleType:
    """Make ``import pynvml`` give a module over ``fleet`` from now on, in this process."""
    module = build(FakeNvml(fleet))
    sys.modules["pynvml"] = module
    return module
