"""The simulated fleet as an importable ``pynvml`` module (migexporter.sim.pynvml_module).

Checked against the real nvidia-ml-py module and against NVML tools written elsewhere (nvitop's
library API and gpustat), each run in a child process where ``import pynvml`` gives the module.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import types

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet
from migexporter.sim.pynvml_module import SimulatorFunctionNotFound, build, library_functions

FLEET = "h100-80gb:3g.40gb+1g.10gb*2,a100-40gb"


@pytest.fixture
def module() -> types.ModuleType:
    return build(FakeNvml(Fleet.from_spec(FLEET)))


def test_it_is_a_module_with_every_name_of_the_real_one(module: types.ModuleType) -> None:
    assert isinstance(module, types.ModuleType)
    real = {name for name in vars(pynvml) if not name.startswith("__")}
    assert real <= set(vars(module))
    assert module.NVML_DEVICE_MIG_ENABLE == pynvml.NVML_DEVICE_MIG_ENABLE
    assert module.NVMLError_NotFound is pynvml.NVMLError_NotFound
    assert module.c_nvmlMemory_t is pynvml.c_nvmlMemory_t
    assert module.nvmlStructToFriendlyObject is pynvml.nvmlStructToFriendlyObject


def test_every_nvml_function_is_a_plain_function_as_tools_expect(module: types.ModuleType) -> None:
    """nvitop keeps only the nvml* names that are FunctionType; each real one must be there."""
    real = {n for n, v in vars(pynvml).items() if n.startswith("nvml") and inspect.isfunction(v)}
    kept = {n for n, v in vars(module).items() if n.startswith("nvml") and inspect.isfunction(v)}
    assert real <= kept


@pytest.mark.parametrize("name", sorted(n for n in dir(FakeNvml) if n.startswith("nvml")))
def test_implemented_functions_have_the_real_parameters(
    module: types.ModuleType, name: str
) -> None:
    real = inspect.signature(getattr(pynvml, name), follow_wrapped=True).parameters.values()
    ours = inspect.signature(getattr(module, name)).parameters.values()
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in real]


def test_it_answers_from_the_fleet(module: types.ModuleType) -> None:
    module.nvmlInit()
    assert module.nvmlDeviceGetCount() == 2
    device = module.nvmlDeviceGetHandleByIndex(0)
    assert module.nvmlDeviceGetMigMode(device)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
    assert module.nvmlDeviceGetName(module.nvmlDeviceGetHandleByIndex(1)) == "NVIDIA A100-SXM4-40GB"


def test_a_function_the_fake_lacks_raises_function_not_found_naming_it(
    module: types.ModuleType,
) -> None:
    module.nvmlInit()
    device = module.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound) as caught:
        module.nvmlDeviceGetSerial(device)
    assert caught.value.value == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert "nvmlDeviceGetSerial" in str(caught.value)
    with pytest.raises(SimulatorFunctionNotFound, match="nvmlDeviceGetSerial_v2"):
        module._nvmlGetFunctionPointer("nvmlDeviceGetSerial_v2")


def test_nothing_reaches_the_real_library(
    module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real library's loaders booby-trapped, every function that would reach it is
    ours: calling each raises our NVMLError (or answers from the fleet), never the trap."""

    def trap(*_args: object) -> None:
        raise AssertionError("the real NVIDIA library was reached")

    reaching = library_functions()
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", trap)
    monkeypatch.setattr(pynvml, "_LoadNvmlLibrary", trap)
    assert {
        "nvmlDeviceGetFanSpeed",
        "nvmlSystemGetCudaDriverVersion",
        "nvmlDeviceGetSerial",  # behind pynvml's convertStrBytes decorator
        "_LoadNvmlLibrary",
    } <= reaching
    module.nvmlInit()
    ours = {n for n in dir(FakeNvml) if n.startswith("nvml")} | {"_nvmlGetFunctionPointer"}
    for name in sorted(reaching - ours):
        with pytest.raises(SimulatorFunctionNotFound):
            getattr(module, name)()


