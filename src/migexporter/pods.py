"""Pod attribution: which Kubernetes containers hold each GPU, GPU instance and compute instance.

The kubelet's pod-resources API lists the devices that device plugins gave to each container
and the devices DRA gave it through resource claims (by default from Kubernetes 1.34; 1.31-1.33
behind the kubelet's ``KubeletPodResourcesDynamicResources`` gate). NVIDIA's device plugin
names them by UUID: GPU UUIDs for whole GPUs, MIG device UUIDs for MIG devices (resource
``nvidia.com/gpu`` under its single strategy, ``nvidia.com/mig-<profile>`` under the mixed one);
a MIG device is one compute instance of one GPU instance. NVIDIA's DRA driver
(``gpu.nvidia.com``) names them by minor number, GPU instance profile and placement
(``migexporter.dra``); its MIG device is a whole GPU instance. Both can give out devices on one
node; a device's holders are whoever either lists.

The watcher asks the kubelet in the background, never on a scrape, and keeps the answer as a
``PodMap``. When the kubelet stops answering, the last map stands until it is older than
``max_age``; then the labels go rather than name pods that may be gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

# gRPC's C core writes its own lines to stderr (a GOAWAY each time the kubelet restarts); the
# watcher logs what matters once. Set before grpc loads; an operator's own setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from migexporter import dra
from migexporter.kubelet import podresources_pb2 as api

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Topology

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# A node with hundreds of pods lists each pod's CPUs and memory too; gRPC's 4 MiB is too tight.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REPLICA_SEPARATOR = "::"  # time-slicing and MPS replicas: "<uuid>::<n>" share one device
LEGACY_MIG_PREFIX = "MIG-GPU-"  # drivers before R470: "MIG-GPU-<gpu uuid>/<gi>/<ci>"

Labels = tuple[str, str, str]  # namespace, pod, container
NO_OWNER: Labels = ("", "", "")


@dataclass(frozen=True, order=True)
class Owner:
    """One container that holds a device."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class PodMap:
    """Device ids (GPU and MIG UUIDs, DRA device names) to the containers that hold them.

    DRA device names ("gpu-0", "gpu-0-mig-1g10gb-9-0") share ``devices`` with the device
    plugin's UUIDs, which never look alike. ``dra_devices`` holds what each DRA name points at and
    ``claims`` the claims ("<namespace>/<name>") that gave it out; ``unparsed`` names the DRA
    devices that were left out, with why, for the watcher to say once.
    """

    devices: Mapping[str, frozenset[Owner]] = field(default_factory=dict)
    dra_devices: Mapping[str, dra.Device] = field(default_factory=dict)
    claims: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unparsed: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_response(cls, response: api.ListPodResourcesResponse) -> PodMap:
        """The NVIDIA devices of a ``List`` answer; other resources and drivers are ignored."""
        devices: dict[str, set[Owner]] = {}
        parsed: dict[str, dra.Device] = {}
        claims: dict[str, set[str]] = {}
        unparsed: dict[str, str] = {}
        for pod in response.pod_resources:
            for container in pod.containers:
                owner = Owner(pod.namespace, pod.name, container.name)
                for allocated in container.devices:
                    if not is_nvidia_resource(allocated.resource_name):
                        continue
                    for device_id in allocated.device_ids:
                        devices.setdefault(device_key(device_id), set()).add(owner)
                for dynamic in container.dynamic_resources:
                    claim = f"{dynamic.claim_namespace}/{dynamic.claim_name}"
                    for resource in dynamic.claim_resources:
                        # An empty name is a resource other than a device (the proto's comment).
                        if resource.driver_name != dra.DRIVER or not resource.device_name:
                            continue
                        name = resource.device_name
                        try:
                            parsed[name] = dra.parse(name)
                        except ValueError as error:
                            where = f"claim {claim}, pod {pod.namespace}/{pod.name}"
                            unparsed[name] = f"{where}: {error}"
                            continue
                        devices.setdefault(name, set()).add(owner)
                        claims.setdefault(name, set()).add(claim)
        return cls(
            {key: frozenset(owners) for key, owners in devices.items()},
            parsed,
            {name: frozenset(held) for name, held in claims.items()},
            unparsed,
        )

    def labels(
        self, gpu: Gpu, gi: GpuInstance | None = None, ci: ComputeInstance | None = None
    ) -> Labels:
        """``namespace``, ``pod``, ``container`` of whoever holds the GPU, GI or CI.

        A GI belongs to the holders of its compute instances, and to the holders of its DRA MIG
        device; anything on a GPU given whole (by UUID or DRA name) belongs to that GPU's
        holder. Several holders (a shared device, or a GI whose compute instances went to
        different containers) are comma-joined, in the same order in all three labels; none
        gives empty labels.
        """
        if not self.devices:
            return NO_OWNER
        owners = set(self.devices.get(gpu.uuid, ()))
        for name in self._dra_names(gpu, gi):
            owners.update(self.devices[name])
        if gi is not None:
            for each in (ci,) if ci is not None else gi.compute_instances:
                owners.update(self.devices.get(each.mig_uuid, ()))
                owners.update(self.devices.get(f"{gpu.uuid}/{gi.id}/{each.id}", ()))
        return joined(owners)

    def claim(self, gpu: Gpu, gi: GpuInstance | None = None) -> str:
        """The ``claim`` label: the DRA claims that hold the GPU or GI, sorted, comma-joined."""
        held = {c for name in self._dra_names(gpu, gi) for c in self.claims[name]}
        return ",".join(sorted(held))

    def dra_unmatched(self, topology: Topology) -> list[str]:
        """The DRA device names that point at no GPU or GPU instance of the topology, sorted."""
        matched = {
            name
            for gpu in topology.gpus
            for gi in (None, *gpu.gpu_instances)
            for name in self._dra_names(gpu, gi)
        }
        return sorted(set(self.dra_devices) - matched)

    def _dra_names(self, gpu: Gpu, gi: GpuInstance | None) -> list[str]:
        """The DRA names of the GPU given whole and, with ``gi``, of that GPU instance."""
        names = [] if gpu.minor_number is None else list(self._dra_gpus.get(gpu.minor_number, ()))
        if gi is not None and (key := dra.instance_key(gpu, gi)) is not None:
            names.extend(self._dra_instances.get(key, ()))
        return names

    @cached_property
    def _dra_gpus(self) -> dict[int, list[str]]:
        index: dict[int, list[str]] = {}
        for name, device in self.dra_devices.items():
            if isinstance(device, dra.WholeGpu):
                index.setdefault(device.minor, []).append(name)
        return index

    @cached_property
    def _dra_instances(self) -> dict[dra.InstanceKey, list[str]]:
        # By minor, GI profile id and placement start: the profile text in a name is the
        # driver's own rendering and need not equal NVML's.
        index: dict[dra.InstanceKey, list[str]] = {}
        for name, device in self.dra_devices.items():
            if isinstance(device, dra.MigDevice):
                index.setdefault(device.key, []).append(name)
        return index


