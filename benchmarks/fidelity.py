"""The fake pynvml against the real one, call by call, on the same GPU model in the same mode.

Every function the simulator's FakeNvml implements is called, with the same arguments, on this
machine's GPU 0 through nvidia-ml-py and on a simulated GPU of the same model with MIG disabled.
Each call's outcome is reduced to what code written for pynvml can rely on: the exact NVMLError
class, or the type of the answer and, for ctypes structs (nested structs and arrays too), which
fields are set (non-zero). The values themselves are not compared: a temperature or a clock
differs by nature. A difference the simulator keeps on purpose is listed in EXPLAINED with the
reason; any other difference is a fidelity bug.

Functions that need a GPU or compute instance handle cannot be called on a GPU with MIG
disabled, which has none; they are reported as not called. Calls that would create a GPU
instance are made only after NVML has said MIG is disabled, where the driver refuses them.

Run on a GPU machine: python3 benchmarks/fidelity.py [--model KEY]. Prints one JSON object.
``--against-simulator`` compares two simulated GPUs instead: a check of the script, where every
call must behave alike.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pynvml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's simulator

from migexporter.sim import FakeNvml, Fleet
from migexporter.sim.profiles import MODELS

if TYPE_CHECKING:
    from collections.abc import Callable

CANNOT_RUN = 2
NO_SUCH_UUID = "GPU-00000000-0000-0000-0000-000000000000"
# nvmlGpuInstance*/nvmlComputeInstance* take a GPU or compute instance handle, and a GPU with
# MIG disabled has no instance to hand out.
NEEDS_AN_INSTANCE = (
    "nvmlComputeInstanceDestroy",
    "nvmlComputeInstanceGetInfo",
    "nvmlComputeInstanceGetInfo_v2",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceDestroy",
    "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlGpuInstanceGetInfo",
)
# Differences kept on purpose: call label -> why. The simulated GPU runs a workload while the
# real one idles, so whether a load-dependent value is zero differs by nature.
_LOAD = "the real GPU is idle, the simulated one runs its workload (values differ by nature)"
_NVLINK = (
    "the measured GPUs (an H200 and an H100) sat alone in pass-through VMs, where the driver "
    "answers NOT_SUPPORTED for NVLink; the simulated GPU has the links of an HGX board, which "
    "the exporter must handle too"
)
EXPLAINED: dict[str, str] = {
    "nvmlDeviceGetPciInfo(gpu)": (
        "the PCI address differs by nature: the measured VMs put the GPU at 00:06.0 (bus 0, "
        "device 6), the simulator each GPU at device 0 of its own bus"
    ),
    "nvmlDeviceGetFieldValues(gpu, [NVML_FI_DEV_PCIE_REPLAY_COUNTER])": (
        "PCIe replays differ by nature: a real link may have replayed since the driver loaded, "
        "the simulated counter counts only injected replays"
    ),
    "nvmlDeviceGetUtilizationRates(gpu)": _LOAD,
    "nvmlDeviceGetMemoryInfo(gpu, version=nvmlMemory_v2)": _LOAD + ": used memory",
    "nvmlDeviceGetViolationStatus(gpu, NVML_PERF_POLICY_POWER)": _LOAD + ": power-capped time",
    "nvmlDeviceGetFieldValues(gpu, [NVML_FI_DEV_PERF_POLICY_POWER])": _LOAD + ": power-capped time",
    "nvmlDeviceGetViolationStatus(gpu, NVML_PERF_POLICY_TOTAL_BASE_CLOCKS)": (
        _LOAD + ": time below base clocks"
    ),
    "nvmlGpmMetricsGet(sample1, sample2, [1, 2, 3, 5, 10, 11, 12, 13, 20, 21, 60, 61])": (
        _LOAD + ": the metrics' values (the idle real GPU still moves a little DRAM traffic)"
    ),
    "nvmlDeviceGetFieldValues(gpu, [NVML_FI_DEV_NVLINK_LINK_COUNT])": _NVLINK,
    "nvmlDeviceGetFieldValues(gpu, [(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS)])": _NVLINK,
    "nvmlDeviceGetFieldValues(gpu, [(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS)])": _NVLINK,
    "nvmlDeviceGetFieldValues(gpu, [NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX])": _NVLINK,
    "nvmlDeviceGetComputeRunningProcesses(gpu)": (
        _LOAD + ": the simulated workload is a process holding memory"
    ),
    "nvmlDeviceGetProcessUtilization(gpu, 0)": _LOAD + ": a busy process has samples",
}


@dataclass
class Context:
    """One library and the objects earlier calls handed out, by name."""

    lib: Any  # the pynvml module or a FakeNvml
    gpu: Any = None
    uuid: str = ""
    kept: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One call: a label naming the function and its arguments, and how to make it."""

    label: str
    make: Callable[[Context], Any]
    keep: str = ""  # store the answer under this name for later calls

    @property
    def function(self) -> str:
        return self.label.split("(", 1)[0]


