"""Pod labels end to end: the exporter process asks a real gRPC kubelet on a unix socket.

The kubelet is ``migexporter.sim.kubelet.FakeKubelet`` in this test process, serving the
kubelet's ``v1.PodResourcesLister`` on a socket in a temporary directory; the exporter finds it
through ``--pod-resources-socket``, as it finds the real one under Kubernetes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from harness import Service, scraped, sim_fleet, start_exporter, wait_for

from migexporter import catalog
from migexporter.sim.kubelet import FakeKubelet, pod_resources

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

MAX_AGE_S = 3.0
OWNER = {"namespace": "team-a", "pod": "train-0", "container": "main"}


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")


@pytest.fixture(scope="module")
def kubelet(socket_path: str) -> Iterator[FakeKubelet]:
    server = FakeKubelet(socket_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exporter(
    kubelet: FakeKubelet, socket_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The exporter on the default fleet, asking the fake kubelet every 200 ms."""
    service = start_exporter(
        tmp_path_factory.mktemp("exporter"),
        "--pod-resources-socket", socket_path,
        "--pod-refresh", "200ms",
        "--pod-max-age", f"{MAX_AGE_S}s",
    )  # fmt: skip
    yield service
    service.stop()


def _owners(exporter: Service, name: str, gpu: str = "0") -> dict[str, dict[str, str]]:
    """GI id -> the pod labels of that GI's series of family ``name`` on GPU ``gpu``."""
    return {
        s["gpu_instance_id"]: {k: s[k] for k in OWNER if k in s}
        for s in scraped(exporter, name)
        if s["gpu"] == gpu
    }


def _mig_devices(exporter: Service) -> dict[int, str]:
    """GPU 0's GI ids -> the MIG UUID of their first compute instance."""
    gpu = sim_fleet(exporter)[0]
    return {gi["id"]: gi["compute_instances"][0]["mig_uuid"] for gi in gpu["gpu_instances"]}


def test_a_pod_is_followed_from_one_instance_to_another(
    exporter: Service, kubelet: FakeKubelet
) -> None:
    """Labels on GI, CI and XID series and in /api/events; then the pod moves; then the
    kubelet goes away and the labels age out."""
    devices = _mig_devices(exporter)
    first, second = sorted(devices)[:2]
    resource = "nvidia.com/mig-1g.10gb"
    kubelet.set_pods([pod_resources("team-a", "train-0", {"main": {resource: [devices[first]]}})])
    info = catalog.GPU_INSTANCE_INFO.name
    wait_for(
        lambda: _owners(exporter, info).get(str(first)),
        until=lambda owner: owner == OWNER,
        what="the pod's labels on its GPU instance",
    )
    owners = _owners(exporter, catalog.GI_MEMORY_USED.name)
    assert owners[str(first)] == OWNER
    assert all(not owner for gi, owner in owners.items() if gi != str(first))
    ci = [s for s in scraped(exporter, catalog.COMPUTE_INSTANCE_INFO.name) if s.get("pod")]
    assert [(s["gpu"], s["gpu_instance_id"], s["mig_uuid"]) for s in ci] == [
        ("0", str(first), devices[first])
    ]
    assert [s["value"] for s in scraped(exporter, catalog.POD_RESOURCES_UP.name)] == ["1.0"]

    xid = {"gpu": 0, "xid": 48, "gpu_instance_id": first, "compute_instance_id": 0}
    assert exporter.post("/api/sim/xid", xid).status == 200
    xids = catalog.XID_ERRORS.name
    wait_for(
        lambda: [s for s in scraped(exporter, xids) if s.get("pod") == "train-0"],
        what="the XID counted with the pod's labels",
    )

    # Rescheduled onto the second GPU instance.
    kubelet.set_pods([pod_resources("team-a", "train-0", {"main": {resource: [devices[second]]}})])
    wait_for(
        lambda: _owners(exporter, info),
        until=lambda owners: owners.get(str(second)) == OWNER and not owners.get(str(first)),
        what="the pod's labels moved to the second instance",
    )
    assert exporter.post("/api/sim/xid", {**xid, "gpu_instance_id": second}).status == 200
    charged = wait_for(
        lambda: {
            (s["gpu_instance_id"], s.get("pod", "")): s["value"]
            for s in scraped(exporter, xids)
            if s["xid"] == "48" and s["gpu"] == "0" and s["gpu_instance_id"]
        },
        until=lambda counts: len(counts) == 2,
        what="the second XID counted",
    )
    assert charged == {(str(first), "train-0"): "1.0", (str(second), "train-0"): "1.0"}
    events = exporter.get("/api/events?limit=2").json()
    assert [(e["gpu_instance_id"], e["pod"], e["namespace"]) for e in events] == [
        (second, "train-0", "team-a"),
        (first, "train-0", "team-a"),
    ]

    # The kubelet goes away: the labels stay up to the max age, then go.
    kubelet.stop()
    wait_for(
        lambda: scraped(exporter, catalog.POD_RESOURCES_UP.name),
        until=lambda up: [s["value"] for s in up] == ["0.0"],
        what="migexporter_pod_resources_up at 0",
    )
    wait_for(
        lambda: _owners(exporter, info),
        until=lambda owners: not any(owners.values()),
        timeout=MAX_AGE_S + 10,
        what="the pod labels gone after the max age",
    )
    log = exporter.log_path.read_text()
    assert log.count("did not answer") == 1, exporter.log_tail()
    assert log.count("pod map dropped") == 1, exporter.log_tail()


def test_without_a_kubelet_socket_one_line_and_no_pod_labels(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-kubelet.sock")
    service = start_exporter(
        tmp_path_factory.mktemp("plain"),
        "--pod-resources-socket", missing,
        "--pod-refresh", "100ms",
    )  # fmt: skip
    try:
        wait_for(
            service.log_path.read_text,
            until=lambda log: "pod attribution off" in log,
            what="the pod-attribution-off line",
        )

        def last_collect() -> float:
            return float(scraped(service, catalog.LAST_COLLECT.name)[0]["value"])

        # Ten refreshes later it has still said so only once.
        since = last_collect()
        wait_for(last_collect, until=lambda t: t > since + 1.0, what="a second of cycles")
        reply = service.get("/metrics")
        assert b'pod="' not in reply.body
        assert catalog.POD_RESOURCES_UP.name.encode() + b" " not in reply.body
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert log.count("pod attribution") == 1, service.log_tail()
    assert missing in log
