"""A kubelet pod-resources server for tests and demos: real gRPC on a unix socket.

It serves the kubelet's ``v1.PodResourcesLister`` service (``List`` and ``Get``) with the wire
format of ``migexporter/kubelet/podresources.proto``; the pods it lists are whatever was last
given to ``set_pods``: device-plugin devices and DRA claims (``pod_resources``, ``claim``).
``gate`` lets a test hold every call, as a kubelet that hangs would.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from migexporter import dra
from migexporter.kubelet import podresources_pb2 as api

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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
