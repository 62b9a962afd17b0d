"""Slow driver: one GPU's driver calls hang; scrapes keep their latency, the other GPUs update.

Usage: python benchmarks/slow_driver.py [--quick] [--requests N] [--seconds S]

Starts the exporter on 8 simulated H100s with seven 1g.10gb GPU instances each (NVML backend,
1 s sampling) and, for --seconds, runs the same closed-loop load (16 clients, --requests each
time) back to back. Then it makes GPU 0's driver calls hang (POST /api/sim/fault
{"gpu": 0, "kind": "hang"}) and for another --seconds runs that load again while a watcher
scrapes every WATCH_S to see which GPUs' series still change, when GPU 0 shows
nvidia_gpu_up 0 and how long the collector went between cycles. GPU 0 is always recovered at
the end. Prints JSON on stdout and a summary on stderr. Verdict: the worst p99 of a load during
the hang within 2x of the worst before it, and every other GPU updated during the hang.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness import (
    CANNOT_RUN,
    FLEET_8X7,
    BenchmarkError,
    Server,
    get,
    labels,
    load,
    measure_exporter,
    post_json,
    report,
    series,
)

CLIENTS = 16
REQUESTS, QUICK_REQUESTS = 2000, 100
SECONDS, QUICK_SECONDS = 5.0, 3.0
HUNG_GPU = 0
WATCH_S = 0.1
RECOVER_TIMEOUT_S = 10.0
P99_RATIO_LIMIT = 2.0
# A GPU's own and its instances' sample lines: any of them changing shows a new sample landed.
GPU_LINE = re.compile(rb'^nvidia_[^{\n]*\{[^}\n]*\bgpu="(\d+)"[^\n]*$', re.MULTILINE)
UP = "nvidia_gpu_up"
LAST_COLLECT = "migexporter_last_collect_timestamp_seconds"


@dataclass
class Watch:
    """What scrapes during the hang showed: per GPU changes of its series, up values, cycle ends."""

    # GPU index -> hashes of its sample lines, each different from the one before
    states: dict[str, list[int]] = field(default_factory=dict)
    down_after_s: float | None = None  # from the hang to the first scrape with GPU 0 up == 0
    collect_ends: list[float] = field(default_factory=list)  # distinct last-collect timestamps
    scrapes: int = 0
    errors: list[str] = field(default_factory=list)

    def observe(self, body: bytes, since_hang: float) -> None:
        self.scrapes += 1
        lines: dict[str, list[bytes]] = {}
        for match in GPU_LINE.finditer(body):
            lines.setdefault(match.group(1).decode(), []).append(match.group(0))
        for gpu, its_lines in lines.items():
            states = self.states.setdefault(gpu, [])
            state = hash(tuple(its_lines))
            if not states or states[-1] != state:
                states.append(state)
        hung = next((v for k, v in series(body, UP).items() if dict(k)["gpu"] == str(HUNG_GPU)), 1)
        if hung == 0 and self.down_after_s is None:
            self.down_after_s = round(since_hang, 3)
        end = series(body, LAST_COLLECT).get(labels(backend="nvml"))
        if end is not None and (not self.collect_ends or self.collect_ends[-1] != end):
            self.collect_ends.append(end)


def watch(server: Server, hung_at: float, until: float, stop: threading.Event) -> Watch:
    """Scrape every WATCH_S until ``until`` (monotonic) or ``stop``; bounded by construction."""
    seen = Watch()
    while not stop.is_set() and time.monotonic() < until:
        try:
            seen.observe(get(server.metrics_url()), time.monotonic() - hung_at)
        except OSError as error:
            seen.errors.append(str(error))
        stop.wait(WATCH_S)
    return seen


def main() -> int:
    """Measure before and during the hang, print the figures and the verdict."""
    args = _arguments()
    requests = QUICK_REQUESTS if args.quick else args.requests
    seconds = QUICK_SECONDS if args.quick else args.seconds
    figures = measure_exporter(
        "slow_driver", args.interval, lambda server: measure(server, requests, seconds)
    )
    if figures is None:
        return CANNOT_RUN
    figures |= {"fleet": FLEET_8X7, "backend": "nvml", "interval": args.interval}
    report("slow_driver", figures, _summary(figures))
    return 0


def measure(server: Server, requests: int, seconds: float) -> dict[str, Any]:
    """Load before, hang GPU HUNG_GPU, load and watch during, recover (always)."""
    url = server.metrics_url()
    before = loads(url, requests, time.monotonic(), seconds)
    fault_url = server.url + "/api/sim/fault"
    stop = threading.Event()
    result: list[Watch] = []
    watcher: threading.Thread | None = None
    try:
        post_json(fault_url, {"gpu": HUNG_GPU, "kind": "hang"})
        hung_at = time.monotonic()
        watcher = threading.Thread(
            target=lambda: result.append(watch(server, hung_at, hung_at + seconds, stop)),
            name="slow-driver-watch",
        )
        watcher.start()
        during = loads(url, requests, hung_at, seconds)
        watcher.join(max(hung_at + seconds - time.monotonic(), 0) + 5.0)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5.0)
        post_json(fault_url, {"gpu": HUNG_GPU, "kind": "recover"})
    if not result:
        raise BenchmarkError("the watcher did not finish")
    seen = result[0]
    worst_before, worst = _worst(before), _worst(during)
    ratio = worst["p99_ms"] / worst_before["p99_ms"] if worst_before["p99_ms"] > 0 else math.inf
    others = sorted((g for g in seen.states if g != str(HUNG_GPU)), key=int)
    updated = [int(g) for g in others if len(seen.states[g]) > 1]
    stale = [int(g) for g in others if len(seen.states[g]) <= 1]
    gaps = [b - a for a, b in zip(seen.collect_ends, seen.collect_ends[1:], strict=False)]
    scrapes_ok = ratio <= P99_RATIO_LIMIT and not any(b["errors"] for b in before + during)
    others_ok = bool(others) and not stale and not seen.errors
    return {
        "before": before,
        "during": during,
        "before_worst": worst_before,
        "during_worst": worst,
        "p99_ratio": round(ratio, 2),
        "hang": {
            "gpu": HUNG_GPU,
            "watched_s": seconds,
            "watch_scrapes": seen.scrapes,
            "watch_errors": seen.errors[:5],
            "gpus_updated": updated,
            "gpus_stale": stale,
            "updates": {g: len(v) - 1 for g, v in sorted(seen.states.items())},
            "hung_gpu_up_0_after_s": seen.down_after_s,
            "collect_cycles_seen": len(seen.collect_ends),
            "longest_gap_between_cycles_s": round(max(gaps), 3) if gaps else None,
        },
        "recovered_after_s": _recovered(server),
        "verdict": {
            "p99_ratio_limit": P99_RATIO_LIMIT,
            "scrapes_kept_latency": scrapes_ok,
            "other_gpus_updated": others_ok,
            "hung_gpu_reported_down": seen.down_after_s is not None,
            "met": scrapes_ok and others_ok,
        },
    }


def loads(url: str, requests: int, since: float, seconds: float) -> list[dict[str, Any]]:
    """The same load back to back until ``seconds`` after ``since`` (monotonic); at least one."""
    batches: list[dict[str, Any]] = []
    while not batches or time.monotonic() < since + seconds:  # ends: each batch is bounded
        began = round(time.monotonic() - since, 3)
        batches.append({"started_s": began, **load(url, CLIENTS, requests)})
    return batches


def _worst(batches: list[dict[str, Any]]) -> dict[str, Any]:
    return max(batches, key=lambda batch: batch["p99_ms"])


def _recovered(server: Server) -> float | None:
    """Seconds until GPU HUNG_GPU shows nvidia_gpu_up 1 again, or None within the bound."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVER_TIMEOUT_S:
        ups = series(get(server.metrics_url()), UP)
        if any(dict(k)["gpu"] == str(HUNG_GPU) and v == 1 for k, v in ups.items()):
            return round(time.monotonic() - started, 3)
        time.sleep(WATCH_S)
    return None


