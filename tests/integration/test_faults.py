"""Faults survived: the simulator's faults, one after another, on one exporter process.

A driver call that hangs, NVML shut down under the exporter, a GPU lost and back, the DCGM host
engine lost and back, a MIG reconfiguration every second for a minute, and an XID storm. A
watcher thread scrapes all along and holds the invariants: /metrics answers 200, no counter
goes backwards, the process stays up. Between the faults the test checks what each must do
(the hung GPU's series drop while the others keep updating, ...); at the end that no series
outlives its instance and that memory stayed bounded.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from harness import Service, scraped, sim_fleet, start_exporter, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

SCRAPE_EVERY_S = 0.2
RECONFIGURE_FOR_S = 60.0
LAYOUTS = (["1g.10gb*7"], ["3g.40gb", "3g.40gb"], ["7g.80gb"], ["2g.20gb*3", "1g.10gb"])
STORM = 10_000
RSS_SLACK_KIB = 48 * 1024
FAULT_TIMEOUT_S = 20.0


Series = tuple[str, frozenset[tuple[str, str]]]


class Watcher(threading.Thread):
    """Scrapes every SCRAPE_EVERY_S and records what breaks an invariant."""

    def __init__(self, exporter: Service) -> None:
        super().__init__(name="fault-watcher", daemon=True)
        self.exporter = exporter
        self.stop = threading.Event()
        self.scrapes = 0
        self.problems: list[str] = []
        self.counters: dict[Series, float] = {}

    def run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY_S):
            if self.exporter.process.poll() is not None:
                self.problems.append(f"the exporter exited ({self.exporter.process.returncode})")
                return
            try:
                reply = self.exporter.get("/metrics")
            except OSError as error:
                self.problems.append(f"scrape failed: {error}")
                continue
            self.scrapes += 1
            if reply.status != 200:
                self.problems.append(f"/metrics answered {reply.status}")
                continue
            for family in text_string_to_metric_families(reply.body.decode()):
                if family.type != "counter":
                    continue
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    key = (sample.name, frozenset(sample.labels.items()))
                    before = self.counters.get(key)
                    if before is not None and sample.value < before:
                        self.problems.append(f"{key} went from {before} to {sample.value}")
                    self.counters[key] = sample.value


def _up(exporter: Service) -> dict[str, float]:
    return {s["gpu"]: float(s["value"]) for s in scraped(exporter, "nvidia_gpu_up")}


def _last_collect(exporter: Service) -> float:
    return float(scraped(exporter, "migexporter_last_collect_timestamp_seconds")[0]["value"])


def _instances(exporter: Service) -> set[tuple[str, str]]:
    """(gpu, GI id) of every GPU-instance series on /metrics."""
    return {
        (s["gpu"], s["gpu_instance_id"])
        for s in scraped(exporter, "nvidia_gpu_instance_memory_total_bytes")
    }


def _fleet_instances(exporter: Service) -> set[tuple[str, str]]:
    """(gpu, GI id) of every GPU instance the simulator holds on GPUs that answer."""
    return {
        (str(gpu["index"]), str(gi["id"]))
        for gpu in sim_fleet(exporter)
        if gpu["state"] == "ok"
        for gi in gpu["gpu_instances"]
    }


def _rss_kib(exporter: Service) -> int:
    status = Path(f"/proc/{exporter.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]


def _fault(exporter: Service, kind: str, gpu: int | None = None) -> None:
    body = {"kind": kind} if gpu is None else {"kind": kind, "gpu": gpu}
    reply = exporter.post("/api/sim/fault", body)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("backend", ["nvml", "dcgm"])
def test_faults_one_after_another_break_no_invariant(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The default fleet (three H100s), through NVML alone or through DCGM with local NVML."""
    exporter = start_exporter(tmp_path_factory.mktemp(backend), "--backend", backend)
    watcher = Watcher(exporter)
    watcher.start()
    rss_start = _rss_kib(exporter)
    try:
        if backend == "nvml":
            _hung_gpu(exporter)
        else:
            _hung_gpu_behind_the_host_engine(exporter)
        _nvml_shut_down(exporter)
        _gpu_lost_and_back(exporter)
        if backend == "dcgm":
            _host_engine_lost_and_back(exporter)
        _reconfigured_every_second(exporter, RECONFIGURE_FOR_S if backend == "nvml" else 15)
        _xid_storm(exporter)
        # No series outlives its instance, and every instance has its series.
        wait_for(
            lambda: (_instances(exporter), _fleet_instances(exporter)),
            until=lambda pair: pair[0] == pair[1],
            timeout=FAULT_TIMEOUT_S,
            what="GPU-instance series matching the simulator's instances",
        )
    finally:
        watcher.stop.set()
        watcher.join(10)
        rss_end = _rss_kib(exporter)
        alive = exporter.process.poll() is None
        exporter.stop()
    assert watcher.scrapes > 50
    assert not watcher.problems, "\n".join(watcher.problems[:20])
    assert alive
    assert rss_end <= rss_start + RSS_SLACK_KIB, (rss_start, rss_end)


