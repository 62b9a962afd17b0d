"""The simulated node's DRA driver: claims create and destroy MIG devices and the kubelet lists
them by the driver's names, which the exporter's parser reads back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from migexporter import dra
from migexporter.sim import Fleet
from migexporter.sim.kubelet import DraNode, FakeKubelet
from migexporter.sim.profiles import SimError
from migexporter.sim.scenario import Step, parse_scenario, perform

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def node(tmp_path: Path) -> DraNode:
    fleet = Fleet.from_spec("h100-80gb:3g.40gb,h100-80gb")
    kubelet = FakeKubelet(str(tmp_path / "kubelet.sock"))  # never started: _pods is enough
    return DraNode(fleet, kubelet, "node-a")


def _listed(node: DraNode) -> list[tuple[str, str, str, str, str]]:
    """(namespace, pod, container, claim, device) of everything the kubelet lists."""
    return [
        (pod.namespace, pod.name, c.name, f"{d.claim_namespace}/{d.claim_name}", r.device_name)
        for pod in node.kubelet._pods
        for c in pod.containers
        for d in c.dynamic_resources
        for r in d.claim_resources
    ]


def test_a_claim_with_a_profile_creates_the_mig_device_and_release_destroys_it(node):
    fleet = node._fleet
    made = node.claim(0, "train-0", "gpu-claim", profile="1g.10gb", namespace="team-a")
    instances = fleet.describe()["gpus"][0]["gpu_instances"]
    [new] = [gi for gi in instances if gi["profile"] == "1g.10gb"]
    [(namespace, pod, container, claim, device)] = _listed(node)
    assert (namespace, pod, container, claim) == ("team-a", "train-0", "main", "team-a/gpu-claim")
    assert made["device"] == device
    parsed = dra.parse(device)
    assert isinstance(parsed, dra.MigDevice)
    assert (parsed.parent_minor, parsed.profile_id, parsed.placement_start) == (
        0, new["profile_id"], new["placement"]["start"],
    )  # fmt: skip
    assert len(fleet.describe()["gpus"][0]["gpu_instances"]) == 2  # the 3g one stays
    node.release("gpu-claim", namespace="team-a")
    assert _listed(node) == []
    assert [gi["profile"] for gi in fleet.describe()["gpus"][0]["gpu_instances"]] == ["3g.40gb"]


def test_a_claim_of_an_existing_instance_is_static_mig_and_release_keeps_it(node):
    [static] = node._fleet.describe()["gpus"][0]["gpu_instances"]
    device = node.claim(0, "serve-0", "static", gpu_instance_id=static["id"])["device"]
    assert dra.parse(device) == dra.MigDevice(
        0, "3g40gb", static["profile_id"], static["placement"]["start"]
    )
    node.release("static")
    assert node._fleet.describe()["gpus"][0]["gpu_instances"] == [static]
    with pytest.raises(SimError, match="no GPU instance 9"):
        node.claim(0, "serve-0", "static", gpu_instance_id=9)


def test_a_claim_without_a_profile_gives_the_whole_gpu_by_minor_number(node):
    node._fleet.gpus[1].minor = 5  # /dev/nvidia5: not the index
    assert node.claim(1, "infer-0", "whole")["device"] == "gpu-5"
    assert [row[-1] for row in _listed(node)] == ["gpu-5"]
    assert dra.parse("gpu-5") == dra.WholeGpu(5)


def test_claims_are_refused_when_they_cannot_be_done(node):
    node.claim(0, "a", "c1", profile="1g.10gb")
    with pytest.raises(SimError, match="already allocated"):
        node.claim(0, "b", "c1", profile="1g.10gb")
    with pytest.raises(SimError, match="not allocated"):
        node.release("nothing")
    with pytest.raises(SimError, match="not in MIG mode"):
        node.claim(1, "a", "c2", profile="1g.10gb")
    step = Step(0, "claim", {"gpu": 0, "pod": "p", "claim": "c"})
    with pytest.raises(SimError, match="kubelet"):
        perform(node._fleet, step)


def test_scenario_claim_and_release_steps_are_checked():
    scenario = parse_scenario(
        {
            "fleet": "h100-80gb:3g.40gb",
            "steps": [
                {"at": 1, "claim": {"gpu": 0, "pod": "p", "claim": "c", "profile": "2g.20gb"}},
                {"at": 5, "release": {"claim": "c"}},
            ],
        }
    )
    assert scenario.uses_dra
    assert not parse_scenario({"steps": [{"at": 1, "xid": {"gpu": 0, "xid": 48}}]}).uses_dra
    bad = [
        ({"gpu": 0, "claim": "c"}, "missing key 'pod'"),
        ({"gpu": 0, "pod": "p", "claim": "c", "profile": "5g.1gb"}, "5g.1gb"),
        ({"gpu": 0, "pod": "", "claim": "c"}, "expected a name"),
        ({"gpu": 3, "pod": "p", "claim": "c"}, "not a GPU index"),
        ({"gpu": 0, "pod": "p", "claim": "c", "gpu_instance_id": "1"}, "expected an integer"),
        (
            {"gpu": 0, "pod": "p", "claim": "c", "gpu_instance_id": 1, "profile": "1g.10gb"},
            "not both",
        ),
    ]
    for args, message in bad:
        with pytest.raises(SimError, match=message):
            parse_scenario({"fleet": "h100-80gb", "steps": [{"at": 0, "claim": args}]})
