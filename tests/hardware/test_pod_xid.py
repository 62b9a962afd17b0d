"""Pod attribution on a real GPU: an XID on a GPU given whole to a pod is counted under the pod.

A fake kubelet (a real gRPC server on a unix socket, ``migexporter.sim.kubelet``) says that GPU
0 belongs to a container, as NVIDIA's device plugin reports a whole GPU (``nvidia.com/gpu``, the
GPU's UUID). xid_fault.py then raises XID 31 on GPU 0, as in test_xid31.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu, fault_report, start_fault

from migexporter.sim.kubelet import FakeKubelet, pod_resources

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.gpu

XID = 31
OWNER = {"namespace": "tenant-a", "pod": "train-0", "container": "main"}
TIMEOUT_S = 10.0


def _pod_xids(exporter: Exporter, gpu_uuid: str) -> float:
    """The XID-31 counter of GPU 0 that carries the pod's labels; absent is 0."""
    found = [
        s.value
        for s in exporter.samples()
        if s.name == "nvidia_gpu_xid_errors_total"
        and s.labels.get("gpu_uuid") == gpu_uuid
        and s.labels.get("xid") == str(XID)
        and all(s.labels.get(key) == value for key, value in OWNER.items())
    ]
    assert len(found) <= 1
    return found[0] if found else 0.0


def test_an_xid_on_a_gpu_held_by_a_pod_carries_the_pods_labels(
    gpu0: Gpu, tmp_path: Path, figures: dict[str, Any]
) -> None:
    socket_path = str(tmp_path / "kubelet.sock")
    kubelet = FakeKubelet(socket_path).start()
    devices = {OWNER["container"]: {"nvidia.com/gpu": [gpu0.uuid]}}
    kubelet.set_pods([pod_resources(OWNER["namespace"], OWNER["pod"], devices)])
    exporter = Exporter.start(
        tmp_path / "exporter.log", 0.25, "--pod-resources-socket", socket_path,
        "--pod-refresh", "0.5s",
    )  # fmt: skip
    try:
        up = [s.value for s in exporter.samples() if s.name == "migexporter_pod_resources_up"]
        assert up == [1.0], exporter.log_tail()
        before = _pod_xids(exporter, gpu0.uuid)
        child = start_fault(gpu0.uuid)
        deadline = time.monotonic() + TIMEOUT_S
        while (count := _pod_xids(exporter, gpu0.uuid)) == before:
            assert time.monotonic() < deadline, f"XID {XID} not counted under the pod"
            time.sleep(0.05)
        fault = fault_report(child)
        figures["fault"] = {"error": fault.error}
        figures["count"] = [before, count]
        assert count == before + 1
        newest = next(e for e in exporter.json("/api/events") if e.get("xid") == XID)
        figures["event"] = newest
        assert {key: newest[key] for key in OWNER} == OWNER
        assert newest["gpu_uuid"] == gpu0.uuid
    finally:
        exporter.stop()
        kubelet.stop()
