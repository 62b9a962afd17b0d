"""Pod attribution: device ids to owners, and a watcher against a real gRPC kubelet on a socket."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from migexporter.backends.base import DeviceEvent, EventKind
from migexporter.collector import Collector
from migexporter.exposition import BuildInfo
from migexporter.kubelet import podresources_pb2 as api
from migexporter.pods import NO_OWNER, Owner, PodMap, PodResourcesWatcher, device_key, joined
from migexporter.server import create_app
from migexporter.sim.kubelet import FakeKubelet, claim, pod_resources
from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Placement, Topology
from stub_backend import StubBackend

MIG = "nvidia.com/mig-1g.10gb"
SRC = Path(__file__).resolve().parents[1] / "src"


def _gi(gi_id: int, ci_ids: tuple[int, ...] = (0,)) -> GpuInstance:
    cis = tuple(ComputeInstance(ci, f"MIG-{gi_id}-{ci}", "1g.10gb", 1, 16) for ci in ci_ids)
    return GpuInstance(gi_id, "1g.10gb", 1, 10 << 30, 16, compute_instances=cis)


MIG_GPU = Gpu(0, "GPU-0", "H100", mig_enabled=True, gpu_instances=(_gi(1), _gi(2), _gi(3, (0, 1))))
WHOLE_GPU = Gpu(1, "GPU-1", "H100")


def _map(*pods: api.PodResources) -> PodMap:
    return PodMap.from_response(api.ListPodResourcesResponse(pod_resources=pods))


# --- device ids and owners ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_id", "key"),
    [
        ("MIG-5c89f2a4-0b1e-5d5a-9a4e-3f1c2b7d8e90", "MIG-5c89f2a4-0b1e-5d5a-9a4e-3f1c2b7d8e90"),
        ("GPU-8e1f2a4c-1111-2222-3333-444455556666", "GPU-8e1f2a4c-1111-2222-3333-444455556666"),
        ("MIG-abc::3", "MIG-abc"),  # a time-slicing replica of a MIG device
        ("GPU-abc::0", "GPU-abc"),
        ("MIG-GPU-8e1f2a4c-1111/2/0", "GPU-8e1f2a4c-1111/2/0"),  # before driver R470
    ],
)
def test_device_ids_name_the_uuid_the_driver_reports(device_id, key):
    assert device_key(device_id) == key


def test_only_nvidia_gpu_and_mig_resources_are_read():
    """Single strategy (nvidia.com/gpu), mixed (nvidia.com/mig-*); CPUs and others ignored."""
    pods = _map(
        pod_resources("a", "single", {"c": {"nvidia.com/gpu": ["MIG-1-0"]}}),
        pod_resources("b", "mixed", {"c": {MIG: ["MIG-2-0"], "example.com/fpga": ["MIG-3-0"]}}),
        pod_resources("c", "whole", {"c": {"nvidia.com/gpu": ["GPU-1"]}}),
        pod_resources("d", "other", {"c": {"nvidia.com/gpu-shared": ["MIG-3-1"]}}),
    )
    assert set(pods.devices) == {"MIG-1-0", "MIG-2-0", "GPU-1"}
    assert pods.labels(MIG_GPU, _gi(1)) == ("a", "single", "c")
    assert pods.labels(MIG_GPU, _gi(2)) == ("b", "mixed", "c")
    assert pods.labels(MIG_GPU, MIG_GPU.gpu_instances[2]) == NO_OWNER
    assert pods.labels(WHOLE_GPU) == ("c", "whole", "c")
    assert pods.labels(MIG_GPU) == NO_OWNER  # a MIG GPU is nobody's as a whole


def test_compute_instances_of_one_gi_can_belong_to_different_containers():
    gi3 = MIG_GPU.gpu_instances[2]
    pods = _map(
        pod_resources("ns", "p", {"first": {MIG: ["MIG-3-0"]}, "second": {MIG: ["MIG-3-1"]}})
    )
    first, second = gi3.compute_instances
    assert pods.labels(MIG_GPU, gi3, first) == ("ns", "p", "first")
    assert pods.labels(MIG_GPU, gi3, second) == ("ns", "p", "second")
    assert pods.labels(MIG_GPU, gi3) == ("ns,ns", "p,p", "first,second")


def test_a_shared_device_names_every_holder_in_a_stable_order():
    """Time-slicing replicas of one MIG device given to two pods: both, sorted, position-wise."""
    pods = _map(
        pod_resources("team-b", "train", {"main": {MIG: ["MIG-1-0::1"]}}),
        pod_resources("team-a", "infer", {"srv": {MIG: ["MIG-1-0::0"]}}),
    )
    assert pods.labels(MIG_GPU, _gi(1)) == ("team-a,team-b", "infer,train", "srv,main")


def test_a_whole_gpu_holder_owns_its_instances_too():
    gpu = Gpu(2, "GPU-2", "A100", mig_enabled=True, gpu_instances=(_gi(5),))
    pods = _map(pod_resources("ns", "p", {"c": {"nvidia.com/gpu": ["GPU-2"]}}))
    assert pods.labels(gpu, gpu.gpu_instances[0]) == ("ns", "p", "c")


def test_legacy_mig_ids_are_matched_by_gpu_gi_and_ci():
    pods = _map(pod_resources("ns", "p", {"c": {MIG: ["MIG-GPU-0/2/0"]}}))
    assert pods.labels(MIG_GPU, _gi(2)) == ("ns", "p", "c")
    assert pods.labels(MIG_GPU, _gi(1)) == NO_OWNER


def test_no_holders_is_empty_labels():
    assert joined([]) == NO_OWNER
    assert joined([Owner("n", "p", "c")] * 2) == ("n", "p", "c")


# --- DRA: devices of NVIDIA's DRA driver, named by minor number, GI profile id and placement ---
NODE = "node-a"


def _dra_gi(gi_id: int, profile_id: int, start: int, ci_ids: tuple[int, ...] = (0,)) -> GpuInstance:
    cis = tuple(ComputeInstance(ci, f"MIG-d{gi_id}-{ci}", "1g.10gb", 1, 16) for ci in ci_ids)
    return GpuInstance(
        gi_id, "1g.10gb", 1, 10 << 30, 16, profile_id, Placement(start, 1), compute_instances=cis
    )


# Index and minor number differ on purpose: DRA names carry the minor (/dev/nvidia<minor>).
DRA_MIG_GPU = Gpu(
    0,
    "GPU-a",
    "H100",
    mig_enabled=True,
    gpu_instances=(_dra_gi(7, 19, 0), _dra_gi(8, 19, 1), _dra_gi(9, 19, 2, (0, 1))),
    minor_number=1,
)
DRA_WHOLE_GPU = Gpu(1, "GPU-b", "H100", minor_number=0)


def test_a_dra_mig_device_labels_its_gpu_instance_and_compute_instance():
    """gpu-1-mig-1g10gb-19-1 is the GI at placement 1 of the GPU whose minor is 1 (index 0)."""
    pods = _map(
        pod_resources(
            "team-a",
            "train",
            {},
            {"main": [claim("team-a", "mig", ["gpu-1-mig-1g10gb-19-1"], pool=NODE)]},
        )
    )
    gi7, gi8, gi9 = DRA_MIG_GPU.gpu_instances
    owner = ("team-a", "train", "main")
    assert pods.labels(DRA_MIG_GPU, gi8) == owner
    assert pods.labels(DRA_MIG_GPU, gi8, gi8.compute_instances[0]) == owner
    assert pods.claim(DRA_MIG_GPU, gi8) == "team-a/mig"
    for other in (gi7, gi9):
        assert pods.labels(DRA_MIG_GPU, other) == NO_OWNER
        assert pods.claim(DRA_MIG_GPU, other) == ""
    assert pods.labels(DRA_MIG_GPU) == NO_OWNER  # the GPU is not held whole
    assert pods.claim(DRA_MIG_GPU) == ""
    assert pods.labels(DRA_WHOLE_GPU) == NO_OWNER  # index 1 but minor 0: not the parent


def test_the_profile_text_of_a_name_is_not_matched():
    """The driver writes go-nvlib's profile, which may differ from NVML's: id and start decide."""
    pods = _map(
        pod_resources(
            "ns", "p", {"c": {}}, {"c": [claim("ns", "c", ["gpu-1-mig-1g12gb-19-2"], pool=NODE)]}
        )
    )
    gi9 = DRA_MIG_GPU.gpu_instances[2]
    assert pods.labels(DRA_MIG_GPU, gi9) == ("ns", "p", "c")
    assert pods.labels(DRA_MIG_GPU, gi9, gi9.compute_instances[1]) == ("ns", "p", "c")


def test_names_of_drivers_before_v25_12_are_matched_too():
    """gpu-<minor>-mig-<GI profile id>-<placement start>-<placement size>."""
    pods = _map(
        pod_resources("ns", "p", {}, {"c": [claim("ns", "c", ["gpu-1-mig-19-1-1"], pool=NODE)]})
    )
    assert pods.labels(DRA_MIG_GPU, DRA_MIG_GPU.gpu_instances[1]) == ("ns", "p", "c")
    assert pods.claim(DRA_MIG_GPU, DRA_MIG_GPU.gpu_instances[1]) == "ns/c"


def test_a_dra_gpu_beside_a_device_plugin_gpu_and_on_the_same_gpu():
    """Both sources on one node; holders of one GPU by either are comma-joined, claims sorted."""
    pods = _map(
        pod_resources("dra", "whole", {}, {"c": [claim("dra", "gpu", ["gpu-0"], pool=NODE)]}),
        pod_resources("plugin", "mig", {"c": {MIG: ["MIG-d7-0"]}}),
    )
    assert pods.labels(DRA_WHOLE_GPU) == ("dra", "whole", "c")
    assert pods.claim(DRA_WHOLE_GPU) == "dra/gpu"
    gi7 = DRA_MIG_GPU.gpu_instances[0]
    assert pods.labels(DRA_MIG_GPU, gi7) == ("plugin", "mig", "c")
    assert pods.claim(DRA_MIG_GPU, gi7) == ""

    shared = _map(
        pod_resources("dra", "whole", {}, {"c": [claim("dra", "gpu", ["gpu-0"], pool=NODE)]}),
        pod_resources("b", "second", {}, {"c": [claim("b", "also", ["gpu-0"], pool=NODE)]}),
        pod_resources("plugin", "p", {"c": {"nvidia.com/gpu": ["GPU-b"]}}),
    )
    assert shared.labels(DRA_WHOLE_GPU) == ("b,dra,plugin", "second,whole,p", "c,c,c")
    assert shared.claim(DRA_WHOLE_GPU) == "b/also,dra/gpu"


def test_a_gpu_given_whole_by_dra_owns_its_instances_and_their_claim():
    pods = _map(pod_resources("ns", "p", {}, {"c": [claim("ns", "all", ["gpu-1"], pool=NODE)]}))
    gi = DRA_MIG_GPU.gpu_instances[1]
    assert pods.labels(DRA_MIG_GPU, gi, gi.compute_instances[0]) == ("ns", "p", "c")
    assert pods.claim(DRA_MIG_GPU, gi) == "ns/all"


def test_devices_of_other_drivers_are_ignored():
    pods = _map(
        pod_resources(
            "ns",
            "p",
            {},
            {"c": [claim("ns", "nic", ["gpu-0"], pool=NODE, driver="dra.example.com")]},
        )
    )
    assert pods == PodMap()
    assert pods.labels(DRA_WHOLE_GPU) == NO_OWNER


def test_the_claim_resources_of_a_container_are_read_as_the_kubelet_sends_them():
    """Through the wire format: CDI names as NVIDIA's driver makes them, pool the node name."""
    pod = pod_resources("ns", "p", {}, {"c": [claim("ns", "gpu", ["gpu-0"], pool=NODE)]})
    wire = api.ListPodResourcesResponse(pod_resources=[pod]).SerializeToString()
    (resource,) = (
        api.ListPodResourcesResponse.FromString(wire)
        .pod_resources[0]
        .containers[0]
        .dynamic_resources[0]
        .claim_resources
    )
    assert (resource.driver_name, resource.pool_name, resource.device_name) == (
        "gpu.nvidia.com",
        NODE,
        "gpu-0",
    )
    (cdi,) = resource.cdi_devices
    assert cdi.name.startswith("k8s.gpu.nvidia.com/claim=")
    assert cdi.name.endswith("-gpu-0")


