"""A kubelet pod-resources server for tests and demos: real gRPC on a unix socket.

It serves the kubelet's ``v1.PodResourcesLister`` service (``List`` and ``Get``) with the wire
format of ``migexporter/kubelet/podresources.proto``; the pods it lists are whatever was last
given to ``set_pods``: device-plugin devices and DRA claims (``pod_resources``, ``claim``).
``gate`` lets a test hold every call, as a kubelet that hangs would.
"""

from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from migexporter import dra
from migexporter.kubelet import podresources_pb2 as api
from migexporter.sim.profiles import SimError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from migexporter.sim.fleet import Fleet

SERVICE = "v1.PodResourcesLister"
GATE_LIMIT_S = 30.0  # a held call never outlives a test run


def pod_resources(
    namespace: str,
    name: str,
    containers: Mapping[str, Mapping[str, Sequence[str]]],
    claims: Mapping[str, Sequence[api.DynamicResource]] | None = None,
) -> api.PodResources:
    """One pod as the kubelet lists it: container -> resource name -> device ids.

    ``claims`` gives containers DRA allocations too (container -> ``claim(...)``); a container
    named only there holds DRA devices alone.
    """
    claims = claims or {}
    return api.PodResources(
        namespace=namespace,
        name=name,
        containers=[
            api.ContainerResources(
                name=container,
                devices=[
                    api.ContainerDevices(resource_name=resource, device_ids=list(ids))
                    for resource, ids in containers.get(container, {}).items()
                ],
                dynamic_resources=claims.get(container, ()),
            )
            for container in dict.fromkeys([*containers, *claims])
        ],
    )


def claim(
    namespace: str, name: str, devices: Sequence[str], *, pool: str, driver: str = dra.DRIVER
) -> api.DynamicResource:
    """One ResourceClaim's devices as the kubelet lists them for a container.

    ``devices`` are device names in ``pool`` (NVIDIA's driver: the node name), each with the CDI
    device name NVIDIA's driver gives it, ``k8s.<driver>/claim=<claim uid>-<device>``; the uid is
    made up from the claim's namespace and name, so it is stable between calls.
    """
    uid = uuid.uuid5(uuid.NAMESPACE_URL, f"resourceclaim:{namespace}/{name}")
    return api.DynamicResource(
        claim_namespace=namespace,
        claim_name=name,
        claim_resources=[
            api.ClaimResource(
                driver_name=driver,
                pool_name=pool,
                device_name=device,
                cdi_devices=[api.CDIDevice(name=f"k8s.{driver}/claim={uid}-{device}")],
            )
            for device in devices
        ],
    )


class FakeKubelet:
    """The pod-resources service on ``socket_path`` until ``stop``."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self._pods: list[api.PodResources] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def set_pods(self, pods: Sequence[api.PodResources]) -> None:
        """What ``List`` answers from now on."""
        with self._lock:
            self._pods = list(pods)

    def start(self) -> FakeKubelet:
        """Listen on the socket; raises RuntimeError when it cannot be bound."""
        server = grpc.server(ThreadPoolExecutor(4, "fake-kubelet"))
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "List": grpc.unary_unary_rpc_method_handler(
                self._list,
                request_deserializer=api.ListPodResourcesRequest.FromString,
                response_serializer=api.ListPodResourcesResponse.SerializeToString,
            ),
            "Get": grpc.unary_unary_rpc_method_handler(
                self._get,
                request_deserializer=api.GetPodResourcesRequest.FromString,
                response_serializer=api.GetPodResourcesResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket, as a kubelet that exits does."""
        self.gate.set()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def _list(
        self, _request: api.ListPodResourcesRequest, _context: grpc.ServicerContext
    ) -> api.ListPodResourcesResponse:
        self.calls += 1
        self.gate.wait(GATE_LIMIT_S)
        with self._lock:
            return api.ListPodResourcesResponse(pod_resources=self._pods)

    def _get(
        self, request: api.GetPodResourcesRequest, context: grpc.ServicerContext
    ) -> api.GetPodResourcesResponse:
        self.gate.wait(GATE_LIMIT_S)
        with self._lock:
            for pod in self._pods:
                if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name):
                    return api.GetPodResourcesResponse(pod_resources=pod)
        context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"pod {request.pod_name} in namespace {request.pod_namespace} not found",
        )
        raise AssertionError  # abort raises


