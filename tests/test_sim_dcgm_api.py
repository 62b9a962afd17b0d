"""The simulator's DCGM bindings against the names of NVIDIA's 4.6.0 bindings.

``tests/data/dcgm-api-4.6.0.json`` (a copy of the shared facts file) lists, per module, the
real functions with their parameter names, classes with their methods and ``_fields_``, and
module-level numeric constants. Anything the fake defines must be spelled the same.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from migexporter.sim import BINDINGS_DIR

API = json.loads((Path(__file__).parent / "data" / "dcgm-api-4.6.0.json").read_text())["modules"]
MODULES = ("pydcgm", "DcgmHandle", "dcgm_structs", "dcgm_agent", "dcgm_fields", "dcgmvalue")
# Computed from other constants in NVIDIA's source, so the JSON extraction (literals only)
# missed them: checked here against their formulas instead.
COMPUTED = {
    "dcgm_structs": {"DCGM_MAX_HIERARCHY_INFO": 32 * 14},
    "dcgmvalue": {
        f"DCGM_{kind}_{name}": blank + offset
        for kind, blank in (("INT32", 0x7FFFFFF0), ("INT64", 0x7FFFFFFFFFFFFFF0))
        for offset, name in ((1, "NOT_FOUND"), (2, "NOT_SUPPORTED"), (3, "NOT_PERMISSIONED"))
    }
    | {
        f"DCGM_FP64_{name}": 2.0**47 + offset
        for offset, name in ((1, "NOT_FOUND"), (2, "NOT_SUPPORTED"), (3, "NOT_PERMISSIONED"))
    },
}
# What the DCGM backend calls: the fake must have all of it.
CONTRACT = {
    "dcgm_structs": ["_LoadDcgmLibrary", "_dcgmInit", "_dcgmShutdown", "_dcgmCheckReturn",
                     "_dcgmErrorString", "dcgmExceptionClass"],
    "dcgm_agent": [
        "dcgmInit", "dcgmShutdown", "dcgmStartEmbedded", "dcgmStopEmbedded", "dcgmConnect_v2",
        "dcgmConnect_v3", "dcgmDisconnect", "dcgmVersionInfo", "dcgmGetAllSupportedDevices",
        "dcgmGetDeviceAttributes", "dcgmGetGpuInstanceHierarchy", "dcgmGroupCreate",
        "dcgmGroupDestroy", "dcgmGroupAddEntity", "dcgmGroupGetAllIds", "dcgmGroupGetInfo",
        "dcgmFieldGroupCreate", "dcgmFieldGroupDestroy", "dcgmFieldGroupGetAll",
        "dcgmWatchFields", "dcgmUnwatchFields", "dcgmUpdateAllFields",
        "dcgmEntitiesGetLatestValues", "dcgmGetValuesSince_v2", "dcgmProfGetSupportedMetricGroups",
    ],
    "dcgmvalue": ["DCGM_INT32_IS_BLANK", "DCGM_INT64_IS_BLANK", "DCGM_FP64_IS_BLANK",
                  "DCGM_STR_IS_BLANK"],
}  # fmt: skip


@pytest.fixture(scope="module")
def modules() -> dict[str, types.ModuleType]:
    if str(BINDINGS_DIR) not in sys.path:
        sys.path.insert(0, str(BINDINGS_DIR))
    for name in MODULES:  # afresh, pydcgm first (see test_sim_dcgm's import-order test)
        sys.modules.pop(name, None)
    return {name: importlib.import_module(name) for name in MODULES}


def _parameters(function: Any) -> list[str]:
    function = getattr(function, "__func__", function)  # classmethod, staticmethod
    return list(inspect.signature(function).parameters)


def _own(module: types.ModuleType, value: Any) -> bool:
    return getattr(value, "__module__", None) == module.__name__


def _class_problems(name: str, cls: type, spec: dict[str, Any]) -> list[str]:
    problems = []
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    if bases != [b.rsplit(".", 1)[-1] for b in spec["bases"] if b != "object"]:
        problems.append(f"class {name} has bases {bases}, not {spec['bases']}")
    for method, value in vars(cls).items():
        if not callable(getattr(value, "__func__", value)) or isinstance(value, type):
            continue
        if method not in spec["methods"]:
            problems.append(f"{name}.{method} is not in the real class")
        elif _parameters(value) != spec["methods"][method]:
            real = spec["methods"][method]
            problems.append(f"{name}.{method}{_parameters(value)} is {name}.{method}{real}")
    if "_fields_" in vars(cls):
        fields = [entry[0] for entry in cls._fields_]  # type: ignore[attr-defined]
        if fields != spec["fields"]:
            problems.append(f"{name}._fields_ {fields} is {spec['fields']}")
    return problems


def _function_problems(name: str, function: Any, spec: dict[str, Any]) -> list[str]:
    if name not in spec["functions"]:
        # Private helpers of the fake are its own business; public names must be real.
        return [] if name.startswith("_") else [f"function {name} is not in the real module"]
    real = spec["functions"][name]
    return (
        [] if _parameters(function) == real else [f"{name}{_parameters(function)} is {name}{real}"]
    )


def _constant_problems(module: str, name: str, value: float, spec: dict[str, Any]) -> list[str]:
    if name.startswith("DCGM_ST_") or "_version" in name:
        return []  # the extraction missed return codes and struct versions
    computed = COMPUTED.get(module, {})
    expected = computed[name] if name in computed else spec["constants"].get(name)
    if name.startswith("_"):
        return []  # the fake's own, or module state such as the library's init count
    if expected is None:
        return [f"constant {name} is not in the real module"]
    if value != expected or type(value) is not type(expected):
        return [f"constant {name} = {value!r}, not {expected!r}"]
    return []


def problems(module: types.ModuleType, spec: dict[str, Any]) -> list[str]:
    """Every way ``module`` differs from the real module's ``spec``."""
    found = []
    for name, value in vars(module).items():
        if inspect.isfunction(value) and _own(module, value):
            found += _function_problems(name, value, spec)
        elif inspect.isclass(value) and _own(module, value):
            if name.startswith("DCGMError_") or issubclass(value, ctypes._CFuncPtr):
                continue  # generated per return code / CFUNCTYPE, as in the real module
            if name not in spec["classes"]:
                found.append(f"class {name} is not in the real module")
            else:
                found += _class_problems(name, value, spec["classes"][name])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found += _constant_problems(module.__name__, name, value, spec)
    return found


