"""End to end: an XID injected in the simulator pages through a real Prometheus and Alertmanager.

The exporter runs a simulated fleet; Prometheus (1 s scrape and evaluation) loads the generated
rules, with the XID windows shortened from minutes to seconds so that alerts also resolve within
the test; Alertmanager runs alerts/alertmanager.yml with its webhook URLs pointed at a receiver
on loopback and its waits shortened. XID 48 on one GPU instance and a burst of XID 43 on another
must page with their labels; a single XID 43 elsewhere must only open a ticket; all must resolve.
A GPU whose driver asks for a reset must page with its node and GPU, and resolve once the driver
asks for nothing again. Prometheus sets the node label on the target, as the ServiceMonitor does.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from harness import (
    Prometheus,
    Receiver,
    Service,
    sim_fleet,
    start_alertmanager,
    start_exporter,
    start_prometheus,
    wait_for,
    webhook_receiver,
)

from migexporter.mixin import alerts

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

FLEET = "h100-80gb:3g.40gb+2g.20gb+1g.10gb*2,h100-80gb:3g.40gb+3g.40gb"
XID_WINDOW, BURST_WINDOW = "20s", "30s"
RECOVERY_FOR = "2s"  # instead of a minute: the action must still stand for two evaluations
NODE = "gpu-node-7"
PAGE_TIMEOUT_S = 60.0
RESOLVE_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as sink:
        yield sink


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[tuple[Service, Prometheus]]:
    """Exporter, Prometheus with the generated rules, and Alertmanager, all on loopback."""
    exporter = start_exporter(tmp_path_factory.mktemp("exporter"), FLEET, "--backend", "nvml")
    manager = start_alertmanager(tmp_path_factory.mktemp("alertmanager"), receiver)
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = workdir / "rules.yml"
    groups = alerts.groups(XID_WINDOW, BURST_WINDOW, interval="1s", recovery_for=RECOVERY_FOR)
    rules.write_text(yaml.safe_dump({"groups": groups}))
    prometheus = start_prometheus(
        workdir,
        [urllib.parse.urlsplit(exporter.url).netloc],
        rule_files=(rules,),
        alertmanagers=(urllib.parse.urlsplit(manager.url).netloc,),
        scrape={"relabel_configs": [{"target_label": "node", "replacement": NODE}]},
    )
    # XID series are born with their first event; the rules need only the exporter scraped.
    wait_for(
        lambda: prometheus.query("count_over_time(migexporter_build_info[1m])"),
        30,
        until=lambda found: found and min(s.value for s in found) >= 5,
        what="five scrapes of the exporter",
    )
    yield exporter, prometheus
    for service in (prometheus.service, manager, exporter):
        service.stop()


def _inject(exporter: Service, gpu: int, gpu_instance_id: int, xid: int) -> None:
    reply = exporter.post(
        "/api/sim/xid", {"gpu": gpu, "gpu_instance_id": gpu_instance_id, "xid": xid}
    )
    assert 200 <= reply.status < 300, reply.body[:500]


def _firing(receiver: Receiver, name: str, route: str) -> list[tuple[float, dict[str, Any]]]:
    return [
        (at, alert)
        for at, alert in receiver.alerts(route)
        if alert["labels"]["alertname"] == name and alert["status"] == "firing"
    ]


def test_xid_48_and_a_burst_of_xid_43_page_and_a_single_xid_43_opens_a_ticket(
    stack: tuple[Service, Prometheus], receiver: Receiver
) -> None:
    exporter, _ = stack
    gpus = sim_fleet(exporter)
    profiles = {
        (gpu["index"], gi["id"]): gi["profile"] for gpu in gpus for gi in gpu["gpu_instances"]
    }
    injected = time.monotonic()
    _inject(exporter, 0, 2, 48)  # the 3g.40gb
    for _ in range(alerts.XID43_BURST):
        _inject(exporter, 1, 2, 43)
    _inject(exporter, 0, 3, 43)  # the 2g.20gb

    pages = wait_for(
        lambda: (
            _firing(receiver, "MigXid48DoubleBitEcc", "pager")
            + _firing(receiver, "MigXid43Burst", "pager")
        ),
        PAGE_TIMEOUT_S,
        until=lambda seen: (
            {a["labels"]["alertname"] for _, a in seen} == {"MigXid48DoubleBitEcc", "MigXid43Burst"}
        ),
        interval=0.1,
        what="the XID 48 and XID 43 burst pages",
    )
    for _, alert in pages:
        labels = alert["labels"]
        gpu, gi = int(labels["gpu"]), int(labels["gpu_instance_id"])
        assert labels["gpu_uuid"] == gpus[gpu]["uuid"]
        assert labels["profile"] == profiles[gpu, gi]
        assert labels["severity"] == "critical"
        expected = (0, 2, "48") if labels["alertname"] == "MigXid48DoubleBitEcc" else (1, 2, "43")
        assert (gpu, gi, labels["xid"]) == expected
    tickets = wait_for(
        lambda: _firing(receiver, "MigXid43GpuStoppedProcessing", "ticket"),
        PAGE_TIMEOUT_S,
        until=lambda seen: any(
            a["labels"]["gpu_instance_id"] == "3" and a["labels"]["gpu"] == "0" for _, a in seen
        ),
        what="the single XID 43's ticket",
    )
    single = [
        a for _, a in tickets if (a["labels"]["gpu"], a["labels"]["gpu_instance_id"]) == ("0", "3")
    ]
    assert single[0]["labels"]["severity"] == "warning"
    # Nothing about the single XID 43 reached the pager.
    assert not [
        a
        for _, a in receiver.alerts("pager")
        if (a["labels"].get("gpu"), a["labels"].get("gpu_instance_id")) == ("0", "3")
    ]
    latency = {a["labels"]["alertname"]: round(at - injected, 3) for at, a in pages}
    print(f"injection to page: {json.dumps(latency)}")  # noqa: T201

    resolved = wait_for(
        lambda: {
            a["labels"]["alertname"]
            for _, a in receiver.alerts("pager")
            if a["status"] == "resolved"
        },
        RESOLVE_TIMEOUT_S,
        until=lambda names: {"MigXid48DoubleBitEcc", "MigXid43Burst"} <= names,
        what="the pages to resolve once the window has passed",
    )
    assert resolved


def _recovery(exporter: Service, gpu: int, action: str) -> None:
    reply = exporter.post("/api/sim/recovery", {"gpu": gpu, "action": action})
    assert 200 <= reply.status < 300, reply.body[:500]


def test_a_gpu_reset_request_pages_with_node_and_gpu_and_resolves_when_done(
    stack: tuple[Service, Prometheus], receiver: Receiver
) -> None:
    exporter, _ = stack
    gpus = sim_fleet(exporter)
    gpu, uuid = 1, gpus[1]["uuid"]
    name = "MigGpuRecoveryActionRequired"
    try:
        _recovery(exporter, gpu, "gpu_reset")
        pages = wait_for(
            lambda: _firing(receiver, name, "pager"),
            PAGE_TIMEOUT_S,
            interval=0.1,
            what="the reset request's page",
        )
        labels, annotations = pages[0][1]["labels"], pages[0][1]["annotations"]
        assert {k: labels.get(k) for k in ("node", "gpu", "gpu_uuid", "action", "severity")} == {
            "node": NODE,
            "gpu": str(gpu),
            "gpu_uuid": uuid,
            "action": "gpu_reset",
            "severity": "critical",
        }
        assert annotations["summary"] == f"GPU needs gpu_reset: {NODE} GPU {gpu} ({uuid})"
        assert f"nvidia-smi -r -i {gpu}" in annotations["description"]
    finally:
        _recovery(exporter, gpu, "none")  # the reset is done: the driver asks for nothing
    wait_for(
        lambda: [a for _, a in receiver.alerts("pager") if a["labels"]["alertname"] == name],
        RESOLVE_TIMEOUT_S,
        until=lambda seen: any(a["status"] == "resolved" for a in seen),
        what="the reset request's page to resolve",
    )
    assert not _firing(receiver, "MigGpuRecoveryActionRequested", "ticket")
