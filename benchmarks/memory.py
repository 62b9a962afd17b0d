"""Memory: the exporter's resident memory after start and after minutes of 100 ms sampling.

Usage: python benchmarks/memory.py [--quick] [--seconds N] [--warmup N] [--interval DURATION]

Starts the exporter on 8 simulated H100s with seven 1g.10gb GPU instances each (NVML backend,
100 ms sampling), scrapes /metrics once a second as Prometheus would, and reads the process's
resident memory (VmRSS) after the first scrape, after --warmup seconds, every SAMPLE_S, and at
the end of --seconds. Growth is measured from the end of the warm-up, so that allocator pools,
caches and the first renders are not counted as a leak. Prints JSON on stdout and a summary on
stderr. Targets: under 80 MiB resident at 8 x 7, and under 5% growth after the warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from harness import (
    CANNOT_RUN,
    FLEET_8X7,
    BenchmarkError,
    Server,
    get,
    measure_exporter,
    report,
)

SECONDS, WARMUP_S = 600.0, 60.0
QUICK_SECONDS, QUICK_WARMUP_S = 5.0, 2.0
SCRAPE_S = 1.0
SAMPLE_S = 10.0
TARGET_RSS_MIB = 80.0
TARGET_GROWTH_PCT = 5.0
MIB = 1 << 20


def main() -> int:
    """Measure, print the figures, and say in one line whether the targets were met."""
    args = _arguments()
    seconds, warmup = (QUICK_SECONDS, QUICK_WARMUP_S) if args.quick else (args.seconds, args.warmup)
    figures = measure_exporter(
        "memory", args.interval, lambda server: measure(server, seconds, warmup)
    )
    if figures is None:
        return CANNOT_RUN
    peak = max(figures["rss_end_mib"], *(mib for _, mib in figures["series"]))
    growth = figures["growth_after_warmup_pct"]
    met = {"rss": peak < TARGET_RSS_MIB, "growth": growth < TARGET_GROWTH_PCT}
    figures |= {
        "fleet": FLEET_8X7,
        "backend": "nvml",
        "interval": args.interval,
        "rss_peak_sampled_mib": peak,
        "targets": {
            "rss_mib": TARGET_RSS_MIB,
            "growth_pct": TARGET_GROWTH_PCT,
            "rss_met": met["rss"],
            "growth_met": met["growth"],
            "met": all(met.values()),
        },
    }
    summary = [
        (
            f"8x7 GIs at {args.interval}, scraped every {SCRAPE_S:g}s for {seconds:g}s: RSS "
            f"{figures['rss_start_mib']:.1f} MiB after start, "
            f"{figures['rss_after_warmup_mib']:.1f} after {warmup:g}s, "
            f"{figures['rss_end_mib']:.1f} at the end (peak sampled {peak:.1f})"
        ),
        (
            f"growth after warm-up {growth:+.2f}% (target < {TARGET_GROWTH_PCT:g}%: "
            f"{'met' if met['growth'] else 'MISSED'}); resident < {TARGET_RSS_MIB:g} MiB: "
            f"{'met' if met['rss'] else 'MISSED'}"
        ),
    ]
    report("memory", figures, summary)
    return 0


def measure(server: Server, seconds: float, warmup: float) -> dict[str, Any]:
    """Scrape every SCRAPE_S for ``seconds``; RSS at start, after ``warmup``, every SAMPLE_S."""

    def rss_mib() -> float:
        if server.process.poll() is not None:
            raise BenchmarkError(f"the exporter exited with status {server.process.returncode}")
        return round(server.rss_bytes() / MIB, 2)

    get(server.metrics_url())
    start = rss_mib()
    began = time.monotonic()
    series: list[tuple[float, float]] = [(0.0, start)]
    after_warmup: float | None = None
    scrapes, next_sample = 1, began + SAMPLE_S
    for tick in range(1, int(seconds / SCRAPE_S) + 1):  # bounded: one scrape a tick
        time.sleep(max(began + tick * SCRAPE_S - time.monotonic(), 0.0))
        get(server.metrics_url())
        scrapes += 1
        now = time.monotonic()
        if after_warmup is None and now - began >= warmup:
            after_warmup = rss_mib()
        if now >= next_sample:
            series.append((round(now - began, 1), rss_mib()))
            next_sample += SAMPLE_S
    end = rss_mib()
    if after_warmup is None:  # a warm-up as long as the run: growth is then measured from start
        after_warmup = start
    return {
        "seconds": seconds,
        "warmup_s": warmup,
        "scrapes": scrapes,
        "scrape_every_s": SCRAPE_S,
        "rss_start_mib": start,
        "rss_after_warmup_mib": after_warmup,
        "rss_end_mib": end,
        "growth_after_warmup_pct": round((end - after_warmup) / after_warmup * 100, 2),
        "series": series,
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SECONDS:g}s with a {QUICK_WARMUP_S:g}s warm-up",
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the run")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_S, help="seconds before growth counts"
    )
    parser.add_argument("--interval", default="100ms", help="the exporter's sampling interval")
    args = parser.parse_args()
    if args.seconds < SCRAPE_S or not 0 <= args.warmup <= args.seconds:
        parser.error("need --seconds >= 1 and 0 <= --warmup <= --seconds")
    return args


if __name__ == "__main__":
    sys.exit(main())