def test_dra_names_that_match_nothing_are_listed():
    """A GPU the exporter cannot see, an instance that does not exist (yet), a VFIO GPU."""
    names = [
        "gpu-1",
        "gpu-0",
        "gpu-1-mig-1g10gb-19-0",
        "gpu-1-mig-1g10gb-19-5",
        "gpu-4",
        "gpu-vfio-0",
    ]
    pods = _map(pod_resources("ns", "p", {}, {"c": [claim("ns", "c", names, pool=NODE)]}))
    topology = Topology((DRA_MIG_GPU, DRA_WHOLE_GPU))
    assert pods.dra_unmatched(topology) == ["gpu-1-mig-1g10gb-19-5", "gpu-4", "gpu-vfio-0"]
    unknown = Gpu(0, "GPU-a", "H100", gpu_instances=DRA_MIG_GPU.gpu_instances)  # no minor
    assert pods.dra_unmatched(Topology((unknown,))) == sorted(names)
    assert pods.labels(unknown, unknown.gpu_instances[0]) == NO_OWNER


async def test_a_name_the_driver_does_not_write_is_said_once_and_labels_nothing(
    kubelet, socket_path, caplog
):
    caplog.set_level(logging.INFO, logger="migexporter.pods")
    kubelet.set_pods(
        [pod_resources("ns", "p", {}, {"c": [claim("ns", "odd", ["gpu-x", "gpu-0"], pool=NODE)]})]
    )
    watcher = PodResourcesWatcher(socket_path)
    for _ in range(3):
        await watcher.refresh()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    why = "claim ns/odd, pod ns/p: GPU minor number 'x' is not a number"
    assert warnings == [f"DRA device 'gpu-x' not understood ({why}); no pod labels from it"]
    assert "gpu-x" not in watcher.current.devices
    assert watcher.current.labels(DRA_WHOLE_GPU) == ("ns", "p", "c")  # the good name still counts
    assert watcher.current.dra_unmatched(Topology((DRA_WHOLE_GPU,))) == []
    watcher.close()


