"""The simulated fleet as an importable ``pynvml`` module (migexporter.sim.pynvml_module).

Checked against the real nvidia-ml-py module and against NVML tools written elsewhere (nvitop's
library API and gpustat), each run in a child process where ``import pynvml`` gives the module.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import re
import subprocess
import sys
import textwrap
import types
from typing import Any

import pynvml
import pytest

from manual_clock import ManualClock
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
        module.nvmlDeviceGetVbiosVersion(device)
    assert caught.value.value == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert "nvmlDeviceGetVbiosVersion" in str(caught.value)
    with pytest.raises(SimulatorFunctionNotFound, match="nvmlDeviceGetVbiosVersion_v2"):
        module._nvmlGetFunctionPointer("nvmlDeviceGetVbiosVersion_v2")


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
        "nvmlDeviceGetVbiosVersion",  # behind pynvml's convertStrBytes decorator
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


class _ProcessInfoV1(ctypes.Structure):
    """nvml.h's nvmlProcessInfo_v1_t: what the unversioned C functions fill."""

    _fields_ = (("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong))


def _processes(entries: Any, count: int) -> list[tuple[int, ...]]:
    """The first ``count`` process entries as (pid, memory, GI id, CI id)."""
    return [(e.pid, e.usedGpuMemory, e.gpuInstanceId, e.computeInstanceId) for e in entries[:count]]


def test_process_lists_follow_the_c_protocol() -> None:
    """Count in, count out; INSUFFICIENT_SIZE with the count needed; each version's layout."""
    module = build(FakeNvml(Fleet.from_spec(FLEET, clock=ManualClock())))
    module.nvmlInit()
    parent = module.nvmlDeviceGetHandleByIndex(0)  # three MIG devices, three processes
    expected = _processes(module.nvmlDeviceGetComputeRunningProcesses(parent), 3)
    assert len(expected) == 3
    for version in ("_v2", "_v3"):
        entry = module._nvmlGetFunctionPointer(f"nvmlDeviceGetComputeRunningProcesses{version}")
        count = ctypes.c_uint(0)
        assert entry(parent, ctypes.byref(count), None) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        assert count.value == 3
        short = (pynvml.c_nvmlProcessInfo_v2_t * 2)()
        count.value = 2
        assert entry(parent, ctypes.byref(count), short) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        assert count.value == 3
        room = (pynvml.c_nvmlProcessInfo_v2_t * 5)()
        count.value = 5
        assert entry(parent, ctypes.byref(count), room) == pynvml.NVML_SUCCESS
        assert count.value == 3
        assert _processes(room, count.value) == expected
    legacy = (_ProcessInfoV1 * 3)()
    count = ctypes.c_uint(3)
    entry = module._nvmlGetFunctionPointer("nvmlDeviceGetComputeRunningProcesses")
    assert entry(parent, ctypes.byref(count), legacy) == pynvml.NVML_SUCCESS
    assert [(e.pid, e.usedGpuMemory) for e in legacy] == [p[:2] for p in expected]
    for kind in ("Graphics", "MPSCompute"):  # none: SUCCESS and a count of 0 at once
        entry = module._nvmlGetFunctionPointer(f"nvmlDeviceGet{kind}RunningProcesses_v3")
        count = ctypes.c_uint(0)
        assert entry(parent, ctypes.byref(count), None) == pynvml.NVML_SUCCESS
        assert count.value == 0


def test_the_parents_process_list_needs_privileges_as_c_too() -> None:
    fleet = Fleet.from_spec(FLEET)
    module = build(FakeNvml(fleet, privileged=False))
    module.nvmlInit()
    entry = module._nvmlGetFunctionPointer("nvmlDeviceGetComputeRunningProcesses_v3")
    count = ctypes.c_uint(0)
    parent = module.nvmlDeviceGetHandleByIndex(0)
    assert entry(parent, ctypes.byref(count), None) == pynvml.NVML_ERROR_NO_PERMISSION
    mig = module.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    assert entry(mig, ctypes.byref(count), None) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 1


def test_real_pynvml_reads_through_the_c_entry_points(
    module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-ml-py's own wrappers, run over the simulated entry points, agree with the fake."""
    module.nvmlInit()
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", module._nvmlGetFunctionPointer)
    parent = module.nvmlDeviceGetHandleByIndex(0)
    mig = module.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    a100 = module.nvmlDeviceGetHandleByIndex(1)
    for handle in (parent, mig, a100):
        ours = module.nvmlDeviceGetComputeRunningProcesses(handle)
        for real in (
            pynvml.nvmlDeviceGetComputeRunningProcesses,
            pynvml.nvmlDeviceGetComputeRunningProcesses_v2,
        ):
            assert [vars(p) for p in real(handle)] == [vars(p) for p in ours]
        assert pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle) == []
        assert pynvml.nvmlDeviceGetMPSComputeRunningProcesses(handle) == []
    sensor = pynvml.NVML_TEMPERATURE_GPU
    assert pynvml.nvmlDeviceGetTemperatureV(a100, sensor) == module.nvmlDeviceGetTemperature(
        a100, sensor
    )
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetTemperatureV(a100, 99)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetTemperatureV(mig, sensor)
    found = pynvml.nvmlDeviceGetHandleByPciBusId("0000:2a:00.0")
    assert module.nvmlDeviceGetUUID(found) == module.nvmlDeviceGetUUID(a100)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByPciBusId("0000:99:00.0")


def _run(program: str, *, frozen: bool = False) -> subprocess.CompletedProcess[str]:
    """``program`` in a child Python whose ``pynvml`` is the module over FLEET.

    ``frozen`` stops the fleet's clock at its start, so that another fleet built from FLEET
    with the same clock answers the same load-dependent values (memory in use).
    """
    clock = ", clock=lambda: 0.0" if frozen else ""
    prelude = f"""
        from migexporter.sim import Fleet
        from migexporter.sim.pynvml_module import install
        install(Fleet.from_spec({FLEET!r}{clock}))
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
                print(" ", mig.name(), mig.uuid(), mig.gpu_instance_id(),
                      mig.compute_instance_id(), mig.memory_total())
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
                f"  {nv.nvmlDeviceGetName(handle)} {nv.nvmlDeviceGetUUID(handle)} "
                f"{nv.nvmlDeviceGetGpuInstanceId(handle)} "
                f"{nv.nvmlDeviceGetComputeInstanceId(handle)} "
                f"{nv.nvmlDeviceGetMemoryInfo(handle).total}"
            )
    assert result.stdout.splitlines() == expected
    assert sum(" MIG-" in line for line in expected) == 3


def test_gpustat_queries_and_prints_every_gpu() -> None:
    result = _run("""
        import gpustat
        gpustat.new_query().print_formatted()
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[0] NVIDIA H100 80GB HBM3" in lines[1]
    assert "[1] NVIDIA A100-SXM4-40GB" in lines[2]


def _expected_processes() -> list[str]:
    """One line per process of the frozen FLEET: device UUID, pid, bytes, GI id, CI id.

    As nvitop prints them: it shows the ids of a process outside MIG (0xFFFFFFFF) as N/A.
    """
    nv = FakeNvml(Fleet.from_spec(FLEET, clock=lambda: 0.0))
    nv.nvmlInit()
    shown = {0xFFFFFFFF: "N/A"}
    return [
        f"{nv.nvmlDeviceGetUUID(leaf)} {p.pid} {p.usedGpuMemory} "
        f"{shown.get(p.gpuInstanceId, p.gpuInstanceId)} "
        f"{shown.get(p.computeInstanceId, p.computeInstanceId)}"
        for leaf in _leaves(nv)
        for p in nv.nvmlDeviceGetComputeRunningProcesses(leaf)
    ]


def _leaves(nv: FakeNvml) -> list[Any]:
    """The leaf devices, as nvitop walks them: MIG devices, or the GPU without MIG."""
    leaves = []
    for index in range(nv.nvmlDeviceGetCount()):
        gpu = nv.nvmlDeviceGetHandleByIndex(index)
        if nv.nvmlDeviceGetMigMode(gpu)[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
            leaves.append(gpu)
            continue
        for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(gpu)):
            try:
                leaves.append(nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot))
            except pynvml.NVMLError_NotFound:
                continue
    return leaves


def test_nvitops_devices_list_their_processes_with_gpu_memory() -> None:
    result = _run(
        """
        from nvitop import Device
        for device in Device.all():
            leaves = device.mig_devices() if device.is_mig_mode_enabled() else [device]
            for leaf in leaves:
                for pid, process in sorted(leaf.processes().items()):
                    print(leaf.uuid(), pid, process.gpu_memory(), process.gpu_instance_id(),
                          process.compute_instance_id())
        """,
        frozen=True,
    )
    assert result.returncode == 0, result.stderr
    expected = _expected_processes()
    assert result.stdout.splitlines() == expected
    assert len(expected) == 4  # three MIG devices and the A100


def test_nvitop_once_lists_the_processes_without_a_traceback() -> None:
    result = _run("""
        import sys
        from nvitop.cli import main
        sys.argv = ["nvitop", "--once"]
        sys.exit(main())
    """)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    pids = [line.split()[1] for line in _expected_processes()]
    for pid in pids:  # a row of nvitop's process table: "│ 0:1 3277626 C ..."
        assert re.search(rf"│ +\S+ +{pid} C ", result.stdout), result.stdout


def test_gpustat_reports_each_gpus_processes() -> None:
    """gpustat drops pids the host does not have (psutil.NoSuchProcess), and the simulated ones
    exist on no host: the child hands gpustat its own process for each, to see what it reads."""
    result = _run(
        """
        import json, os, psutil, gpustat
        host_process = psutil.Process
        psutil.Process = lambda pid: host_process(os.getpid())
        print(json.dumps(gpustat.new_query().jsonify(), default=str))
        """,
        frozen=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    listed = {
        gpu["uuid"]: [(p["pid"], p["gpu_memory_usage"]) for p in gpu["processes"]]
        for gpu in report["gpus"]
    }
    nv = FakeNvml(Fleet.from_spec(FLEET, clock=lambda: 0.0))
    nv.nvmlInit()
    expected = {}
    for index in range(nv.nvmlDeviceGetCount()):
        gpu = nv.nvmlDeviceGetHandleByIndex(index)
        processes = nv.nvmlDeviceGetComputeRunningProcesses(gpu)  # the parent: every MIG device's
        expected[nv.nvmlDeviceGetUUID(gpu)] = [(p.pid, p.usedGpuMemory >> 20) for p in processes]
    assert listed == expected
    assert [len(processes) for processes in listed.values()] == [3, 1]
