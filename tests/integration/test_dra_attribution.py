"""DRA pod labels end to end: the exporter process reads claims from a real gRPC kubelet.

The kubelet is ``migexporter.sim.kubelet.FakeKubelet`` in this test process, listing the DRA
allocations NVIDIA's DRA driver (``gpu.nvidia.com``) makes: device names, no MIG UUIDs. The
names are written here from the driver's own format (``gpu-<minor>`` and
``gpu-<minor>-mig-<profile without dots>-<GI profile id>-<placement start>``), not by the
exporter's code, so a wrong reading of the format fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from harness import Service, scraped, sim_fleet, start_exporter, wait_for

from migexporter import catalog
from migexporter.sim.kubelet import FakeKubelet, claim, pod_resources
from migexporter.sim.profiles import model

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

NODE = "gpu-node-1"  # the DRA driver's pool is the node name
INFO = catalog.GPU_INSTANCE_INFO.name


@pytest.fixture(scope="module")
def kubelet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubelet]:
    server = FakeKubelet(str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exporter(kubelet: FakeKubelet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The exporter on the default fleet, asking the fake kubelet every 200 ms."""
    service = start_exporter(
        tmp_path_factory.mktemp("exporter"),
        "--pod-resources-socket", kubelet.socket_path,
        "--pod-refresh", "200ms",
    )  # fmt: skip
    yield service
    service.stop()


def _mig_name(gpu: dict[str, Any], gi: dict[str, Any]) -> str:
    """The DRA driver's name of a GPU instance (mig.go ToCanonicalName); minor = index here."""
    profile = gi["profile"].replace(".", "")
    return f"gpu-{gpu['index']}-mig-{profile}-{gi['profile_id']}-{gi['placement']['start']}"


def _dra_pod(pod: str, claim_name: str, *devices: str) -> Any:
    return pod_resources(
        "team-b", pod, {}, claims={"main": [claim("team-b", claim_name, devices, pool=NODE)]}
    )


def _instances(exporter: Service, gpu: str) -> dict[str, dict[str, str]]:
    """GI id -> its info series' labels, on GPU ``gpu``."""
    return {s["gpu_instance_id"]: s for s in scraped(exporter, INFO) if s["gpu"] == gpu}


def test_a_dra_pod_on_a_static_mig_device_and_one_on_a_whole_gpu_beside_a_device_plugin_pod(
    exporter: Service, kubelet: FakeKubelet
) -> None:
    gpu0, _gpu1, gpu2 = sim_fleet(exporter)
    assert not gpu2["mig_enabled"]
    first, second = gpu0["gpu_instances"][:2]
    plugin_pod = pod_resources(
        "team-a",
        "plugin-0",
        {"main": {"nvidia.com/mig-1g.10gb": [first["compute_instances"][0]["mig_uuid"]]}},
    )
    kubelet.set_pods(
        [
            plugin_pod,
            _dra_pod("dra-0", "mig-claim", _mig_name(gpu0, second)),
            _dra_pod("dra-whole", "whole-claim", f"gpu-{gpu2['index']}"),
        ]
    )
    owners = wait_for(
        lambda: _instances(exporter, "0"),
        until=lambda gis: gis.get(str(second["id"]), {}).get("pod") == "dra-0",
        what="the DRA pod's labels on its GPU instance",
    )
    dra_gi, plugin_gi = owners[str(second["id"])], owners[str(first["id"])]
    assert (dra_gi["namespace"], dra_gi["container"], dra_gi["claim"]) == (
        "team-b", "main", "team-b/mig-claim",
    )  # fmt: skip
    assert (plugin_gi["pod"], "claim" in plugin_gi) == ("plugin-0", False)
    memory = {
        s["gpu_instance_id"]: s.get("pod")
        for s in scraped(exporter, catalog.GI_MEMORY_USED.name)
        if s["gpu"] == "0"
    }
    assert memory[str(second["id"])] == "dra-0"
    cis = [s for s in scraped(exporter, catalog.COMPUTE_INSTANCE_INFO.name) if s.get("pod")]
    assert sorted((s["gpu_instance_id"], s["pod"]) for s in cis) == sorted(
        [(str(second["id"]), "dra-0"), (str(first["id"]), "plugin-0")]
    )
    # The whole GPU's holder is charged with its XIDs, as with the device plugin.
    assert exporter.post("/api/sim/xid", {"gpu": 2, "xid": 79}).status == 200
    xid = wait_for(
        lambda: [s for s in scraped(exporter, catalog.XID_ERRORS.name) if s["gpu"] == "2"],
        what="the whole GPU's XID",
    )
    assert [(s["pod"], s["namespace"]) for s in xid] == [("dra-whole", "team-b")]
    [event] = exporter.get("/api/events?limit=1").json()
    assert (event["gpu"], event["pod"]) == ("2", "dra-whole")