def is_nvidia_resource(name: str) -> bool:
    """Whether a resource name is one NVIDIA's device plugin advertises for GPUs or MIG."""
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


def device_key(device_id: str) -> str:
    """A device plugin's id as the UUID it names: replicas and the pre-R470 form unwrapped."""
    key = device_id.split(REPLICA_SEPARATOR, 1)[0].strip()
    if key.startswith(LEGACY_MIG_PREFIX):
        return key.removeprefix("MIG-")  # "GPU-<uuid>/<gi>/<ci>"
    return key


def joined(owners: Iterable[Owner]) -> Labels:
    """One label triple for any number of holders, sorted so it is stable between refreshes."""
    ordered = sorted(set(owners))
    if not ordered:
        return NO_OWNER
    return (
        ",".join(o.namespace for o in ordered),
        ",".join(o.pod for o in ordered),
        ",".join(o.container for o in ordered),
    )


def _unusable(socket_path: str) -> str | None:
    """Why the socket cannot be used (absent, or no permission to connect); None if it can."""
    if not Path(socket_path).exists():
        return f"no kubelet pod-resources socket at {socket_path}"
    if not os.access(socket_path, os.R_OK | os.W_OK):
        return f"no permission to connect to {socket_path} (the kubelet's socket is root's)"
    return None