def _placements(c: Context, profile_id: int) -> dict[str, Any]:
    array = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint(0)
    answer = c.lib.nvmlDeviceGetGpuInstancePossiblePlacements(
        c.gpu, profile_id, array, ctypes.byref(count)
    )
    return {"answer": answer, "count": count.value}


def _instances(c: Context, profile_id: int) -> dict[str, Any]:
    array = (pynvml.c_nvmlGpuInstance_t * 8)()
    count = ctypes.c_uint(0)
    answer = c.lib.nvmlDeviceGetGpuInstances(c.gpu, profile_id, array, ctypes.byref(count))
    return {"answer": answer, "count": count.value}


def _metrics(c: Context, ids: tuple[int, ...]) -> Any:
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(ids)
    request.sample1 = c.kept["sample1"]
    request.sample2 = c.kept["sample2"]
    for position, metric in enumerate(ids):
        request.metrics[position].metricId = metric
    return c.lib.nvmlGpmMetricsGet(request).metrics[: len(ids)]


def _lookup_and_utilization_calls() -> list[Call]:
    """Process utilization since 0 and since now, and handles by the GPU's own PCI bus id in
    each form nvml.h lists, and by an address no GPU has."""
    calls = [
        Call(
            f"nvmlDeviceGetProcessUtilization(gpu, {since})",
            lambda c, s=since: c.lib.nvmlDeviceGetProcessUtilization(
                c.gpu, 0 if s == "0" else time.time_ns() // 1000
            ),
        )
        for since in ("0", "now")
    ]
    bus_ids: dict[str, Callable[[str], str]] = {
        "busId": lambda bus_id: bus_id,
        "busId[4:]": lambda bus_id: bus_id[4:],
        "bus:device.function": lambda bus_id: bus_id.split(":", 1)[1],
        "domain:bus:device": lambda bus_id: bus_id.rsplit(".", 1)[0],
        "lowercase": lambda bus_id: bus_id.lower(),
        "unknown": lambda _: "0000:FF:1F.7",
    }
    calls += [
        Call(
            f"nvmlDeviceGetHandleByPciBusId({form})",
            lambda c, m=make: c.lib.nvmlDeviceGetHandleByPciBusId(
                m(str(c.lib.nvmlDeviceGetPciInfo(c.gpu).busId))
            ),
        )
        for form, make in bus_ids.items()
    ]
    return calls


