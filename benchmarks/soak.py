"""Soak: ten minutes of 100 ms sampling, 20 concurrent scrapers and a fault every 30 seconds,
measured after ten minutes of the same as a warm-up.

Usage: python benchmarks/soak.py [--quick] [--seconds N] [--warmup N] [--backend nvml|dcgm]

Starts the exporter on 8 simulated H100s with seven 1g.10gb GPU instances each, sampling every
100 ms. Twenty scraper threads each ask for /metrics (gzip, as Prometheus does) ten times a
second. Every 30 seconds the next fault of FAULTS is injected and, where it has one, undone
halfway to the next: a hung GPU, a GPU off the bus, NVML shut down under the exporter, a MIG
reconfiguration, an XID storm, and with DCGM the host engine lost. Every 10 seconds the
exporter's resident memory, open file descriptors and threads are read from /proc.

Growth is measured from the end of the warm-up, as the end minus the warm-up value and as the
slope of a least-squares line through the samples after it; the JSON also has the slope of
every WINDOW_S window. The warm-up is long because resident memory climbs in steps at the
first faults of each kind for several minutes (allocator high-water marks: a 30-minute run
flattened from 0.35 MiB/min in its first ten minutes to 0.003 in its last ten), which is not
a leak; a leak keeps climbing every window. Prints JSON on stdout and a summary on stderr.
Targets: after the warm-up, memory grows less than 1% and descriptors not at all.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from harness import (
    CANNOT_RUN,
    FLEET_8X7,
    BenchmarkError,
    Server,
    get,
    post_json,
    report,
    start_exporter,
)

SECONDS, WARMUP_S, FAULT_EVERY_S = 1200.0, 600.0, 30.0
WINDOW_S = 600.0
QUICK_SECONDS, QUICK_WARMUP_S, QUICK_FAULT_EVERY_S = 8.0, 2.0, 1.0
SCRAPERS = 20
SCRAPE_EVERY_S = 0.1  # per scraper
SAMPLE_S = 10.0
QUICK_SAMPLE_S = 1.0
TARGET_RSS_GROWTH_PCT = 1.0
MIB = 1 << 20
LAYOUTS = (["3g.40gb", "3g.40gb"], ["1g.10gb*7"])

# (fault, its undo or None); GPU faults on GPUs 1-3, MIG changes on GPU 0.
FAULTS: tuple[tuple[dict[str, Any], dict[str, Any] | None], ...] = (
    ({"kind": "hang", "gpu": 1}, {"kind": "recover", "gpu": 1}),
    ({"kind": "fall_off_bus", "gpu": 2}, {"kind": "recover", "gpu": 2}),
    ({"kind": "nvml_shutdown"}, None),
    ({"mig": 0}, {"mig": 1}),
    ({"xid": 13, "gpu": 3, "count": 1000}, None),
    ({"kind": "hostengine_down"}, {"kind": "hostengine_up"}),
)


class Scrapers:
    """SCRAPERS threads asking for /metrics until stopped; counts answers by status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: dict[str, int] = {}
        self.threads = [
            threading.Thread(target=self._run, name=f"scraper-{i}", daemon=True)
            for i in range(SCRAPERS)
        ]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY_S):
            try:
                get(self.url, headers={"Accept-Encoding": "gzip"}, timeout=10)
                status = "200"
            except urllib.error.HTTPError as error:
                status = str(error.code)
            except OSError as error:
                status = type(error).__name__
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1


def _inject(server: Server, fault: dict[str, Any]) -> None:
    if "mig" in fault:
        body = {"gpu": 0, "profiles": LAYOUTS[fault["mig"]]}
        post_json(server.url + "/api/sim/mig", body)
    elif "xid" in fault:
        post_json(server.url + "/api/sim/xid", fault)
    else:
        post_json(server.url + "/api/sim/fault", fault)


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; 0 with under two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60


def _windows(samples: list[dict[str, float]], width: float) -> list[dict[str, float]]:
    """Slope and mean of resident memory in consecutive windows of ``width`` seconds."""
    out = []
    start = 0.0
    while start < samples[-1]["t_s"]:
        points = [(s["t_s"], s["rss_mib"]) for s in samples if start <= s["t_s"] < start + width]
        if points:
            out.append(
                {
                    "from_s": start,
                    "to_s": start + width,
                    "rss_mean_mib": round(sum(v for _, v in points) / len(points), 2),
                    "rss_slope_mib_per_min": round(_slope_per_min(points), 3),
                }
            )
        start += width
    return out


def _kind(fault: dict[str, Any]) -> str:
    return str(fault.get("kind") or ("mig" if "mig" in fault else "xid"))