# --- the watcher against a real gRPC server on a unix socket ------------------------------------
@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / "kubelet.sock")


@pytest.fixture
def kubelet(socket_path: str):
    server = FakeKubelet(socket_path).start()
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_watcher_lists_the_kubelets_pods(kubelet, socket_path):
    kubelet.set_pods([pod_resources("ns", "p", {"c": {MIG: ["MIG-1-0"]}})])
    watcher = PodResourcesWatcher(socket_path, refresh=0.05)
    await watcher.refresh()
    assert watcher.up is True
    assert watcher.current.labels(MIG_GPU, _gi(1)) == ("ns", "p", "c")
    kubelet.set_pods([])
    await watcher.refresh()
    assert watcher.current.labels(MIG_GPU, _gi(1)) == NO_OWNER
    watcher.close()


async def test_run_refreshes_in_the_background(kubelet, socket_path):
    watcher = PodResourcesWatcher(socket_path, refresh=0.02)
    task = asyncio.create_task(watcher.run())
    try:
        for _ in range(250):
            if kubelet.calls >= 3:
                break
            await asyncio.sleep(0.02)
        assert kubelet.calls >= 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_no_socket_turns_attribution_off_with_one_line(socket_path, caplog):
    caplog.set_level(logging.INFO, logger="migexporter.pods")
    watcher = PodResourcesWatcher(socket_path)
    for _ in range(3):
        await watcher.refresh()
    assert watcher.up is None
    assert watcher.current == PodMap()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "pod attribution off" in lines[0]
    assert socket_path in lines[0]
    # A kubelet that starts later is found at the next refresh.
    server = FakeKubelet(socket_path).start()
    try:
        server.set_pods([pod_resources("ns", "p", {"c": {MIG: ["MIG-1-0"]}})])
        await watcher.refresh()
        assert watcher.up is True
        assert watcher.current.devices
    finally:
        server.stop()
        watcher.close()