def _summary(figures: dict[str, Any]) -> list[str]:
    before, during, hang = figures["before_worst"], figures["during_worst"], figures["hang"]
    verdict = figures["verdict"]
    return [
        (
            f"scrapes, {CLIENTS} clients, worst p99 of back-to-back loads: "
            f"{before['p99_ms']:.2f} ms before ({len(figures['before'])} loads), "
            f"{during['p99_ms']:.2f} ms with GPU "
            f"{HUNG_GPU} hung ({len(figures['during'])} loads): {figures['p99_ratio']:.2f}x, "
            f"limit {P99_RATIO_LIMIT:g}x"
        ),
        (
            f"GPUs updated during {hang['watched_s']:g}s of hang: {hang['gpus_updated']}, "
            f"stale: {hang['gpus_stale']}; GPU {HUNG_GPU} up=0 after "
            f"{hang['hung_gpu_up_0_after_s']} s; longest gap between cycles "
            f"{hang['longest_gap_between_cycles_s']} s; recovered after "
            f"{figures['recovered_after_s']} s"
        ),
        f"verdict: {'met' if verdict['met'] else 'MISSED'}",
    ]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few requests, a short hang")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="per load measurement")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long GPU 0 hangs")
    parser.add_argument("--interval", default="1s", help="the exporter's sampling interval")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