def test_c_entry_points_write_through_the_callers_pointers(module: types.ModuleType) -> None:
    """Tools call some C functions themselves (nvitop: memory v2, field values, temperature)."""
    module.nvmlInit()
    device = module.nvmlDeviceGetHandleByIndex(1)
    memory = pynvml.c_nvmlMemory_v2_t()
    memory.version = pynvml.nvmlMemory_v2
    entry = module._nvmlGetFunctionPointer("nvmlDeviceGetMemoryInfo_v2")
    assert entry(device, pynvml.byref(memory)) == pynvml.NVML_SUCCESS
    assert (
        memory.total == module.nvmlDeviceGetMemoryInfo(device, version=pynvml.nvmlMemory_v2).total
    )
    temperature = pynvml.c_uint(0)
    entry = module._nvmlGetFunctionPointer("nvmlDeviceGetTemperature")
    assert entry(device, pynvml.c_uint(99), pynvml.byref(temperature)) == (
        pynvml.NVML_ERROR_INVALID_ARGUMENT
    )
    assert entry(device, pynvml.c_uint(0), pynvml.byref(temperature)) == pynvml.NVML_SUCCESS
    assert 20 <= temperature.value <= 100
    values = (pynvml.c_nvmlFieldValue_t * 2)()
    values[0].fieldId, values[1].fieldId = pynvml.NVML_FI_DEV_MEMORY_TEMP, 0
    entry = module._nvmlGetFunctionPointer("nvmlDeviceGetFieldValues")
    assert entry(device, pynvml.c_int32(2), pynvml.byref(values)) == pynvml.NVML_SUCCESS
    assert [v.nvmlReturn for v in values] == [
        pynvml.NVML_SUCCESS,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
    ]


def _run(program: str) -> subprocess.CompletedProcess[str]:
    """``program`` in a child Python whose ``pynvml`` is the module over FLEET."""
    prelude = f"""
        from migexporter.sim import Fleet
        from migexporter.sim.pynvml_module import install
        install(Fleet.from_spec({FLEET!r}))
    """
    source = textwrap.dedent(prelude) + textwrap.dedent(program)
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=False
    )


def test_nvitops_library_api_lists_every_mig_device() -> None:
    result = _run("""
        from nvitop import Device
        for device in Device.all():
            print(device.name(), device.is_mig_mode_enabled(), device.memory_total())
            for mig in device.mig_devices():
                print(" ", mig.uuid(), mig.gpu_instance_id(), mig.compute_instance_id(),
                      mig.memory_total())
    """)
    assert result.returncode == 0, result.stderr
    nv = FakeNvml(Fleet.from_spec(FLEET))  # the same fleet: UUIDs and sizes are seeded
    nv.nvmlInit()
    expected = []
    for index in range(nv.nvmlDeviceGetCount()):
        device = nv.nvmlDeviceGetHandleByIndex(index)
        mig = nv.nvmlDeviceGetMigMode(device)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        total = nv.nvmlDeviceGetMemoryInfo(device).total
        expected.append(f"{nv.nvmlDeviceGetName(device)} {mig} {total}")
        for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(device) if mig else 0):
            try:
                handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, slot)
            except pynvml.NVMLError_NotFound:
                continue
            expected.append(
                f"  {nv.nvmlDeviceGetUUID(handle)} {nv.nvmlDeviceGetGpuInstanceId(handle)} "
                f"{nv.nvmlDeviceGetComputeInstanceId(handle)} "
                f"{nv.nvmlDeviceGetMemoryInfo(handle).total}"
            )
    assert result.stdout.splitlines() == expected
    assert sum(line.startswith("  MIG-") for line in expected) == 3


def test_gpustat_queries_and_prints_every_gpu() -> None:
    result = _run("""
        import gpustat
        gpustat.new_query().print_formatted()
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[0] NVIDIA H100 80GB HBM3" in lines[1]
    assert "[1] NVIDIA A100-SXM4-40GB" in lines[2]