def dra_mig_name(minor: int, profile: str, profile_id: int, placement_start: int) -> str:
    """The name NVIDIA's DRA driver (v25.12 on) gives a MIG device (mig.go ToCanonicalName).

    The profile is lower-cased, its dots removed, other characters but ``[a-z0-9-]`` made
    ``-``. Written here from the driver, apart from the exporter's parser, so each checks the other.
    """
    text = re.sub(r"[^a-z0-9-]", "-", profile.replace(".", "").lower()).strip("-")
    return f"gpu-{minor}-mig-{text}-{profile_id}-{placement_start}"


@dataclass(frozen=True)
class _Allocation:
    namespace: str
    pod: str
    container: str
    claim: str
    device: str
    gpu: int
    made_id: int | None  # the GPU instance made for the claim, destroyed with it


class DraNode:
    """NVIDIA's DRA driver and the kubelet on one simulated node, for scenarios.

    ``claim`` does what preparing a claim does: with a profile, create that MIG device (one GPU
    instance with one compute instance spanning it, the driver's DynamicMIG) and give it to the
    pod; with a GPU instance id, give that existing instance (static MIG); with neither, give
    the whole GPU. ``release`` undoes it, destroying only a MIG device made for the claim. The
    kubelet then lists the pod's claim by device name, in pool ``node``.
    """

    def __init__(self, fleet: Fleet, kubelet: FakeKubelet, node: str) -> None:
        self._fleet = fleet
        self.kubelet = kubelet
        self._node = node
        self._allocations: dict[tuple[str, str], _Allocation] = {}
        self._lock = threading.Lock()

    def claim(  # noqa: PLR0913  (a claim's parts, as a scenario step names them)
        self,
        gpu: int,
        pod: str,
        claim: str,
        *,
        profile: str | None = None,
        gpu_instance_id: int | None = None,
        namespace: str = "default",
        container: str = "main",
    ) -> dict[str, Any]:
        """Allocate a device of GPU ``gpu`` to a pod.

        That is a MIG device of ``profile`` (created now), an existing GPU instance (static
        MIG), or the whole GPU.
        """
        if (namespace, claim) in self._allocations:
            raise SimError(f"claim {namespace}/{claim} is already allocated")
        if profile is not None and gpu_instance_id is not None:
            raise SimError("give a profile (a MIG device made for the claim) or a GPU instance")
        minor = self._fleet.gpus[gpu].minor_number
        made_id = None
        if profile is None and gpu_instance_id is None:
            device = f"gpu-{minor}"
        else:
            if profile is not None:
                gi = self._fleet.add_instance(gpu, profile)
                made_id = gi["id"]
            else:
                gi = self._instance(gpu, gpu_instance_id)
            start = gi["placement"]["start"]
            device = dra_mig_name(minor, gi["profile"], gi["profile_id"], start)
        with self._lock:
            self._allocations[(namespace, claim)] = _Allocation(
                namespace, pod, container, claim, device, gpu, made_id
            )
            self._publish()
        return {"claim": f"{namespace}/{claim}", "device": device, "pod": f"{namespace}/{pod}"}

    def _instance(self, gpu: int, gi_id: int | None) -> dict[str, Any]:
        """An existing GPU instance as ``describe`` lists it; SimError when there is none."""
        listed = self._fleet.describe()["gpus"][gpu]["gpu_instances"]
        found = next((gi for gi in listed if gi["id"] == gi_id), None)
        if found is None:
            raise SimError(f"GPU {gpu} has no GPU instance {gi_id}")
        return dict(found)

    def release(self, claim: str, *, namespace: str = "default") -> dict[str, Any]:
        """Take the claim's device back from its pod, destroying a MIG device made for it."""
        with self._lock:
            gone = self._allocations.pop((namespace, claim), None)
            if gone is None:
                raise SimError(f"claim {namespace}/{claim} is not allocated")
            self._publish()
        if gone.made_id is not None:
            self._fleet.remove_instance(gone.gpu, gone.made_id)
        return {"claim": f"{namespace}/{claim}", "device": gone.device}

    def _publish(self) -> None:
        pods: dict[tuple[str, str], dict[str, list[api.DynamicResource]]] = {}
        for each in self._allocations.values():
            containers = pods.setdefault((each.namespace, each.pod), {})
            containers.setdefault(each.container, []).append(
                claim(each.namespace, each.claim, [each.device], pool=self._node)
            )
        self.kubelet.set_pods(
            [pod_resources(ns, name, {}, claims=held) for (ns, name), held in pods.items()]
        )
