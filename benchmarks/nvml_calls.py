"""What each NVML call the NVML backend makes answers on this machine's GPU 0, and what it costs.

For every call: its first answer (the value, or the NVMLError class), and its mean cost over
repeated calls from one Python thread, in wall time (``us``) and in the thread's CPU time, user
and kernel (``cpu_us``): a call that waits on the GPU costs time but little CPU. GPM metrics
are read over one-second windows, idle and while a child process loads the GPU (bf16 matrix
products and host<->device copies), so that the answers can be checked for range and the
simulator for fidelity. Prints one JSON object.

Needs a real NVIDIA GPU and nvidia-ml-py; only reads the GPU. Run: python3 nvml_calls.py
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from functools import partial
from typing import Any

import pynvml as n

BUDGET_S = 0.3  # time spent timing one call
MIN_CALLS, MAX_CALLS = 5, 2000
GPM_WINDOW_S = 1.0
ALL_LINKS = 0xFFFFFFFF  # a field value's scope id meaning "every NVLink"
GPM_IDS = (
    1, 2, 3, 5, 10, 11, 12, 13, 20, 21, *range(30, 38), *range(40, 48), 60, 61, *range(166, 170)
)  # fmt: skip
# The requests the NVML backend makes per GPU, per GPU instance (and before device families).
GPM_REQUESTS = {
    "5 activity metrics": (1, 2, 3, 5, 10),
    "8 ratios, a GPU instance's": (1, 2, 3, 5, 10, 11, 12, 13),
    "12, a GPU's": (1, 2, 3, 5, 10, 11, 12, 13, 20, 21, 61, 60),
}
# The field values the backend reads in one call per GPU: (constant, scope id).
BACKEND_FIELDS = (
    ("NVML_FI_DEV_MEMORY_TEMP", 0),
    ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", 0),
    ("NVML_FI_DEV_PERF_POLICY_POWER", 0),
    ("NVML_FI_DEV_PERF_POLICY_THERMAL", 0),
    ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", ALL_LINKS),
    ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", ALL_LINKS),
)
LOAD = """
import sys, time, torch
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda"); b = torch.randn_like(a)
host = torch.empty(64 << 20, dtype=torch.uint8).pin_memory()
dev = torch.empty_like(host, device="cuda")
torch.mm(a, b); torch.cuda.synchronize(); print("started", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(10): torch.mm(a, b)
    dev.copy_(host); host.copy_(dev); torch.cuda.synchronize()
"""


def describe(value: Any) -> Any:
    """A JSON-friendly view of an NVML answer."""
    if isinstance(value, int | float | str | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    fields = getattr(value, "_fields_", None)
    if fields:
        return {name: describe(getattr(value, name)) for name, *_ in fields}
    return repr(value)


def field_value(fv: Any) -> Any:
    if fv.nvmlReturn != n.NVML_SUCCESS:
        return {"return": fv.nvmlReturn}
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}
    return {
        "type": fv.valueType,
        "value": getattr(fv.value, member.get(fv.valueType, "ullVal")),
        "uiVal": fv.value.uiVal,
    }


def read_fields(h: Any, fields: Any) -> list[Any]:
    """Field values by pynvml constant name and scope id, as JSON-friendly answers."""
    ids = [(getattr(n, name), scope) for name, scope in fields]
    return [field_value(v) for v in n.nvmlDeviceGetFieldValues(h, ids)]


def probe(call: Any) -> dict[str, Any]:
    """The call's first answer and its mean cost in microseconds, wall and CPU."""
    try:
        answer: Any = describe(call())
    except n.NVMLError as error:
        return {"error": type(error).__name__, **time_call(call, failing=True)}
    return {"answer": answer, **time_call(call)}


def time_call(call: Any, failing: bool = False) -> dict[str, float]:
    """Mean microseconds per call: wall (``us``) and this thread's CPU (``cpu_us``)."""
    count, start, cpu = 0, time.perf_counter(), time.thread_time()
    while count < MIN_CALLS or (time.perf_counter() - start < BUDGET_S and count < MAX_CALLS):
        try:
            call()
        except n.NVMLError:
            if not failing:
                raise
        count += 1
    wall_s, cpu_s = time.perf_counter() - start, time.thread_time() - cpu
    return {"us": round(wall_s / count * 1e6, 2), "cpu_us": round(cpu_s / count * 1e6, 2)}


def costs(name: str, call: Any) -> dict[str, float]:
    """``time_call`` as two flat entries, ``name_us`` and ``name_cpu_us``."""
    cost = time_call(call)
    return {f"{name}_us": cost["us"], f"{name}_cpu_us": cost["cpu_us"]}


def calls(h: Any) -> dict[str, Any]:
    """The calls the backend makes for the device families, by name."""
    return {
        "nvmlDeviceGetUtilizationRates": lambda: n.nvmlDeviceGetUtilizationRates(h),
        "nvmlDeviceGetEncoderUtilization": lambda: n.nvmlDeviceGetEncoderUtilization(h),
        "nvmlDeviceGetDecoderUtilization": lambda: n.nvmlDeviceGetDecoderUtilization(h),
        "nvmlDeviceGetPcieReplayCounter": lambda: n.nvmlDeviceGetPcieReplayCounter(h),
        "nvmlDeviceGetPcieThroughput(TX)": lambda: n.nvmlDeviceGetPcieThroughput(
            h, n.NVML_PCIE_UTIL_TX_BYTES
        ),
        "nvmlDeviceGetPcieThroughput(RX)": lambda: n.nvmlDeviceGetPcieThroughput(
            h, n.NVML_PCIE_UTIL_RX_BYTES
        ),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda: n.nvmlDeviceGetCurrentClocksEventReasons(
            h
        ),
        "nvmlDeviceGetSupportedClocksEventReasons": (
            lambda: n.nvmlDeviceGetSupportedClocksEventReasons(h)
        ),
        "nvmlDeviceGetViolationStatus(POWER)": lambda: n.nvmlDeviceGetViolationStatus(
            h, n.NVML_PERF_POLICY_POWER
        ),
        "nvmlDeviceGetViolationStatus(THERMAL)": lambda: n.nvmlDeviceGetViolationStatus(
            h, n.NVML_PERF_POLICY_THERMAL
        ),
        "nvmlDeviceGetMemoryInfo(v2)": lambda: n.nvmlDeviceGetMemoryInfo(
            h, version=n.nvmlMemory_v2
        ),
        **{
            f"nvmlDeviceGetFieldValues({name})": partial(read_fields, h, [(name, scope)])
            for name, scope in BACKEND_FIELDS
        },
        "nvmlDeviceGetFieldValues(the backend's batch)": partial(read_fields, h, BACKEND_FIELDS),
        "nvmlDeviceGetTemperature": lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetPowerUsage": lambda: n.nvmlDeviceGetPowerUsage(h),
        "nvmlDeviceGetTotalEnergyConsumption": lambda: n.nvmlDeviceGetTotalEnergyConsumption(h),
    }


def gpm(h: Any) -> dict[str, Any]:
    """Every GPM metric of GPM_IDS over one window, with the cost of the metrics call."""
    first, second = n.nvmlGpmSampleAlloc(), n.nvmlGpmSampleAlloc()
    try:
        n.nvmlGpmSampleGet(h, first)
        time.sleep(GPM_WINDOW_S)
        n.nvmlGpmSampleGet(h, second)
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(GPM_IDS)
        request.sample1, request.sample2 = first, second
        for slot, metric_id in enumerate(GPM_IDS):
            request.metrics[slot].metricId = metric_id
        n.nvmlGpmMetricsGet(request)
        metrics = {
            str(m.metricId): (round(m.value, 3) if m.nvmlReturn == 0 else {"return": m.nvmlReturn})
            for m in request.metrics[: len(GPM_IDS)]
        }
        cost = costs("nvmlGpmMetricsGet", lambda: n.nvmlGpmMetricsGet(request))
        for name, ids in GPM_REQUESTS.items():
            request.numMetrics = len(ids)
            for slot, metric_id in enumerate(ids):
                request.metrics[slot].metricId = metric_id
            cost |= costs(f"nvmlGpmMetricsGet({name})", lambda: n.nvmlGpmMetricsGet(request))
        cost |= costs("nvmlGpmSampleGet", lambda: n.nvmlGpmSampleGet(h, second))
    finally:
        n.nvmlGpmSampleFree(first)
        n.nvmlGpmSampleFree(second)
    return {"metrics": metrics, **cost}


def snapshot(h: Any) -> dict[str, Any]:
    return {"calls": {name: probe(call) for name, call in calls(h).items()}, "gpm": gpm(h)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-load", action="store_true", help="only the idle snapshot")
    args = parser.parse_args()
    n.nvmlInit()
    try:
        h = n.nvmlDeviceGetHandleByIndex(0)
        report: dict[str, Any] = {
            "benchmark": "nvml_calls",
            "gpu": n.nvmlDeviceGetName(h),
            "driver": n.nvmlSystemGetDriverVersion(),
            "nvml_bindings": getattr(n, "__version__", "?"),
            "mig_mode": describe(n.nvmlDeviceGetMigMode(h)),
            "python": platform.python_version(),
            "idle": snapshot(h),
        }
        if not args.no_load:
            with subprocess.Popen(
                [sys.executable, "-c", LOAD, "20"], stdout=subprocess.PIPE, text=True
            ) as load:
                assert load.stdout is not None
                load.stdout.readline()  # "started"
                time.sleep(2.0)
                report["loaded"] = snapshot(h)
                load.kill()
    finally:
        n.nvmlShutdown()
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
