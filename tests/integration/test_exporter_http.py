"""The exporter process over real HTTP: formats, encodings, errors, health, events and faults."""

from __future__ import annotations

import gzip
import threading
from typing import TYPE_CHECKING

import pytest
from harness import Service, sim_fleet, wait_for
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

pytestmark = pytest.mark.integration

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = (  # what Prometheus 2.x sends
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
EVENT_TIMEOUT_S = 10.0
STORM = 10_000
STORM_SCRAPES_MAX = 100_000
RECENT_EVENTS = 1000  # what /api/events keeps
FAULT_TIMEOUT_S = 15.0  # a sampling cycle, or a topology refresh where the GPU must be found again


def samples(exporter: Service, name: str) -> list[Sample]:
    """The samples called ``name`` in one plain-text scrape."""
    reply = exporter.get("/metrics")
    assert reply.status == 200
    return [
        sample
        for family in parse_text(reply.body.decode())
        for sample in family.samples
        if sample.name == name
    ]


def values_by_gpu(exporter: Service, name: str) -> dict[str, float]:
    """A per-GPU family's values keyed by the ``gpu`` label."""
    return {s.labels["gpu"]: s.value for s in samples(exporter, name)}


def test_metrics_is_prometheus_text_by_default(exporter: Service) -> None:
    """Without Accept, /metrics is uncompressed Prometheus text with per-GPU series."""
    reply = exporter.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == TEXT
    assert "content-encoding" not in reply.headers
    names = {s.name for family in parse_text(reply.body.decode()) for s in family.samples}
    assert {"nvidia_gpu_info", "nvidia_gpu_up", "migexporter_backend_up"} <= names


@pytest.mark.parametrize("accept", [OPENMETRICS_ACCEPT, PROMETHEUS_ACCEPT])
def test_metrics_is_openmetrics_when_accepted(exporter: Service, accept: str) -> None:
    """An Accept that prefers OpenMetrics 1.0.0 gets a valid OpenMetrics page."""
    reply = exporter.get("/metrics", {"Accept": accept})
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert reply.body.endswith(b"# EOF\n")
    page = parse_openmetrics(reply.body.decode())  # type: ignore[no-untyped-call]
    names = {family.name for family in page}
    assert "nvidia_gpu_up" in names


def test_metrics_is_gzipped_when_accepted(exporter: Service) -> None:
    """Accept-Encoding: gzip gets a gzip body holding the same kind of page."""
    reply = exporter.get("/metrics", {"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.headers["content-type"] == TEXT
    text = gzip.decompress(reply.body).decode()
    assert "nvidia_gpu_up" in {family.name for family in parse_text(text)}


def test_unknown_path_is_404(exporter: Service) -> None:
    """A path the exporter does not serve answers 404."""
    assert exporter.get("/no-such-page").status == 404


def test_post_to_metrics_is_405(exporter: Service) -> None:
    """/metrics is read-only: POST answers 405."""
    assert exporter.post("/metrics", {}).status == 405


def test_health_readiness_and_landing_page(exporter: Service) -> None:
    """/-/healthy and /-/ready answer 200 once serving, and / is an HTML page."""
    assert exporter.get("/-/healthy").status == 200
    assert exporter.get("/-/ready").status == 200
    landing = exporter.get("/")
    assert landing.status == 200
    assert landing.headers["content-type"].startswith("text/html")


def test_events_api_lists_an_injected_xid(exporter: Service) -> None:
    """An XID injected on GPU 1 GI 8 CI 0 appears in /api/events with where it happened."""
    body = {"gpu": 1, "gpu_instance_id": 8, "compute_instance_id": 0, "xid": 31, "count": 1}
    reply = exporter.post("/api/sim/xid", body)
    assert 200 <= reply.status < 300, reply.body[:500]

    def matching() -> list[dict[str, object]]:
        events = exporter.get("/api/events").json()
        assert isinstance(events, list)
        return [
            event
            for event in events
            if event.get("xid") == 31 and str(event.get("gpu")) == "1"
            and event.get("gpu_instance_id") == 8 and event.get("compute_instance_id") == 0
        ]  # fmt: skip

    found = wait_for(matching, EVENT_TIMEOUT_S, what="the injected XID 31 in /api/events")
    assert len(found) == 1


def test_unattributed_xid_has_empty_instance_labels(exporter: Service) -> None:
    """An XID given without instance ids is counted with empty GI and CI labels."""
    reply = exporter.post("/api/sim/xid", {"gpu": 0, "xid": 79})
    assert 200 <= reply.status < 300, reply.body[:500]
    found = wait_for(
        lambda: [
            s.labels
            for s in samples(exporter, "nvidia_gpu_xid_errors_total")
            if s.labels["xid"] == "79" and s.labels["gpu"] == "0" and s.value > 0
        ],
        EVENT_TIMEOUT_S,
        what="nvidia_gpu_xid_errors_total{gpu='0', xid='79'} > 0",
    )
    assert [(s["gpu_instance_id"], s["compute_instance_id"]) for s in found] == [("", "")]


def xid_count(exporter: Service, gpu: str, xid: str, gi: str = "", ci: str = "") -> float:
    """One XID series' value in a fresh scrape; 0 when it does not exist yet."""
    wanted = {"gpu": gpu, "xid": xid, "gpu_instance_id": gi, "compute_instance_id": ci}
    found = [
        s.value
        for s in samples(exporter, "nvidia_gpu_xid_errors_total")
        if {k: s.labels[k] for k in wanted} == wanted
    ]
    return found[0] if found else 0.0


def test_an_xid_storm_is_counted_exactly_while_scrapes_go_on(exporter: Service) -> None:
    """10,000 XIDs in one injection: exactly 10,000 counted, every scrape answered meanwhile,
    and /api/events stays bounded at its 1,000 newest."""
    before = xid_count(exporter, "1", "13", "8", "0")
    statuses: list[int] = []
    stop = threading.Event()

    def scrape() -> None:
        for _ in range(STORM_SCRAPES_MAX):  # bounded, even if the test fails to stop it
            if stop.is_set():
                return
            statuses.append(exporter.get("/metrics").status)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        body = {"gpu": 1, "gpu_instance_id": 8, "compute_instance_id": 0, "xid": 13}
        reply = exporter.post("/api/sim/xid", {**body, "count": STORM})
        assert 200 <= reply.status < 300, reply.body[:500]
        wait_for(
            lambda: xid_count(exporter, "1", "13", "8", "0"),
            EVENT_TIMEOUT_S,
            until=lambda n: n >= before + STORM,
            what=f"{STORM} more XID 13 on GPU 1 GI 8 CI 0",
        )
    finally:
        stop.set()
        scraper.join(EVENT_TIMEOUT_S)
    assert xid_count(exporter, "1", "13", "8", "0") == before + STORM  # not one more
    assert statuses
    assert set(statuses) == {200}
    events = exporter.get("/api/events").json()
    assert len(events) == RECENT_EVENTS
    assert {(e["xid"], e["gpu_instance_id"], e["action"]) for e in events} == {
        (13, 8, "RESTART_APP")
    }


def test_gpu_off_the_bus_loses_its_series_until_it_recovers(exporter: Service) -> None:
    """A GPU off the bus reports up 0 and no readings while the others keep theirs, then returns."""
    gpus = {str(g["index"]) for g in sim_fleet(exporter)}
    assert {"0", "1", "2"} <= gpus
    # Event series appear with their first event: none before it is 0.
    unavailable_before = values_by_gpu(exporter, "nvidia_gpu_unavailable_events_total").get("2", 0)
    xid79_before = xid_count(exporter, "2", "79")
    reply = exporter.post("/api/sim/fault", {"gpu": 2, "kind": "fall_off_bus"})
    assert 200 <= reply.status < 300, reply.body[:500]
    try:
        up = wait_for(
            lambda: values_by_gpu(exporter, "nvidia_gpu_up"),
            FAULT_TIMEOUT_S,
            until=lambda up: up.get("2") == 0,
            what="nvidia_gpu_up{gpu='2'} == 0",
        )
        assert up["0"] == up["1"] == 1
        temperatures = values_by_gpu(exporter, "nvidia_gpu_temperature_celsius")
        assert "2" not in temperatures
        assert {"0", "1"} <= temperatures.keys()
        # The driver said so too: XID 79 and an unavailable event, each counted once.
        unavailable = wait_for(
            lambda: values_by_gpu(exporter, "nvidia_gpu_unavailable_events_total").get("2", 0),
            EVENT_TIMEOUT_S,
            until=lambda n: n == unavailable_before + 1,
            what="one more unavailable event on GPU 2",
        )
        assert unavailable == unavailable_before + 1
        assert xid_count(exporter, "2", "79") == xid79_before + 1
    finally:  # leave the module's exporter healthy for the tests that follow, even on failure
        recovered = exporter.post("/api/sim/fault", {"gpu": 2, "kind": "recover"})
    assert 200 <= recovered.status < 300, recovered.body[:500]
    wait_for(
        lambda: values_by_gpu(exporter, "nvidia_gpu_up"),
        FAULT_TIMEOUT_S,
        until=lambda up: up.get("2") == 1,
        what="nvidia_gpu_up{gpu='2'} == 1 after recovery",
    )


def test_ecc_and_recovery_action_events_are_counted_and_listed(exporter: Service) -> None:
    """Events beside XID injected through the simulator reach their families and /api/events."""
    ecc = "nvidia_gpu_ecc_error_events_total"
    before = {
        s.labels["error_type"]: s.value for s in samples(exporter, ecc) if s.labels["gpu"] == "0"
    }
    for body in ({"gpu": 0, "uncorrected": True, "count": 2}, {"gpu": 0}):
        reply = exporter.post("/api/sim/ecc", body)
        assert 200 <= reply.status < 300, reply.body[:500]
    reply = exporter.post("/api/sim/recovery", {"gpu": 0, "action": "gpu_reset"})
    assert 200 <= reply.status < 300, reply.body[:500]
    try:
        wait_for(
            lambda: [
                s.value
                for s in samples(exporter, "nvidia_gpu_recovery_action_events_total")
                if s.labels["gpu"] == "0" and s.labels["action"] == "gpu_reset"
            ],
            EVENT_TIMEOUT_S,
            until=lambda found: found == [1.0],
            what="one gpu_reset recovery event on GPU 0",
        )
        after = {
            s.labels["error_type"]: s.value
            for s in samples(exporter, ecc)
            if s.labels["gpu"] == "0"
        }
        assert after["uncorrected"] == before.get("uncorrected", 0) + 2
        assert after["corrected"] == before.get("corrected", 0) + 1
        newest = exporter.get("/api/events?limit=1").json()[0]
        assert (newest["kind"], newest["recovery_action"]) == ("recovery_action", "gpu_reset")
    finally:  # recover resets the driver's recovery action for the tests that follow
        exporter.post("/api/sim/fault", {"gpu": 0, "kind": "recover"})
    for bad in ({"gpu": 0, "action": "reboot_everything"}, {"gpu": 0, "uncorrected": "yes"}):
        path = "/api/sim/recovery" if "action" in bad else "/api/sim/ecc"
        reply = exporter.post(path, bad)
        assert reply.status == 400
        assert len(reply.body.decode().strip().splitlines()) == 1