def _calls() -> list[Call]:
    n = pynvml
    calls = [
        Call("nvmlInit()", lambda c: c.lib.nvmlInit()),
        Call("nvmlInitWithFlags(0)", lambda c: c.lib.nvmlInitWithFlags(0)),
        Call("nvmlShutdown()", lambda c: c.lib.nvmlShutdown()),
        Call("nvmlSystemGetDriverVersion()", lambda c: c.lib.nvmlSystemGetDriverVersion()),
        Call("nvmlSystemGetCudaDriverVersion()", lambda c: c.lib.nvmlSystemGetCudaDriverVersion()),
        Call("nvmlDeviceGetCount()", lambda c: c.lib.nvmlDeviceGetCount()),
        Call("nvmlDeviceGetHandleByIndex(0)", lambda c: c.lib.nvmlDeviceGetHandleByIndex(0)),
        Call(
            "nvmlDeviceGetHandleByIndex(count)",
            lambda c: c.lib.nvmlDeviceGetHandleByIndex(c.lib.nvmlDeviceGetCount()),
        ),
        Call("nvmlDeviceGetHandleByUUID(uuid)", lambda c: c.lib.nvmlDeviceGetHandleByUUID(c.uuid)),
        Call(
            "nvmlDeviceGetHandleByUUID(unknown)",
            lambda c: c.lib.nvmlDeviceGetHandleByUUID(NO_SUCH_UUID),
        ),
    ]
    simple = (
        "nvmlDeviceGetIndex",
        "nvmlDeviceGetMinorNumber",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetAttributes",
        "nvmlDeviceGetAttributes_v2",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetEncoderUtilization",
        "nvmlDeviceGetDecoderUtilization",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetPcieReplayCounter",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetSupportedClocksEventReasons",
        "nvmlDeviceGetSupportedEventTypes",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlGpmQueryDeviceSupport",
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPerformanceState",
        "nvmlDeviceGetPersistenceMode",
        "nvmlDeviceGetDisplayActive",
        "nvmlDeviceGetComputeMode",
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetCudaComputeCapability",
        "nvmlDeviceGetBAR1MemoryInfo",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses",
        "nvmlDeviceGetMPSComputeRunningProcesses",
        "nvmlDeviceGetDriverModel",
        "nvmlDeviceGetCurrentDriverModel",
        "nvmlDeviceGetPendingDriverModel",
        "nvmlDeviceGetDisplayMode",
        "nvmlDeviceGetSerial",
    )
    calls += [Call(f"{name}(gpu)", lambda c, f=name: getattr(c.lib, f)(c.gpu)) for name in simple]
    calls.append(
        Call(
            "nvmlDeviceGetMemoryInfo(gpu, version=nvmlMemory_v2)",
            lambda c: c.lib.nvmlDeviceGetMemoryInfo(c.gpu, version=n.nvmlMemory_v2),
        )
    )
    calls += _lookup_and_utilization_calls()
    for clock in ("GRAPHICS", "SM", "MEM", "VIDEO", "COUNT"):
        value = getattr(n, f"NVML_CLOCK_{clock}")
        calls += [
            Call(
                f"{function}(gpu, NVML_CLOCK_{clock})",
                lambda c, v=value, f=function: getattr(c.lib, f)(c.gpu, v),
            )
            for function in ("nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo")
        ]
    for sensor, value in (("NVML_TEMPERATURE_GPU", n.NVML_TEMPERATURE_GPU), ("7", 7)):
        calls.append(
            Call(
                f"nvmlDeviceGetTemperature(gpu, {sensor})",
                lambda c, v=value: c.lib.nvmlDeviceGetTemperature(c.gpu, v),
            )
        )
    for error in ("CORRECTED", "UNCORRECTED"):
        for counter in ("VOLATILE_ECC", "AGGREGATE_ECC"):
            args = (getattr(n, f"NVML_MEMORY_ERROR_TYPE_{error}"), getattr(n, f"NVML_{counter}"))
            calls.append(
                Call(
                    f"nvmlDeviceGetTotalEccErrors(gpu, {error}, {counter})",
                    lambda c, a=args: c.lib.nvmlDeviceGetTotalEccErrors(c.gpu, *a),
                )
            )
    for counter in ("TX_BYTES", "RX_BYTES"):
        value = getattr(n, f"NVML_PCIE_UTIL_{counter}")
        calls.append(
            Call(
                f"nvmlDeviceGetPcieThroughput(gpu, NVML_PCIE_UTIL_{counter})",
                lambda c, v=value: c.lib.nvmlDeviceGetPcieThroughput(c.gpu, v),
            )
        )
    for policy in ("POWER", "THERMAL", "SYNC_BOOST", "TOTAL_BASE_CLOCKS", "COUNT"):
        value = getattr(n, f"NVML_PERF_POLICY_{policy}")
        calls.append(
            Call(
                f"nvmlDeviceGetViolationStatus(gpu, NVML_PERF_POLICY_{policy})",
                lambda c, v=value: c.lib.nvmlDeviceGetViolationStatus(c.gpu, v),
            )
        )
    all_links = 0xFFFFFFFF
    fields = (
        ("NVML_FI_DEV_MEMORY_TEMP", 0),
        ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", 0),
        ("NVML_FI_DEV_PERF_POLICY_POWER", 0),
        ("NVML_FI_DEV_PERF_POLICY_THERMAL", 0),
        ("NVML_FI_DEV_NVLINK_LINK_COUNT", 0),
        ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", all_links),
        ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", all_links),
        ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", 0),
        ("NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", 0),
        ("NVML_FI_DEV_ECC_CURRENT", 0),
    )
    for name, scope in fields:
        label = name if scope == 0 else f"({name}, {'ALL_LINKS' if scope == all_links else scope})"
        item = getattr(n, name) if scope == 0 else (getattr(n, name), scope)
        calls.append(
            Call(
                f"nvmlDeviceGetFieldValues(gpu, [{label}])",
                lambda c, i=item: c.lib.nvmlDeviceGetFieldValues(c.gpu, [i])[0],
            )
        )
    for field_id in (0, n.NVML_FI_MAX):
        calls.append(
            Call(
                f"nvmlDeviceGetFieldValues(gpu, [{field_id}])",
                lambda c, i=field_id: c.lib.nvmlDeviceGetFieldValues(c.gpu, [i])[0],
            )
        )
    calls.append(
        Call(
            "nvmlDeviceGetFieldValues(gpu, [])", lambda c: c.lib.nvmlDeviceGetFieldValues(c.gpu, [])
        )
    )
    calls.append(
        Call(
            "nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)",
            lambda c: c.lib.nvmlDeviceGetMigDeviceHandleByIndex(c.gpu, 0),
        )
    )
    for profile in (n.NVML_GPU_INSTANCE_PROFILE_1_SLICE, n.NVML_GPU_INSTANCE_PROFILE_7_SLICE):
        calls += [
            Call(
                f"nvmlDeviceGetGpuInstanceProfileInfo(gpu, {profile})",
                lambda c, p=profile: c.lib.nvmlDeviceGetGpuInstanceProfileInfo(c.gpu, p),
            ),
            Call(
                f"nvmlDeviceGetGpuInstanceProfileInfoById(gpu, {profile})",
                lambda c, p=profile: c.lib.nvmlDeviceGetGpuInstanceProfileInfoById(c.gpu, p),
            ),
            Call(
                f"nvmlDeviceGetGpuInstanceRemainingCapacity(gpu, {profile})",
                lambda c, p=profile: c.lib.nvmlDeviceGetGpuInstanceRemainingCapacity(c.gpu, p),
            ),
            Call(
                f"nvmlDeviceGetGpuInstancePossiblePlacements(gpu, {profile}, array, &count)",
                lambda c, p=profile: _placements(c, p),
            ),
            Call(
                f"nvmlDeviceGetGpuInstances(gpu, {profile}, array, &count)",
                lambda c, p=profile: _instances(c, p),
            ),
        ]
    calls += [
        Call(
            "nvmlDeviceGetGpuInstanceProfileInfo(gpu, NVML_GPU_INSTANCE_PROFILE_COUNT)",
            lambda c: c.lib.nvmlDeviceGetGpuInstanceProfileInfo(
                c.gpu, n.NVML_GPU_INSTANCE_PROFILE_COUNT
            ),
        ),
        Call(
            "nvmlDeviceGetGpuInstanceById(gpu, 1)",
            lambda c: c.lib.nvmlDeviceGetGpuInstanceById(c.gpu, 1),
        ),
        # Refused by the driver while MIG is disabled (checked before these run).
        Call(
            "nvmlDeviceCreateGpuInstance(gpu, 0)",
            lambda c: c.lib.nvmlDeviceCreateGpuInstance(c.gpu, 0),
        ),
        Call(
            "nvmlDeviceCreateGpuInstanceWithPlacement(gpu, 0, &{start 0, size 1})",
            lambda c: c.lib.nvmlDeviceCreateGpuInstanceWithPlacement(
                c.gpu, 0, ctypes.byref(pynvml.c_nvmlGpuInstancePlacement_t(0, 1))
            ),
        ),
        Call("nvmlEventSetCreate()", lambda c: c.lib.nvmlEventSetCreate(), keep="events"),
        Call(
            "nvmlDeviceRegisterEvents(gpu, supported, events)",
            lambda c: c.lib.nvmlDeviceRegisterEvents(
                c.gpu, c.lib.nvmlDeviceGetSupportedEventTypes(c.gpu), c.kept["events"]
            ),
        ),
        Call(
            "nvmlDeviceRegisterEvents(gpu, 1 << 40, events)",
            lambda c: c.lib.nvmlDeviceRegisterEvents(c.gpu, 1 << 40, c.kept["events"]),
        ),
        Call("nvmlEventSetWait(events, 0)", lambda c: c.lib.nvmlEventSetWait(c.kept["events"], 0)),
        Call(
            "nvmlEventSetWait_v2(events, 10)",
            lambda c: c.lib.nvmlEventSetWait_v2(c.kept["events"], 10),
        ),
        Call("nvmlEventSetFree(events)", lambda c: c.lib.nvmlEventSetFree(c.kept["events"])),
        Call("nvmlGpmSampleAlloc()", lambda c: c.lib.nvmlGpmSampleAlloc(), keep="sample1"),
        Call("nvmlGpmSampleAlloc() again", lambda c: c.lib.nvmlGpmSampleAlloc(), keep="sample2"),
        Call(
            "nvmlGpmSampleGet(gpu, sample1)",
            lambda c: c.lib.nvmlGpmSampleGet(c.gpu, c.kept["sample1"]),
        ),
        Call(
            "nvmlGpmSampleGet(gpu, sample2)",
            lambda c: c.lib.nvmlGpmSampleGet(c.gpu, c.kept["sample2"]),
        ),
        Call(
            "nvmlGpmMetricsGet(sample1, sample2, [1, 2, 3, 5, 10, 11, 12, 13, 20, 21, 60, 61])",
            lambda c: _metrics(c, (1, 2, 3, 5, 10, 11, 12, 13, 20, 21, 60, 61)),
        ),
        Call(
            "nvmlGpmMigSampleGet(gpu, 1, sample1)",
            lambda c: c.lib.nvmlGpmMigSampleGet(c.gpu, 1, c.kept["sample1"]),
        ),
        Call("nvmlGpmSampleFree(sample1)", lambda c: c.lib.nvmlGpmSampleFree(c.kept["sample1"])),
        Call("nvmlGpmSampleFree(sample2)", lambda c: c.lib.nvmlGpmSampleFree(c.kept["sample2"])),
    ]
    return calls