class PodResourcesWatcher:
    """Keeps a ``PodMap`` from the kubelet fresh, in the background.

    Args:
        socket_path: the kubelet's pod-resources unix socket.
        refresh: seconds between two ``List`` calls.
        max_age: how long the last answer labels series once the kubelet stops answering.
        timeout: deadline of one ``List`` call; a slow kubelet delays only the next refresh.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        *,
        refresh: float = 10.0,
        max_age: float = 60.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self._refresh = refresh
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self.current = PodMap()
        # None while the feature is off (no socket yet); else whether the last call answered.
        self.up: bool | None = None
        self._answered_at: float | None = None
        self._channel: grpc.Channel | None = None
        self._said_off = False
        self._said_unparsed: set[str] = set()

    async def run(self) -> None:
        """Refresh every ``refresh`` seconds until cancelled; call ``refresh`` once before."""
        try:
            while True:
                await asyncio.sleep(self._refresh)
                await self.refresh()
        finally:
            self.close()

    async def refresh(self) -> None:
        """Ask the kubelet once; on failure keep the last map until it is too old."""
        if self.up is None:
            reason = await asyncio.to_thread(_unusable, self.socket_path)
            if reason is not None:
                if not self._said_off:  # one line; the socket is looked at on every refresh
                    log.info("pod attribution off: %s", reason)
                    self._said_off = True
                return
        try:
            response = await asyncio.to_thread(self._list)
        except grpc.RpcError as error:
            # A new channel next time: gRPC's own reconnect backoff grows to minutes, and a
            # kubelet that restarts should be asked again at the next refresh.
            self.close()
            self._failed(f"{error.code().name}: {error.details()}")
            return
        self.current = PodMap.from_response(response)
        self._answered_at = self._clock()
        for name, why in self.current.unparsed.items():
            if name not in self._said_unparsed:  # once per name: the kubelet is asked every 10 s
                self._said_unparsed.add(name)
                log.warning("DRA device %r not understood (%s); no pod labels from it", name, why)
        if not self.up:
            log.info(
                "pod attribution on: kubelet at %s lists %d NVIDIA devices",
                self.socket_path,
                len(self.current.devices),
            )
        self.up = True

    def _list(self) -> api.ListPodResourcesResponse:
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                f"unix://{Path(self.socket_path).absolute()}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            )
        call = self._channel.unary_unary(
            LIST_METHOD,
            request_serializer=api.ListPodResourcesRequest.SerializeToString,
            response_deserializer=api.ListPodResourcesResponse.FromString,
        )
        response: api.ListPodResourcesResponse = call(
            api.ListPodResourcesRequest(), timeout=self._timeout
        )
        return response

    def _failed(self, reason: str) -> None:
        if self.up is not False:  # once per outage
            log.warning(
                "kubelet pod-resources at %s did not answer (%s); keeping the last pod map "
                "for up to %gs",
                self.socket_path,
                reason,
                self._max_age,
            )
        self.up = False
        age = None if self._answered_at is None else self._clock() - self._answered_at
        if self.current.devices and (age is None or age > self._max_age):
            log.warning(
                "pod map dropped: the kubelet has not answered for more than %gs", self._max_age
            )
            self.current = PodMap()

    def close(self) -> None:
        """Close the gRPC channel; the next refresh opens a new one."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
