"""Scrape latency and throughput: migexporter against the common way, in the same run.

Usage: python benchmarks/scrape.py [--quick] [--requests N] [--interval DURATION] [--compat P]

Simulated fleets of 1, 8 and 16 H100s with seven GPU instances each, and a worst case of 8 GPUs
with seven compute instances in one GPU instance, are scraped over loopback by 1, 16 and 64
concurrent keep-alive clients for a fixed number of requests, plain and gzip. The baseline is the
same collector on the same fleet and the same aiohttp server, rendering with prometheus-client's
generate_latest on every request (benchmarks/baseline_server.py). Prints JSON on stdout and a
summary on stderr.
Targets at 8 GPUs x 7 instances with 16 clients: p99 under 2 ms, and 20x the baseline's rps.
``--compat dcgm-exporter`` measures that fleet a second time with the compat families on too
(server "migexporter --compat"), against the same baseline, and judges both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import BenchmarkError, Server, load, report, start_baseline, start_exporter

SEVEN_GIS = "1g.10gb*7"
SEVEN_CIS = "7g.80gb/1c*7"  # seven GIs of seven CIs do not fit on a GPU: this is the most CIs
FLEETS = [(1, SEVEN_GIS), (8, SEVEN_GIS), (16, SEVEN_GIS), (8, SEVEN_CIS)]
CLIENTS = (1, 16, 64)
TARGET = {"gpus": 8, "layout": SEVEN_GIS, "clients": 16}
TARGET_P99_MS = 2.0
TARGET_RATIO = 20.0
COMPAT_SERVER = "migexporter --compat"


def spec(gpus: int, layout: str) -> str:
    return f"{gpus}*h100-80gb:{layout}"


def measure(server: Server, requests: int, clients: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for encoding in ("plain", "gzip"):
        for count in clients:
            n = max(requests, count)
            row = load(server.metrics_url(), count, n, gzip=encoding == "gzip")
            rows.append({"server": server.name, "encoding": encoding, **row})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small fleet, few requests")
    parser.add_argument("--requests", type=int, default=3000, help="per measurement")
    parser.add_argument(
        "--interval", default="1s", help="sampling interval of both servers (10m: scrapes alone)"
    )
    parser.add_argument(
        "--compat", metavar="PROFILE", help="also measure the target fleet with --compat PROFILE"
    )
    args = parser.parse_args()
    fleets = [(1, SEVEN_GIS)] if args.quick else FLEETS
    requests = 50 if args.quick else args.requests
    baseline_requests = 20 if args.quick else max(200, requests // 10)
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            for gpus, layout in fleets:
                where = {"gpus": gpus, "layout": layout}
                with start_exporter(
                    spec(gpus, layout), Path(tmp), interval=args.interval
                ) as exporter:
                    results += [{**where, **r} for r in measure(exporter, requests, CLIENTS)]
                target = layout == SEVEN_GIS and (gpus == TARGET["gpus"] or args.quick)
                if target and args.compat:
                    with start_exporter(
                        spec(gpus, layout), Path(tmp), "--compat", args.compat,
                        interval=args.interval,
                    ) as exporter:  # fmt: skip
                        rows = measure(exporter, requests, CLIENTS)
                        results += [{**where, **r, "server": COMPAT_SERVER} for r in rows]
                if target:
                    with start_baseline(spec(gpus, layout), Path(tmp), args.interval) as baseline:
                        rows = measure(baseline, baseline_requests, CLIENTS)
                        results += [{**where, **r} for r in rows]
    except BenchmarkError as error:
        print(f"scrape: {error}", file=sys.stderr)
        return 2
    targets, summary = _targets(results, quick=args.quick)
    report("scrape", {"interval": args.interval, "results": results, "targets": targets}, summary)
    return 0


def _targets(results: list[dict[str, Any]], *, quick: bool) -> tuple[dict[str, Any], list[str]]:
    gpus = 1 if quick else TARGET["gpus"]

    def row(server: str, encoding: str) -> dict[str, Any]:
        return next(
            r
            for r in results
            if (r["server"], r["encoding"], r["gpus"], r["layout"], r["clients"])
            == (server, encoding, gpus, TARGET["layout"], TARGET["clients"])
        )

    targets: dict[str, Any] = {"gpus": gpus, "layout": TARGET["layout"], "clients": 16}
    summary = []
    servers = ["migexporter"] + [COMPAT_SERVER] * any(r["server"] == COMPAT_SERVER for r in results)
    for server in servers:
        for encoding in ("plain", "gzip"):
            ours, base = row(server, encoding), row("baseline", encoding)
            ratio = ours["rps"] / base["rps"]
            key = encoding if server == "migexporter" else f"compat_{encoding}"
            targets[key] = {
                "p99_ms": ours["p99_ms"],
                "p99_target_ms": TARGET_P99_MS,
                "rps_ratio": round(ratio, 1),
                "rps_ratio_target": TARGET_RATIO,
                "met": ours["p99_ms"] < TARGET_P99_MS and ratio >= TARGET_RATIO,
            }
            summary.append(
                f"{server}, {gpus}x7 GIs, 16 clients, {encoding}: p99 {ours['p99_ms']:.2f} ms, "
                f"{ours['rps']:.0f} rps = {ratio:.0f}x the baseline ({base['rps']:.0f} rps, "
                f"p99 {base['p99_ms']:.1f} ms)"
            )
    return targets, summary


if __name__ == "__main__":
    sys.exit(main())