def _hung_gpu(exporter: Service) -> None:
    """GPU 1 hangs in a driver call: its series drop after the GPU timeout; GPU 0 updates."""
    _fault(exporter, "hang", 1)
    wait_for(lambda: _up(exporter), until=lambda up: up.get("1") == 0.0, timeout=FAULT_TIMEOUT_S)
    assert _up(exporter)["0"] == 1.0
    assert not [s for s in scraped(exporter, "nvidia_gpu_power_watts") if s["gpu"] == "1"]
    since = _last_collect(exporter)
    wait_for(lambda: _last_collect(exporter), until=lambda t: t > since + 1, what="cycles")
    _fault(exporter, "recover", 1)
    wait_for(lambda: _up(exporter), until=lambda up: up.get("1") == 1.0, timeout=FAULT_TIMEOUT_S)


def _hung_gpu_behind_the_host_engine(exporter: Service) -> None:
    """GPU 1 hangs and the host engine, sampling it, stops answering: the DCGM backend is down
    (no stale value is served) until the GPU recovers, then everything is back."""

    def backend_up() -> list[str]:
        return [s["value"] for s in scraped(exporter, "migexporter_backend_up")]

    _fault(exporter, "hang", 1)
    wait_for(backend_up, until=lambda up: up == ["0.0"], timeout=FAULT_TIMEOUT_S)
    assert not scraped(exporter, "nvidia_gpu_power_watts")
    _fault(exporter, "recover", 1)
    wait_for(backend_up, until=lambda up: up == ["1.0"], timeout=FAULT_TIMEOUT_S)
    wait_for(
        lambda: _up(exporter),
        until=lambda up: set(up.values()) == {1.0},
        timeout=FAULT_TIMEOUT_S,
        what="every GPU up again",
    )


def _nvml_shut_down(exporter: Service) -> None:
    """NVML is shut down under the exporter: it initialises NVML again; events flow again."""
    _fault(exporter, "nvml_shutdown")
    # Events that come while NVML is down are not seen (NVML freed the event set); the test's
    # XID comes after the exporter initialised NVML again, at its next enumeration.
    wait_for(
        exporter.log_path.read_text,
        until=lambda log: "initialising it again" in log,
        timeout=FAULT_TIMEOUT_S,
        what="NVML initialised again",
    )
    wait_for(
        lambda: _up(exporter),
        until=lambda up: set(up.values()) == {1.0},
        timeout=FAULT_TIMEOUT_S,
        what="every GPU up after NVML was initialised again",
    )
    before = _xid_count(exporter, "0", "31")
    assert exporter.post("/api/sim/xid", {"gpu": 0, "xid": 31}).status == 200
    wait_for(
        lambda: _xid_count(exporter, "0", "31"),
        until=lambda count: count == before + 1,
        timeout=FAULT_TIMEOUT_S,
        what="an XID after NVML came back",
    )


def _gpu_lost_and_back(exporter: Service) -> None:
    _fault(exporter, "fall_off_bus", 2)
    wait_for(lambda: _up(exporter), until=lambda up: up.get("2") == 0.0, timeout=FAULT_TIMEOUT_S)
    _fault(exporter, "recover", 2)
    wait_for(lambda: _up(exporter), until=lambda up: up.get("2") == 1.0, timeout=FAULT_TIMEOUT_S)


def _host_engine_lost_and_back(exporter: Service) -> None:
    def backend_up() -> list[str]:
        return [s["value"] for s in scraped(exporter, "migexporter_backend_up")]

    _fault(exporter, "hostengine_down")
    wait_for(backend_up, until=lambda up: up == ["0.0"], timeout=FAULT_TIMEOUT_S)
    _fault(exporter, "hostengine_up")
    wait_for(backend_up, until=lambda up: up == ["1.0"], timeout=FAULT_TIMEOUT_S * 2)
    wait_for(lambda: _up(exporter), until=lambda up: set(up.values()) == {1.0})


def _reconfigured_every_second(exporter: Service, seconds: float) -> None:
    """GPU 0's layout changes every second for ``seconds``; its series follow."""
    started = time.monotonic()
    changes = 0
    while time.monotonic() - started < seconds:
        layout = LAYOUTS[changes % len(LAYOUTS)]
        reply = exporter.post("/api/sim/mig", {"gpu": 0, "profiles": layout})
        assert reply.status == 200, reply.body
        changes += 1
        time.sleep(1.0)
    assert changes >= seconds - 5
    wait_for(
        lambda: (_instances(exporter), _fleet_instances(exporter)),
        until=lambda pair: pair[0] == pair[1],
        timeout=FAULT_TIMEOUT_S,
        what="GPU 0's series after the last reconfiguration",
    )


def _xid_count(exporter: Service, gpu: str, xid: str) -> float:
    return sum(
        float(s["value"])
        for s in scraped(exporter, "nvidia_gpu_xid_errors_total")
        if s["gpu"] == gpu and s["xid"] == xid
    )


def _xid_storm(exporter: Service) -> None:
    """Ten thousand XIDs at once: every one is counted."""
    before = _xid_count(exporter, "1", "13")
    reply = exporter.post("/api/sim/xid", {"gpu": 1, "xid": 13, "count": STORM})
    assert reply.status == 200, reply.body
    wait_for(
        lambda: _xid_count(exporter, "1", "13"),
        until=lambda count: count == before + STORM,
        timeout=FAULT_TIMEOUT_S * 2,
        what=f"{STORM} XIDs counted",
    )