async def test_a_kubelet_that_stops_answering_ages_out(kubelet, socket_path, caplog):
    """The last map stands up to max_age, then the labels go; each transition logs once."""
    caplog.set_level(logging.INFO, logger="migexporter.pods")
    clock = Clock()
    kubelet.set_pods([pod_resources("ns", "p", {"c": {MIG: ["MIG-1-0"]}})])
    watcher = PodResourcesWatcher(socket_path, refresh=10, max_age=30, clock=clock)
    await watcher.refresh()
    kubelet.stop()
    for step in (10, 10, 9):  # 29 s without an answer: still labelled
        clock.now += step
        await watcher.refresh()
        assert watcher.up is False
        assert watcher.current.labels(MIG_GPU, _gi(1)) == ("ns", "p", "c")
    clock.now += 2
    await watcher.refresh()
    assert watcher.current == PodMap()
    await watcher.refresh()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "did not answer" in warnings[0]
    assert "dropped" in warnings[1]
    # It comes back: so do the labels, at the next refresh.
    again = FakeKubelet(socket_path).start()
    try:
        again.set_pods([pod_resources("ns", "q", {"c": {MIG: ["MIG-1-0"]}})])
        await watcher.refresh()
        assert watcher.up is True
        assert watcher.current.labels(MIG_GPU, _gi(1)) == ("ns", "q", "c")
    finally:
        again.stop()
        watcher.close()


