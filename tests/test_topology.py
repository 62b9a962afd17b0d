"""Topology diff: instances appear, disappear, and recreated instances are new generations."""

from __future__ import annotations

from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Topology, diff


def _gi(gi_id: int, profile: str = "1g.10gb", uuid: str = "MIG-a") -> GpuInstance:
    ci = ComputeInstance(id=0, mig_uuid=uuid, profile=profile, slices=1, sms=16)
    return GpuInstance(
        id=gi_id, profile=profile, slices=1, memory_bytes=1, sms=16, compute_instances=(ci,)
    )


def _topology(*instances: GpuInstance, uuid: str = "GPU-1") -> Topology:
    gpu = Gpu(index=0, uuid=uuid, name="H100", mig_enabled=True, gpu_instances=instances)
    return Topology((gpu,))


def test_no_change_is_an_empty_diff():
    """Identical topologies produce a falsy diff."""
    assert not diff(_topology(_gi(1)), _topology(_gi(1)))


def test_added_and_removed_instances():
    """A new GI id is added; a missing one is removed."""
    changes = diff(_topology(_gi(1, uuid="MIG-a")), _topology(_gi(2, uuid="MIG-b")))
    assert {key[1] for key in changes.instances_added} == {2}
    assert {key[1] for key in changes.instances_removed} == {1}


def test_recreated_instance_with_same_id_is_a_new_generation():
    """The driver reuses GI ids; a new MIG UUID under the same id still counts as replaced."""
    changes = diff(_topology(_gi(1, uuid="MIG-a")), _topology(_gi(1, uuid="MIG-b")))
    assert len(changes.instances_added) == 1
    assert len(changes.instances_removed) == 1


def test_gpus_added_and_removed():
    """GPUs are diffed by UUID."""
    changes = diff(_topology(uuid="GPU-1"), _topology(uuid="GPU-2"))
    assert changes.gpus_added == {"GPU-2"}
    assert changes.gpus_removed == {"GPU-1"}


def test_slices_used_sums_gpu_instances():
    """Slices used is the sum of the GPU instances' slices."""
    gpu = _topology(_gi(1), _gi(2)).gpus[0]
    assert gpu.mig_slices_used == 2
    assert gpu.gpu_instance(2) is not None
    assert gpu.gpu_instance(3) is None
