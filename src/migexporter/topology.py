"""GPUs and MIG instances as frozen values that backends produce and collectors diff."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Placement:
    """Where a GPU instance sits, in memory slices (NVML ``placement.start`` / ``.size``)."""

    start: int
    size: int


@dataclass(frozen=True)
class ComputeInstance:
    """One compute instance; with its GPU instance it forms one MIG device."""

    id: int
    mig_uuid: str
    profile: str  # the MIG device name, e.g. "3g.40gb" or "1c.3g.40gb"
    slices: int
    sms: int | None  # None where the backend cannot tell (DCGM without NVML)


@dataclass(frozen=True)
class GpuInstance:
    """One MIG GPU instance: its own memory, cache and SMs.

    ``generation`` tells two instances apart that reuse the same small id on the same GPU
    across a reconfiguration, so no state (GPM samples, series) crosses from one to the other.
    """

    id: int
    profile: str  # e.g. "3g.40gb", "1g.10gb+me"
    slices: int
    memory_bytes: int
    sms: int | None  # None where the backend cannot tell (DCGM without NVML)
    profile_id: int | None = None  # needs privileges
    placement: Placement | None = None  # needs privileges
    compute_instances: tuple[ComputeInstance, ...] = ()

    @property
    def generation(self) -> tuple[object, ...]:
        """Identity that changes whenever the instance is recreated."""
        return (self.id, self.profile, tuple(ci.mig_uuid for ci in self.compute_instances))

    @property
    def mig_uuid(self) -> str:
        """The MIG device UUID when the instance holds exactly one compute instance."""
        only = self.compute_instances
        return only[0].mig_uuid if len(only) == 1 else ""


@dataclass(frozen=True)
class Gpu:
    """One physical GPU and, in MIG mode, its instances."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str = ""
    mig_enabled: bool = False
    mig_slices_total: int = 0
    gpu_instances: tuple[GpuInstance, ...] = ()
    minor_number: int | None = None  # /dev/nvidia<minor>; None where the backend cannot tell

    @property
    def mig_slices_used(self) -> int:
        """Compute slices held by GPU instances."""
        return sum(gi.slices for gi in self.gpu_instances)

    def gpu_instance(self, gi_id: int) -> GpuInstance | None:
        """The GPU instance with this id, if it exists."""
        return next((gi for gi in self.gpu_instances if gi.id == gi_id), None)


@dataclass(frozen=True)
class Topology:
    """Every GPU the backend can see."""

    gpus: tuple[Gpu, ...] = ()
    driver_version: str = ""

    def gpu(self, uuid: str) -> Gpu | None:
        """The GPU with this UUID, if present."""
        return next((g for g in self.gpus if g.uuid == uuid), None)


InstanceKey = tuple[str, int, tuple[object, ...]]  # (gpu uuid, GI id, generation)


@dataclass(frozen=True)
class TopologyDiff:
    """What changed between two topologies, keyed by GPU UUID and instance generation."""

    gpus_added: frozenset[str] = field(default_factory=frozenset)
    gpus_removed: frozenset[str] = field(default_factory=frozenset)
    instances_added: frozenset[InstanceKey] = field(default_factory=frozenset)
    instances_removed: frozenset[InstanceKey] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(
            self.gpus_added or self.gpus_removed or self.instances_added or self.instances_removed
        )


def instance_keys(topology: Topology) -> frozenset[InstanceKey]:
    """Every GPU instance of a topology as a diffable key."""
    return frozenset(
        (gpu.uuid, gi.id, gi.generation) for gpu in topology.gpus for gi in gpu.gpu_instances
    )


def diff(old: Topology, new: Topology) -> TopologyDiff:
    """Compare two topologies; a recreated instance shows as removed plus added."""
    old_gpus = {g.uuid for g in old.gpus}
    new_gpus = {g.uuid for g in new.gpus}
    old_keys, new_keys = instance_keys(old), instance_keys(new)
    return TopologyDiff(
        gpus_added=frozenset(new_gpus - old_gpus),
        gpus_removed=frozenset(old_gpus - new_gpus),
        instances_added=new_keys - old_keys,
        instances_removed=old_keys - new_keys,
    )