async def test_a_hung_kubelet_costs_one_deadline_and_never_blocks_the_loop(kubelet, socket_path):
    kubelet.set_pods([pod_resources("ns", "p", {"c": {MIG: ["MIG-1-0"]}})])
    watcher = PodResourcesWatcher(socket_path, timeout=0.3)
    await watcher.refresh()
    kubelet.gate.clear()
    refresh = asyncio.create_task(watcher.refresh())
    ticks = 0
    while not refresh.done():  # the loop keeps running while the call waits in its thread
        ticks += 1
        await asyncio.sleep(0.01)
        assert ticks < 500
    assert ticks > 5
    assert watcher.up is False
    assert watcher.current.devices  # kept: younger than max_age
    kubelet.gate.set()
    await watcher.refresh()
    assert watcher.up is True
    watcher.close()


# --- labels on series, XIDs and /api/events, and a pod that moves --------------------------------
def _series(collector: Collector, name: str) -> dict[tuple[str, ...], dict[str, str]]:
    """Samples of one family keyed by (gpu, gi, ci, xid), with their labels."""
    out = {}
    for family in text_string_to_metric_families(collector.exposition.text.decode()):
        for s in family.samples:
            if s.name == name:
                key = tuple(
                    s.labels.get(k, "") for k in ("gpu", "gpu_instance_id", "compute_instance_id")
                )
                out[(*key, s.labels.get("xid", ""), s.labels.get("pod", ""))] = {
                    **s.labels,
                    "value": str(s.value),
                }
    return out


def _pods_of(collector: Collector, name: str) -> dict[str, tuple[str, str, str] | None]:
    """GI id -> (namespace, pod, container) of each series of a GI family; None when unlabelled."""
    return {
        labels["gpu_instance_id"]: (
            (labels["namespace"], labels["pod"], labels["container"]) if "pod" in labels else None
        )
        for labels in _series(collector, name).values()
    }


async def _eventually(check, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_pod_labels_follow_a_pod_across_instances(kubelet, socket_path):
    """GI, CI and XID series and /api/events carry the holder; a moved pod takes them along."""
    backend = StubBackend(gpus=[MIG_GPU])
    kubelet.set_pods([pod_resources("team-a", "train-0", {"main": {MIG: ["MIG-1-0"]}})])
    watcher = PodResourcesWatcher(socket_path, refresh=0.05)
    await watcher.refresh()
    collector = Collector(backend, BuildInfo("test"), interval=0.05, pods=watcher)
    await collector.start()
    background = asyncio.create_task(watcher.run())
    try:
        owner = ("team-a", "train-0", "main")
        sm = "nvidia_gpu_instance_sm_active_ratio"
        await _eventually(lambda: _pods_of(collector, sm).get("1") == owner)
        assert _pods_of(collector, sm) == {"1": owner, "2": None, "3": None}
        assert _pods_of(collector, "nvidia_gpu_instance_info")["1"] == owner
        ci_info = _series(collector, "nvidia_compute_instance_info")
        assert ci_info["0", "1", "0", "", "train-0"]["container"] == "main"
        assert "pod" not in ci_info["0", "2", "0", "", ""]  # empty labels are left out
        up = _series(collector, "migexporter_pod_resources_up")
        assert [labels["value"] for labels in up.values()] == ["1.0"]

        backend.events.put(DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 1, 0))
        xid = "nvidia_gpu_xid_errors_total"
        await _eventually(lambda: ("0", "1", "0", "48", "train-0") in _series(collector, xid))

        # The pod is rescheduled onto GI 2; GI 1 is free.
        kubelet.set_pods([pod_resources("team-a", "train-0", {"main": {MIG: ["MIG-2-0"]}})])
        await _eventually(lambda: _pods_of(collector, sm).get("2") == owner)
        assert _pods_of(collector, sm) == {"1": None, "2": owner, "3": None}
        backend.events.put(DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 2, 0))
        backend.events.put(DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 1, 0))
        await _eventually(lambda: ("0", "2", "0", "48", "train-0") in _series(collector, xid))
        await _eventually(lambda: ("0", "1", "0", "48", "") in _series(collector, xid))
        counts = {k: v["value"] for k, v in _series(collector, xid).items() if k[3] == "48"}
        # Each XID stays charged to whoever held the instance when it happened.
        assert counts == {
            ("0", "1", "0", "48", "train-0"): "1.0",
            ("0", "2", "0", "48", "train-0"): "1.0",
            ("0", "1", "0", "48", ""): "1.0",
        }

        async with TestClient(TestServer(create_app(collector))) as client:
            events = await (await client.get("/api/events")).json()
        where = [(e["gpu_instance_id"], e["namespace"], e["pod"], e["container"]) for e in events]
        assert where == [(1, "", "", ""), (2, *owner), (1, *owner)]
    finally:
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
        await collector.stop()