@pytest.mark.parametrize("name", MODULES)
def test_every_name_the_fake_defines_is_spelled_as_in_dcgm_4_6(modules, name):
    """Functions, parameters, classes, methods, struct fields and constants all match."""
    assert problems(modules[name], API[name]) == []


@pytest.mark.parametrize(("name", "functions"), CONTRACT.items())
def test_the_fake_has_everything_the_backend_calls(modules, name, functions):
    """Nothing of the API contract is missing."""
    assert [f for f in functions if not callable(getattr(modules[name], f, None))] == []


def test_the_check_catches_a_misnamed_parameter():
    """A fake function whose parameter is spelled differently fails the comparison."""
    fake = types.ModuleType("dcgm_agent")

    def dcgmGroupCreate(dcgm_handle, groupType, groupName):  # the real one says "type"
        return dcgm_handle, groupType, groupName

    dcgmGroupCreate.__module__ = "dcgm_agent"
    fake.dcgmGroupCreate = dcgmGroupCreate  # type: ignore[attr-defined]
    assert problems(fake, API["dcgm_agent"]) == [
        (
            "dcgmGroupCreate['dcgm_handle', 'groupType', 'groupName'] is "
            "dcgmGroupCreate['dcgm_handle', 'type', 'groupName']"
        )
    ]


def test_the_check_catches_wrong_struct_fields_and_constants():
    """A struct with a renamed field and a constant with a wrong value both fail."""
    fake = types.ModuleType("dcgm_structs")

    printable = type("_PrintableStructure", (ctypes.Structure,), {"__module__": "dcgm_structs"})
    fields = [("entityGroup", ctypes.c_uint32), ("entityId", ctypes.c_uint32)]
    pair = type(
        "c_dcgmGroupEntityPair_t", (printable,), {"_fields_": fields, "__module__": "dcgm_structs"}
    )
    fake.c_dcgmGroupEntityPair_t = pair  # type: ignore[attr-defined]
    fake.DCGM_MAX_NUM_GROUPS = 63  # type: ignore[attr-defined]
    assert problems(fake, API["dcgm_structs"]) == [
        (
            "c_dcgmGroupEntityPair_t._fields_ ['entityGroup', 'entityId'] is "
            "['entityGroupId', 'entityId']"
        ),
        "constant DCGM_MAX_NUM_GROUPS = 63, not 64",
    ]


def test_error_classes_are_named_from_their_codes(modules):
    """DCGM_ST_CONNECTION_NOT_VALID becomes DCGMError_ConnectionNotValid, and so on."""
    structs = modules["dcgm_structs"]
    for name in [n for n in dir(structs) if n.startswith("DCGM_ST_")]:
        words = "".join(w.capitalize() for w in name.removeprefix("DCGM_ST_").split("_"))
        cls = getattr(structs, f"DCGMError_{words}")
        code = getattr(structs, name)
        assert structs.dcgmExceptionClass(code) is cls
        assert type(structs.DCGMError(code)) is cls
        assert cls().value == code
    assert structs.DCGMError_ConnectionNotValid().value == -21
    assert structs.DCGMError_3rdPartyLibraryError().value == -48