def test_a_dynamic_mig_device_is_labelled_from_its_first_sample_and_goes_with_its_claim(
    exporter: Service, kubelet: FakeKubelet
) -> None:
    """As with the DRA driver's DynamicMIG: the claim is allocated (the kubelet lists it)
    before the driver creates the instance when the pod is prepared, and the instance is
    destroyed when the claim is released; no series ever names a pod that left."""
    assert exporter.post("/api/sim/mig", {"gpu": 1, "profiles": []}).status == 200
    wait_for(lambda: not _instances(exporter, "1"), what="GPU 1 without instances")
    # The name the driver gives the instance it is about to create: the whole-GPU profile
    # has one placement, so its GI profile id and placement start are known beforehand.
    profile = model("h100-80gb").profile("7g.80gb")
    [placement] = profile.placements
    name = f"gpu-1-mig-7g80gb-{profile.id}-{placement.start}"
    kubelet.set_pods([_dra_pod("dynamic-0", "dyn-claim", name)])
    assert exporter.post("/api/sim/mig", {"gpu": 1, "profiles": ["7g.80gb"]}).status == 200
    [instance] = sim_fleet(exporter)[1]["gpu_instances"]
    assert _mig_name(sim_fleet(exporter)[1], instance) == name
    gi = str(instance["id"])
    seen = wait_for(
        lambda: _instances(exporter, "1"), until=lambda gis: gi in gis, what="the new instance"
    )
    # From its first sample on, it names its pod, without a restart.
    assert (seen[gi].get("pod"), seen[gi].get("claim")) == ("dynamic-0", "team-b/dyn-claim"), seen
    # Released: the driver destroys the instance and the kubelet forgets the claim.
    assert exporter.post("/api/sim/mig", {"gpu": 1, "profiles": []}).status == 200
    kubelet.set_pods([])
    wait_for(lambda: not _instances(exporter, "1"), what="the instance's series gone")
    body = exporter.get("/metrics").body.decode()
    assert 'pod="dynamic-0"' not in body
    assert 'claim="team-b/dyn-claim"' not in body
    assert name not in exporter.log_path.read_text()  # listed before it existed: no warning


def test_a_dra_device_that_matches_nothing_is_said_once_and_labels_nothing(
    exporter: Service, kubelet: FakeKubelet
) -> None:
    ghost = "gpu-7-mig-1g10gb-19-3"  # no GPU has minor number 7
    kubelet.set_pods([_dra_pod("ghost-0", "ghost-claim", ghost), _dra_pod("odd-0", "odd", "gpu-x")])
    wait_for(
        exporter.log_path.read_text,
        until=lambda log: ghost in log and "'gpu-x'" in log,
        timeout=20,
        what="the log lines about the two devices",
    )
    # Several refreshes later, still one line each, and no series names either pod.
    since = float(scraped(exporter, catalog.LAST_COLLECT.name)[0]["value"])
    wait_for(
        lambda: float(scraped(exporter, catalog.LAST_COLLECT.name)[0]["value"]),
        until=lambda t: t > since + 5,
        timeout=20,
        what="five seconds of cycles",
    )
    log = exporter.log_path.read_text()
    assert log.count(ghost) == 1, exporter.log_tail()
    assert log.count("'gpu-x'") == 1, exporter.log_tail()
    body = exporter.get("/metrics").body.decode()
    assert 'pod="ghost-0"' not in body
    assert 'pod="odd-0"' not in body


def test_a_scenario_claims_and_releases_through_the_simulated_dra_driver(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``--simulate`` with a scenario that claims devices serves a kubelet of its own: the
    claim step creates the MIG device and allocates it in one go, the release destroys it."""
    workdir = tmp_path_factory.mktemp("dra-scenario")
    scenario = workdir / "dra.yaml"
    scenario.write_text(
        """
fleet: "h100-80gb:3g.40gb,h100-80gb"
steps:
  - at: 1
    claim: {gpu: 0, profile: 2g.20gb, pod: trainer-0, claim: trainer-gpu, namespace: team-c}
  - at: 1
    claim: {gpu: 1, pod: infer-0, claim: whole-gpu, namespace: team-c}
  - at: 1
    claim: {gpu: 0, gpu_instance_id: 2, pod: static-0, claim: static-gpu, namespace: team-c}
  - at: 4
    release: {claim: trainer-gpu, namespace: team-c}
""",
        encoding="utf-8",
    )
    service = start_exporter(workdir, str(scenario), "--pod-refresh", "200ms")
    try:
        made = wait_for(
            lambda: [s for s in scraped(service, INFO) if s["profile"] == "2g.20gb"],
            what="the claimed MIG device",
        )
        assert [(s["pod"], s["namespace"], s["claim"]) for s in made] == [
            ("trainer-0", "team-c", "team-c/trainer-gpu")
        ]
        static = wait_for(
            lambda: [s for s in scraped(service, INFO) if s.get("pod") == "static-0"],
            what="the statically claimed instance",
        )
        assert [(s["profile"], s["claim"]) for s in static] == [("3g.40gb", "team-c/static-gpu")]
        assert service.post("/api/sim/xid", {"gpu": 1, "xid": 48}).status == 200
        xid = wait_for(
            lambda: [s for s in scraped(service, catalog.XID_ERRORS.name) if s["gpu"] == "1"],
            what="the whole GPU's XID",
        )
        assert [s["pod"] for s in xid] == ["infer-0"]
        wait_for(
            lambda: not [s for s in scraped(service, INFO) if s["profile"] == "2g.20gb"],
            what="the released device gone",
        )
        assert 'pod="trainer-0"' not in service.get("/metrics").body.decode()
    finally:
        service.stop()
    assert "simulated kubelet" in service.log_path.read_text()
