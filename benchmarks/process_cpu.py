"""CPU of the whole exporter process on this machine's own GPUs, for one or more source trees.

Usage: python3 benchmarks/process_cpu.py [--seconds S] [--warmup S] [--repeat N]
                                         [--interval DURATION] [NAME=SRC_DIR ...]

Each tree's ``migexporter --backend nvml`` runs on the real driver (nothing simulated, nothing
subtracted: the NVML library's own CPU counts) for --warmup seconds, then its user plus system
CPU time (/proc) is taken over --seconds, with one scrape of /metrics every 15 s as a
Prometheus would make. The trees take turns, --repeat times, so that a shared host's drift
falls on all of them alike; the figure of each is the median of its runs, in percent of one
core. Without NAME=SRC_DIR it measures this checkout as "current". For example, against the
release before a change: git archive REV src | tar -x -C /tmp/before; then
python3 benchmarks/process_cpu.py before=/tmp/before/src current=src

Needs a real NVIDIA GPU; only reads it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pynvml
from harness import (
    CANNOT_RUN,
    LOOPBACK,
    SRC,
    BenchmarkError,
    child_env,
    free_port,
    get,
    report,
    start,
)

SCRAPE_EVERY_S = 15.0


def _tree(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not (Path(path) / "migexporter" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=SRC_DIR with migexporter in it")
    return name, Path(path).resolve()


def measure(source: Path, interval: str, warmup_s: float, seconds: float, log_dir: Path) -> float:
    """Percent of one core the exporter from ``source`` used over ``seconds``."""
    port = free_port()
    argv = [
        sys.executable, "-m", "migexporter", "--backend", "nvml", "--interval", interval,
        "--listen", f"{LOOPBACK}:{port}", "--log-level", "warning",
    ]  # fmt: skip
    # The tree under test instead of this checkout, beside whatever else the caller put there.
    env = {
        **child_env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
    }
    with start("migexporter", argv, port, log_dir / "exporter.log", "/-/ready", env=env) as server:
        time.sleep(warmup_s)
        before, began = server.cpu_seconds(), time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            get(server.metrics_url())
            time.sleep(min(SCRAPE_EVERY_S, seconds - elapsed))
        cpu = server.cpu_seconds() - before
        return 100.0 * cpu / (time.monotonic() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=_tree, metavar="NAME=SRC_DIR")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    trees = dict(args.trees) or {"current": SRC}
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as error:
        print(f"process_cpu: no NVIDIA driver here ({error})", file=sys.stderr)
        return CANNOT_RUN
    runs: dict[str, list[float]] = {name: [] for name in trees}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-process-cpu-") as tmp:
            for _ in range(args.repeat):
                for name, source in trees.items():
                    pct = measure(source, args.interval, args.warmup, args.seconds, Path(tmp))
                    runs[name].append(round(pct, 3))
    except (BenchmarkError, OSError) as error:
        print(f"process_cpu: {error}", file=sys.stderr)
        return CANNOT_RUN
    figures = {
        "interval": args.interval,
        "seconds": args.seconds,
        "trees": {name: str(path) for name, path in trees.items()},
        "pct_of_one_core": runs,
        "median_pct_of_one_core": {name: statistics.median(v) for name, v in runs.items()},
    }
    summary = [
        f"{name}: median {statistics.median(v):.3f}% of a core {v}" for name, v in runs.items()
    ]
    report("process_cpu", figures, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
