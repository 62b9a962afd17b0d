"""Paging latency: from an XID 48 injected through the simulator to the page at a webhook.

Usage: python benchmarks/paging.py [--quick] [--events N]

Runs the whole path on loopback: migexporter on a simulated fleet (1 s sampling), Debian's
Prometheus scraping it and evaluating the generated rules every second, Debian's Alertmanager
with alerts/alertmanager.yml (receivers pointed at a webhook here, group_wait 1 s), and the
webhook. Each event is an XID 48 on a GPU instance not paged before; its latency runs from just
before the injection to the webhook's receipt of the firing alert. Alertmanager's group_wait
and Prometheus's scrape and evaluation intervals (1 s each) bound it from below. Prints JSON on
stdout and a summary on stderr.
"""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from harness import (
    CANNOT_RUN,
    LOOPBACK,
    SRC,
    BenchmarkError,
    Server,
    free_port,
    get,
    percentiles,
    post_json,
    report,
    start,
    start_exporter,
)

sys.path.insert(0, str(SRC))
from migexporter.mixin import alerts  # this checkout's rules

FLEET = "4*h100-80gb:1g.10gb*7"  # 28 GPU instances: one fresh instance per event
EVENTS, QUICK_EVENTS = 20, 2
PAGE_TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


class _Webhook(http.server.ThreadingHTTPServer):
    """Records when each firing alert first reached the pager receiver, by (gpu, GI)."""

    def __init__(self) -> None:
        self.paged: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()
        super().__init__((LOOPBACK, free_port()), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Webhook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.perf_counter()
        with self.server.changed:
            for alert in body["alerts"]:
                labels = alert["labels"]
                if self.path == "/pager" and alert["status"] == "firing":
                    key = (labels.get("gpu", ""), labels.get("gpu_instance_id", ""))
                    self.server.paged.setdefault(key, now)
            self.server.changed.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def _netloc(server: Server) -> str:
    return urllib.parse.urlsplit(server.url).netloc


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    raise BenchmarkError(f"needs {names[0]} (apt-get install {names[-1]})")


def _prometheus(workdir: Path, exporter: Server, alertmanager: Server) -> Server:
    rules = workdir / "rules.yml"
    # Every group evaluated each second, like the scrapes: the latency of the pipeline itself.
    rules.write_text(yaml.safe_dump({"groups": alerts.groups(interval="1s")}))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": alerts.JOB, "static_configs": [{"targets": [_netloc(exporter)]}]}
        ],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [_netloc(alertmanager)]}]}]},
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    argv = [
        _binary("prometheus"),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    return start("prometheus", argv, port, workdir / "prometheus.log", "/-/ready")


def _alertmanager(workdir: Path, webhook: _Webhook) -> Server:
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    for entry in config["receivers"]:
        for hook in entry.get("webhook_configs", []):
            hook["url"] = f"http://{LOOPBACK}:{webhook.server_port}/{entry['name']}"
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        _binary("prometheus-alertmanager", "alertmanager", "prometheus-alertmanager"),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'am'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",
    ]
    return start("alertmanager", argv, port, workdir / "alertmanager.log", "/-/ready")


def measure(exporter: Server, webhook: _Webhook, events: int) -> dict[str, Any]:
    """Inject ``events`` XID 48s one after another, each on a fresh instance; their latencies."""
    fleet = json.loads(get(exporter.url + "/api/sim/fleet"))
    targets = [(g["index"], gi["id"]) for g in fleet["gpus"] for gi in g["gpu_instances"]]
    if len(targets) < events:
        raise BenchmarkError(
            f"{events} events need {events} GPU instances, the fleet has {len(targets)}"
        )
    latencies = []
    for gpu, gi in targets[:events]:
        started = time.perf_counter()
        post_json(exporter.url + "/api/sim/xid", {"gpu": gpu, "gpu_instance_id": gi, "xid": 48})
        key = (str(gpu), str(gi))
        with webhook.changed:
            if not webhook.changed.wait_for(lambda key=key: key in webhook.paged, PAGE_TIMEOUT_S):
                raise BenchmarkError(f"no page for GPU {gpu} GI {gi} within {PAGE_TIMEOUT_S:g}s")
            latencies.append(webhook.paged[key] - started)
    return {"events": events, **percentiles(sorted(latencies))}


def main() -> int:
    """Measure, print the figures and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_EVENTS} events")
    parser.add_argument("--events", type=int, default=EVENTS, help="XID 48s to page")
    args = parser.parse_args()
    events = QUICK_EVENTS if args.quick else args.events
    webhook = _Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-paging-") as tmp:
            work = Path(tmp)
            with (
                start_exporter(FLEET, work) as exporter,
                _alertmanager(work, webhook) as manager,
                _prometheus(work, exporter, manager),
            ):
                time.sleep(5)  # the page XIDs' zero series need a few samples before events
                figures = measure(exporter, webhook, events)
    except (BenchmarkError, OSError) as error:
        print(f"paging: {error}", file=sys.stderr)
        return CANNOT_RUN
    finally:
        webhook.shutdown()
    figures |= {"fleet": FLEET, "xid": 48, "alert": "MigXid48DoubleBitEcc", "group_wait_s": 1}
    summary = [
        (
            f"{figures['events']} XID 48 pages, injection to webhook: "
            f"p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
            f"max {figures['max_ms']:.0f} ms (1 s scrape, 1 s evaluation, 1 s group_wait)"
        )
    ]
    report("paging", figures, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