CALLS = _calls()


def shape(value: Any) -> Any:
    """What pynvml code can rely on in an answer: its type and which struct fields are set."""
    if isinstance(value, ctypes.Structure | ctypes.Union):
        return {"type": type(value).__name__, "set": sorted(_set_fields(value, ""))}
    if isinstance(value, ctypes.Array):
        return {
            "type": f"{value._type_.__name__}[{len(value)}]",
            "items": [shape(v) for v in value],
        }
    if isinstance(value, list | tuple):
        return {"type": type(value).__name__, "items": [shape(v) for v in value]}
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return {"type": type(value).__name__}


def _set_fields(value: Any, prefix: str) -> list[str]:
    """Dotted names of the non-zero members of a ctypes struct; nested structs are walked."""
    found = []
    for name, *_ in value._fields_:
        member = getattr(value, name)
        if isinstance(member, ctypes.Structure):
            found += _set_fields(member, f"{prefix}{name}.")
        elif _nonzero(value, name):  # numbers, strings, arrays, unions and pointers alike
            found.append(prefix + name)
    return found


def _nonzero(owner: Any, name: str) -> bool:
    """Whether a field's bytes are not all zero (works for numbers, strings, unions, pointers)."""
    descriptor = getattr(type(owner), name)
    raw = ctypes.string_at(ctypes.addressof(owner) + descriptor.offset, descriptor.size)
    return any(raw)