async def test_without_attribution_no_pod_series_or_labels():
    collector = Collector(StubBackend(gpus=[MIG_GPU]), BuildInfo("test"), interval=3600)
    await collector.start()
    try:
        text = collector.exposition.text.decode()
        assert not _series(collector, "migexporter_pod_resources_up")
        assert 'pod="' not in text
        assert 'namespace="' not in text
    finally:
        await collector.stop()


def test_committed_protobuf_module_is_protocs_output(tmp_path: Path):
    """podresources_pb2 is what the pinned grpcio-tools makes of podresources.proto."""
    proto = "migexporter/kubelet/podresources.proto"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I", str(SRC),
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(SRC / proto),
        ],
        check=True,
    )  # fmt: skip
    for suffix in ("_pb2.py", "_pb2.pyi"):
        generated = tmp_path / proto.replace(".proto", suffix)
        committed = SRC / proto.replace(".proto", suffix)
        assert committed.read_text() == generated.read_text(), f"regenerate {committed.name}"


def test_messages_keep_the_kubelets_field_numbers():
    """Wire compatibility: the numbers of k8s.io/kubelet pkg/apis/podresources/v1/api.proto."""
    numbers = {
        (message.name, field.name): field.number
        for message in api.DESCRIPTOR.message_types_by_name.values()
        for field in message.fields
    }
    assert numbers == {
        ("ListPodResourcesResponse", "pod_resources"): 1,
        ("GetPodResourcesRequest", "pod_name"): 1,
        ("GetPodResourcesRequest", "pod_namespace"): 2,
        ("GetPodResourcesResponse", "pod_resources"): 1,
        ("PodResources", "name"): 1,
        ("PodResources", "namespace"): 2,
        ("PodResources", "containers"): 3,
        ("ContainerResources", "name"): 1,
        ("ContainerResources", "devices"): 2,
        ("ContainerResources", "cpu_ids"): 3,
        ("ContainerResources", "dynamic_resources"): 5,
        ("ContainerDevices", "resource_name"): 1,
        ("ContainerDevices", "device_ids"): 2,
        ("ContainerDevices", "topology"): 3,
        ("TopologyInfo", "nodes"): 1,
        ("NUMANode", "ID"): 1,
        ("DynamicResource", "claim_name"): 2,  # 1 was class_name, removed in 1.31
        ("DynamicResource", "claim_namespace"): 3,
        ("DynamicResource", "claim_resources"): 4,
        ("ClaimResource", "cdi_devices"): 1,
        ("ClaimResource", "driver_name"): 2,
        ("ClaimResource", "pool_name"): 3,
        ("ClaimResource", "device_name"): 4,
        ("ClaimResource", "share_id"): 5,
        ("CDIDevice", "name"): 1,
    }
    service = api.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert {m.name for m in service.methods} == {"List", "Get"}


async def test_a_socket_it_may_not_use_turns_attribution_off_with_one_line(
    kubelet, socket_path, caplog, monkeypatch
):
    """As a non-root user the kubelet's socket refuses connections; said once, never tried."""
    caplog.set_level(logging.INFO, logger="migexporter.pods")
    monkeypatch.setattr("migexporter.pods.os.access", lambda _path, _mode: False)  # not root
    watcher = PodResourcesWatcher(socket_path)
    for _ in range(3):
        await watcher.refresh()
    assert watcher.up is None
    assert kubelet.calls == 0
    lines = [r.getMessage() for r in caplog.records]
    reason = f"no permission to connect to {socket_path} (the kubelet's socket is root's)"
    assert lines == [f"pod attribution off: {reason}"]