def _fds(server: Server) -> int:
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def _threads(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Plan:
    """How long, how often, and which backend's faults."""

    seconds: float
    warmup: float
    fault_every: float
    sample_every: float
    dcgm: bool


def soak(server: Server, plan: Plan) -> dict[str, Any]:
    """Run the load and the faults for the plan's seconds; sample the process as it says."""
    seconds, warmup, fault_every = plan.seconds, plan.warmup, plan.fault_every
    sample_every = plan.sample_every
    faults = [f for f in FAULTS if plan.dcgm or f[0].get("kind") != "hostengine_down"]
    began = time.monotonic()
    samples: list[dict[str, float]] = []
    injected: list[dict[str, Any]] = []
    next_fault, next_sample, pending_undo = began + fault_every, began, None
    with Scrapers(server.metrics_url()) as scrapers:
        while (now := time.monotonic()) < began + seconds:
            if server.process.poll() is not None:
                raise BenchmarkError(f"the exporter exited with {server.process.returncode}")
            if now >= next_sample:
                samples.append(
                    {
                        "t_s": round(now - began, 1),
                        "rss_mib": round(server.rss_bytes() / MIB, 2),
                        "fds": _fds(server),
                        "threads": _threads(server),
                    }
                )
                next_sample += sample_every
            if pending_undo is not None and now >= pending_undo[1]:
                _inject(server, pending_undo[0])
                pending_undo = None
            if now >= next_fault:
                fault, undo = faults[len(injected) % len(faults)]
                _inject(server, fault)
                injected.append(fault)
                if undo is not None:
                    pending_undo = (undo, now + fault_every / 2)
                next_fault += fault_every
            time.sleep(0.05)
        if pending_undo is not None:
            _inject(server, pending_undo[0])
    after = [s for s in samples if s["t_s"] >= warmup] or samples[-1:]
    first, last = after[0], samples[-1]
    return {
        "seconds": seconds,
        "warmup_s": warmup,
        "fault_every_s": fault_every,
        "faults_injected": len(injected),
        "fault_kinds": sorted({_kind(f) for f in injected}),
        "scrapers": SCRAPERS,
        "scrape_every_s": SCRAPE_EVERY_S,
        "answers": dict(sorted(scrapers.statuses.items())),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_warmup_mib": first["rss_mib"],
        "rss_end_mib": last["rss_mib"],
        "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "rss_growth_after_warmup_pct": round(
            (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] * 100, 2
        ),
        "rss_slope_after_warmup_mib_per_min": round(
            _slope_per_min([(s["t_s"], s["rss_mib"]) for s in after]), 3
        ),
        "windows": _windows(samples, WINDOW_S if seconds >= 2 * WINDOW_S else seconds / 4),
        "fds_after_warmup": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "threads_end": last["threads"],
        "threads_max": max(s["threads"] for s in samples),
        "series": samples,
    }


def main() -> int:
    """Soak, print the figures, and say in one line whether the targets were met."""
    args = _arguments()
    quick = args.quick
    seconds = QUICK_SECONDS if quick else args.seconds
    warmup = QUICK_WARMUP_S if quick else args.warmup
    fault_every = QUICK_FAULT_EVERY_S if quick else FAULT_EVERY_S
    sample_every = QUICK_SAMPLE_S if quick else SAMPLE_S
    try:
        import tempfile  # noqa: PLC0415

        with (
            tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
            start_exporter(
                FLEET_8X7, Path(tmp), "--backend", args.backend, interval="100ms"
            ) as server,
        ):
            plan = Plan(seconds, warmup, fault_every, sample_every, dcgm=args.backend == "dcgm")
            figures = soak(server, plan)
    except (BenchmarkError, OSError) as error:
        print(f"soak: {error}", file=sys.stderr)
        return CANNOT_RUN
    growth = figures["rss_growth_after_warmup_pct"]
    met = {
        "rss": growth < TARGET_RSS_GROWTH_PCT,
        "fds": figures["fds_end"] <= figures["fds_after_warmup"],
        "answers": set(figures["answers"]) <= {"200"},
    }
    figures |= {
        "fleet": FLEET_8X7,
        "backend": args.backend,
        "interval": "100ms",
        "targets": {"rss_growth_pct": TARGET_RSS_GROWTH_PCT, **met, "met": all(met.values())},
    }
    summary = [
        (
            f"{seconds:g}s, {figures['faults_injected']} faults, answers {figures['answers']}: "
            f"RSS {figures['rss_after_warmup_mib']:.1f} MiB after {warmup:g}s -> "
            f"{figures['rss_end_mib']:.1f} at the end ({growth:+.2f}%, slope "
            f"{figures['rss_slope_after_warmup_mib_per_min']:+.3f} MiB/min); descriptors "
            f"{figures['fds_after_warmup']} -> {figures['fds_end']} (max {figures['fds_max']})"
        ),
        f"targets {'met' if all(met.values()) else 'MISSED'}: {met}",
    ]
    report("soak", figures, summary)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g}s, faults every second"
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the run")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_S, help="seconds before growth counts"
    )
    parser.add_argument("--backend", choices=("nvml", "dcgm"), default="nvml")
    args = parser.parse_args()
    if args.seconds < FAULT_EVERY_S or not 0 <= args.warmup < args.seconds:
        parser.error(f"need --seconds >= {FAULT_EVERY_S:g} and 0 <= --warmup < --seconds")
    return args


if __name__ == "__main__":
    sys.exit(main())