def outcome(call: Call, context: Context) -> dict[str, Any]:
    """The call's outcome on one library: the NVMLError class, or the shape of its answer."""
    try:
        answer = call.make(context)
    except pynvml.NVMLError as error:
        return {"error": type(error).__name__}
    except Exception as error:
        return {"raised": f"{type(error).__name__}: {error}"}
    if call.keep:
        context.kept[call.keep] = answer
    return shape(answer)


def compare(real: Context, simulated: Context) -> dict[str, Any]:
    """Run every call on both libraries, in order; the report."""
    rows = []
    for call in CALLS:
        first, second = outcome(call, real), outcome(call, simulated)
        alike = first == second
        row: dict[str, Any] = {"call": call.label, "alike": alike, "real": first}
        if not alike:
            row["simulated"] = second
            if call.label in EXPLAINED:
                row["explained"] = EXPLAINED[call.label]
        rows.append(row)
    implemented = sorted(name for name in dir(FakeNvml) if name.startswith("nvml"))
    called = {call.function for call in CALLS}
    return {
        "calls": len(rows),
        "alike": sum(row["alike"] for row in rows),
        "explained": sum(not row["alike"] and "explained" in row for row in rows),
        "functions_implemented": len(implemented),
        "functions_called": len(called & set(implemented)),
        "not_called": dict.fromkeys(NEEDS_AN_INSTANCE, "needs a GPU or compute instance"),
        "uncovered": sorted(set(implemented) - called - set(NEEDS_AN_INSTANCE)),
        "rows": rows,
    }


