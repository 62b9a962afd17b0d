"""XID latency: from a faulting CUDA call's error return to the XID counter on /metrics.

Usage: python benchmarks/xid_latency.py [--faults N] [--quick]

Starts the exporter on the real driver (NVML backend), then N times runs
tests/hardware/xid_fault.py, which raises XID 31 in its own process (no reset, no setting
changed), while scraping /metrics with a fresh request every millisecond. A fault's latency is
the time the first scrape showing the count went up was read, minus the time the child took
right after cuCtxSynchronize returned the error; it can be negative, since the driver delivers
the event before that call returns. Prints one JSON object on stdout and a summary on stderr;
exits 2, with one line, where there is no GPU to measure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

HARDWARE_TESTS = Path(__file__).resolve().parents[1] / "tests" / "hardware"
XID = 31
DEFAULT_FAULTS = 7
MIN_FAULTS = 5
TARGET_MEDIAN_MS = 20
POLL_S = 0.001
VISIBLE_TIMEOUT_S = 10.0
INTERVAL_S = 1.0  # the exporter's default: XIDs are counted as they arrive, whatever it is
CANNOT_RUN = 2


def main() -> int:
    """Measure, print the figures, and say in one line whether the target was met."""
    args = _arguments()
    machine = _gpu0()
    if isinstance(machine, str):
        print(f"xid_latency: {machine}", file=sys.stderr)
        return CANNOT_RUN
    name, uuid = machine
    sys.path.insert(0, str(HARDWARE_TESTS))
    try:  # the harness the hardware tests use: one way to start, scrape and fault
        import pytest  # noqa: PLC0415
        from gpu_harness import Exporter, fault_report, start_fault  # noqa: PLC0415
    except ImportError as error:
        print(f"xid_latency: cannot run here: {error}", file=sys.stderr)
        return CANNOT_RUN

    latencies: list[float] = []
    event_lags: list[float] = []  # when the exporter took the event, for where the time goes
    with tempfile.TemporaryDirectory(prefix="xid_latency-") as tmp:
        try:
            exporter = Exporter.start(Path(tmp) / "exporter.log", args.interval)
        except pytest.fail.Exception as error:
            print(f"xid_latency: {error}", file=sys.stderr)
            return 1
        try:
            for number in range(1, args.faults + 1):
                before = exporter.xid_count(uuid, XID)
                child = start_fault(uuid)
                seen = exporter.wait_for_xid(uuid, XID, before, VISIBLE_TIMEOUT_S, POLL_S)
                fault = fault_report(child)
                if seen is None:
                    print(
                        f"xid_latency: fault {number} (pid {fault.pid}) not counted within "
                        f"{VISIBLE_TIMEOUT_S:g}s\n--- exporter log ---\n{exporter.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
                latencies.append(round((seen[0] - fault.time) * 1000, 3))
                events = exporter.json("/api/events")
                newest = next((e for e in events if e.get("xid") == XID), None)
                if newest is not None:
                    event_lags.append(round((newest["timestamp"] - fault.time) * 1000, 3))
                time.sleep(0.1)  # the driver has torn the child's context down; let it settle
        except pytest.fail.Exception as error:
            print(f"xid_latency: {error}", file=sys.stderr)
            return 1
        finally:
            exporter.stop()

    median, worst = statistics.median(latencies), max(latencies)
    figures = {
        "benchmark": "xid_latency",
        "machine": name,
        "faults": args.faults,
        "latencies_ms": latencies,
        "median_ms": round(median, 3),
        "max_ms": worst,
        "target_median_ms": TARGET_MEDIAN_MS,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "exporter_event_lag_ms": event_lags,
        "poll_interval_ms": POLL_S * 1000,
        "exporter_interval_s": args.interval,
    }
    print(json.dumps(figures))
    verdict = "met" if median < TARGET_MEDIAN_MS else "MISSED"
    print(
        f"xid_latency: {args.faults} XID-{XID} faults on {name}: median {median:.3f} ms, "
        f"max {worst:.3f} ms (target median < {TARGET_MEDIAN_MS} ms: {verdict})",
        file=sys.stderr,
    )
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faults", type=int, default=None,
        help=f"faults to raise, at least {MIN_FAULTS} (default {DEFAULT_FAULTS})",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"only {MIN_FAULTS} faults")
    parser.add_argument(
        "--interval", type=float, default=INTERVAL_S,
        help=f"the exporter's collection interval in seconds (default {INTERVAL_S:g})",
    )  # fmt: skip
    args = parser.parse_args()
    if args.faults is None:
        args.faults = MIN_FAULTS if args.quick else DEFAULT_FAULTS
    if args.faults < MIN_FAULTS:
        parser.error(f"--faults must be at least {MIN_FAULTS}")
    return args


def _gpu0() -> tuple[str, str] | str:
    """GPU 0 as (name and driver version, uuid), or why there is none to measure."""
    try:
        import pynvml  # noqa: PLC0415
    except ImportError:
        return "no GPU to measure: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return f"no GPU to measure: no NVIDIA driver ({error})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "no GPU to measure: the NVIDIA driver sees no GPU"
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        model = _text(pynvml.nvmlDeviceGetName(handle))
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        return f"{model}, driver {driver}", _text(pynvml.nvmlDeviceGetUUID(handle))
    except pynvml.NVMLError as error:
        return f"no GPU to measure: GPU 0 does not answer ({error})"
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    """pynvml returns str, or bytes in older releases."""
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    sys.exit(main())