GPM_IDS = (1, 2, 3, 5, 10, 11, 12, 13, 20, 21, 60, 61)
OBSERVED_FIELDS = (
    "NVML_FI_DEV_MEMORY_TEMP",
    "NVML_FI_DEV_PCIE_REPLAY_COUNTER",
    "NVML_FI_DEV_PERF_POLICY_POWER",
    "NVML_FI_DEV_PERF_POLICY_THERMAL",
    "NVML_FI_DEV_NVLINK_LINK_COUNT",
    "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION",
    "NVML_FI_DEV_ECC_CURRENT",
    "NVML_FI_DEV_ECC_PENDING",
)


def observe(c: Context) -> dict[str, Any]:
    """Values behind the shapes that the simulator should copy: GPM metric names and units,
    each field's latencyUsec and value type, unknown clock types, and how the time below base
    clocks grows on an idle GPU."""
    n = pynvml
    samples = [c.lib.nvmlGpmSampleAlloc(), c.lib.nvmlGpmSampleAlloc()]
    c.lib.nvmlGpmSampleGet(c.gpu, samples[0])
    time.sleep(0.2)
    c.lib.nvmlGpmSampleGet(c.gpu, samples[1])
    c.kept.update(sample1=samples[0], sample2=samples[1])
    metrics = {
        str(m.metricId): {
            "nvmlReturn": m.nvmlReturn,
            "info": [
                _text(m.metricInfo.shortName),
                _text(m.metricInfo.longName),
                _text(m.metricInfo.unit),
            ],
        }
        for m in _metrics(c, GPM_IDS)
    }
    for sample in samples:
        c.lib.nvmlGpmSampleFree(sample)
    fields = {}
    for name in OBSERVED_FIELDS:
        (value,) = c.lib.nvmlDeviceGetFieldValues(c.gpu, [getattr(n, name)])
        fields[name] = {
            "nvmlReturn": value.nvmlReturn,
            "valueType": value.valueType,
            "latencyUsec": value.latencyUsec,
            "ulVal": value.value.ullVal,
        }
    clocks = {}
    for clock in (n.NVML_CLOCK_COUNT, n.NVML_CLOCK_COUNT + 1, 99):
        try:
            clocks[str(clock)] = c.lib.nvmlDeviceGetClockInfo(c.gpu, clock)
        except n.NVMLError as error:
            clocks[str(clock)] = type(error).__name__
    base = n.NVML_PERF_POLICY_TOTAL_BASE_CLOCKS
    first = c.lib.nvmlDeviceGetViolationStatus(c.gpu, base)
    time.sleep(1.0)
    second = c.lib.nvmlDeviceGetViolationStatus(c.gpu, base)
    return {
        "gpm_metrics": metrics,
        "fields": fields,
        "clock_info_past_the_last_type": clocks,
        "below_base_clocks_ns_per_s_idle": (second.violationTime - first.violationTime)
        / ((second.referenceTime - first.referenceTime) / 1e6 or 1),
        "sm_clock_mhz_idle": c.lib.nvmlDeviceGetClockInfo(c.gpu, n.NVML_CLOCK_SM),
    }


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def open_library(lib: Any) -> Context:
    """Initialise a library and take its GPU 0."""
    lib.nvmlInit()
    gpu = lib.nvmlDeviceGetHandleByIndex(0)
    return Context(lib, gpu, str(lib.nvmlDeviceGetUUID(gpu)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="the simulated GPU model's key (default: the model named as GPU 0 is)"
    )
    parser.add_argument(
        "--against-simulator",
        action="store_true",
        help="compare two simulated GPUs (no GPU needed): a check of the script",
    )
    args = parser.parse_args()
    faulthandler.enable()  # a call that crashes the real library names itself
    if args.against_simulator:
        args.model = args.model or "h200-141gb"
        real = open_library(FakeNvml(Fleet.from_spec(args.model)))
    else:
        try:
            real = open_library(pynvml)
        except pynvml.NVMLError as error:
            print(f"fidelity: no NVIDIA driver here ({error})", file=sys.stderr)
            return CANNOT_RUN
    if args.model is None:
        name = str(real.lib.nvmlDeviceGetName(real.gpu))
        args.model = next((m.key for m in MODELS.values() if m.product == name), None)
        if args.model is None:
            print(
                f"fidelity: no simulated model is a {name}; choose one with --model",
                file=sys.stderr,
            )
            return CANNOT_RUN
    simulated = open_library(FakeNvml(Fleet.from_spec(args.model)))
    mig_mode = list(real.lib.nvmlDeviceGetMigMode(real.gpu))
    if mig_mode[0] != pynvml.NVML_DEVICE_MIG_DISABLE:
        print(
            f"fidelity: GPU 0 has MIG enabled ({mig_mode}); this compares MIG disabled",
            file=sys.stderr,
        )
        return CANNOT_RUN
    report = compare(real, simulated)
    report["observed"] = {"real": observe(real), "simulated": observe(simulated)}
    report = {
        "benchmark": "fidelity",
        "command": " ".join(["python3", "benchmarks/fidelity.py", *sys.argv[1:]]),
        "real_gpu": str(real.lib.nvmlDeviceGetName(real.gpu)),
        "driver": str(real.lib.nvmlSystemGetDriverVersion()),
        "nvidia_ml_py": metadata.version("nvidia-ml-py"),
        "simulated_model": args.model,
        "python": platform.python_version(),
        **report,
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    print(
        f"fidelity: {report['alike']} of {report['calls']} calls behave alike, "
        f"{report['explained']} differ by nature or deployment (explained), "
        f"{report['calls'] - report['alike'] - report['explained']} differ otherwise",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
