"""NVIDIA's DRA device names: parsed into what they point at, and matched to the topology.

Names are written by the simulated DRA driver (``sim.kubelet.dra_mig_name``), which follows the
driver's own code apart from the exporter's parser.
"""

from __future__ import annotations

import pytest

from migexporter import dra
from migexporter.dra import MigDevice, PassthroughGpu, WholeGpu
from migexporter.pods import Owner, PodMap
from migexporter.sim.kubelet import dra_mig_name
from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Placement

START_3 = Placement(3, 1)


def _gi(
    profile: str = "1g.10gb", profile_id: int | None = 19, placement: Placement | None = START_3
) -> GpuInstance:
    ci = ComputeInstance(0, "MIG-x", profile, 1, 16)
    return GpuInstance(9, profile, 1, 10 << 30, 16, profile_id, placement, compute_instances=(ci,))


GPU = Gpu(2, "GPU-2", "H100", mig_enabled=True, minor_number=5)  # index 2 is /dev/nvidia5


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("gpu-0", WholeGpu(0)),
        ("gpu-17", WholeGpu(17)),
        ("gpu-1-mig-1g6gb-14-0", MigDevice(1, "1g6gb", 14, 0)),  # dcgm-exporter #664's example
        ("gpu-5-mig-1g10gb-19-3", MigDevice(5, "1g10gb", 19, 3)),
        ("gpu-0-mig-1g10gb-me-20-6", MigDevice(0, "1g10gb-me", 20, 6)),  # "1g.10gb+me"
        ("gpu-0-mig-1g20gb-meall-29-0", MigDevice(0, "1g20gb-meall", 29, 0)),  # "+me.all"
        ("gpu-3-mig-7g80gb-0-0", MigDevice(3, "7g80gb", 0, 0)),
        ("gpu-0-mig-9-4-2", MigDevice(0, None, 9, 4, 2)),  # before v25.12: id, start, size
        ("gpu-vfio-2", PassthroughGpu(2)),
    ],
)
def test_every_name_form_parses(name, device):
    assert dra.parse(name) == device


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("GPU-0", "does not start with 'gpu-'"),
        ("mig-0-1g10gb-9-0", "does not start with 'gpu-'"),
        ("", "does not start with 'gpu-'"),
        ("gpu-", "GPU minor number '' is not a number"),
        ("gpu-x", "GPU minor number 'x' is not a number"),
        ("gpu-01", "GPU minor number '01' is not a number"),  # Go's %d never pads
        ("gpu-0-extra", "GPU minor number '0-extra' is not a number"),
        ("gpu-vfio-", "passthrough index '' is not a number"),
        ("gpu-vfio-a", "passthrough index 'a' is not a number"),
        ("gpu-0-mig-", "MIG part is not <profile>-<GI profile id>-<placement start>"),
        ("gpu-0-mig-1g10gb-9", "MIG part is not <profile>-<GI profile id>-<placement start>"),
        ("gpu-0-mig-1g10gb-x-0", "GI profile id 'x' is not a number"),
        ("gpu-0-mig-1g10gb-9-y", "placement start 'y' is not a number"),
        ("gpu-0-mig-1g10gb-9-0-1", "MIG profile '1g10gb-9' is not like '1g10gb' or '1g10gb-me'"),
        ("gpu-0-mig-1g.10gb-9-0", "MIG profile '1g.10gb' is not like '1g10gb' or '1g10gb-me'"),
        ("gpu-0-mig--9-0", "MIG profile '' is not like '1g10gb' or '1g10gb-me'"),
        ("gpu-0-mig-9-4-2-1", "MIG profile '9-4' is not like '1g10gb' or '1g10gb-me'"),
    ],
)
def test_names_the_driver_does_not_write_are_refused_with_the_reason(name, reason):
    with pytest.raises(ValueError) as refused:
        dra.parse(name)
    assert str(refused.value) == reason


@pytest.mark.parametrize(
    ("profile", "written"),
    [
        ("1g.10gb", "1g10gb"),
        ("1g.10gb+me", "1g10gb-me"),
        ("1g.20gb+me.all", "1g20gb-meall"),
        ("1g.24gb+gfx", "1g24gb-gfx"),
        ("1g.10gb-me", "1g10gb-me"),  # the NO_ME profiles: same text, another profile id
        ("7G.80GB", "7g80gb"),
    ],
)
def test_profiles_are_written_as_the_driver_writes_them(profile, written):
    assert dra_mig_name(0, profile, 1, 0) == f"gpu-0-mig-{written}-1-0"


def test_canonical_names_come_from_minor_profile_id_and_placement_start():
    """The minor number, not the NVML index; the GI profile id; the placement's start only."""
    gi = _gi("1g.10gb+me", 20, Placement(6, 1))
    assert dra_mig_name(5, gi.profile, 20, 6) == "gpu-5-mig-1g10gb-me-20-6"
    assert dra.instance_key(GPU, gi) == (5, 20, 6)


@pytest.mark.parametrize(
    ("gpu", "gi"),
    [
        (Gpu(0, "GPU-0", "H100"), _gi()),  # no minor number (a backend that cannot tell)
        (GPU, _gi(profile_id=None)),  # no privileges for GPU instance details
        (GPU, _gi(placement=None)),
    ],
)
def test_unknown_parts_give_no_instance_key(gpu, gi):
    assert dra.instance_key(gpu, gi) is None


def test_an_unknown_minor_matches_no_whole_gpu_name():
    held = PodMap({"gpu-0": frozenset({Owner("ns", "p", "c")})}, {"gpu-0": WholeGpu(0)})
    assert held.labels(Gpu(0, "GPU-0", "H100")) == ("", "", "")
    assert held.labels(Gpu(0, "GPU-0", "H100", minor_number=0)) == ("ns", "p", "c")


@pytest.mark.parametrize(
    "profile", ["1g.10gb", "1g.10gb+me", "2g.20gb", "7g.80gb", "1g.20gb+me.all"]
)
def test_names_round_trip(profile):
    gi = _gi(profile, 14, Placement(4, 2))
    name = dra_mig_name(5, profile, 14, 4)
    parsed = dra.parse(name)
    assert isinstance(parsed, MigDevice)
    assert parsed.key == dra.instance_key(GPU, gi)
    assert f"-mig-{parsed.profile}-" in name
    assert dra.parse(f"gpu-{GPU.minor_number}") == WholeGpu(5)


@pytest.mark.parametrize(
    "name", ["gpu-0", "gpu-12", "gpu-3-mig-3g40gb-2-4", "gpu-0-mig-1g10gb-me-20-6", "gpu-vfio-1"]
)
def test_parsed_names_are_written_back_unchanged(name):
    device = dra.parse(name)
    if isinstance(device, MigDevice):
        assert device.profile is not None
        written = dra_mig_name(
            device.parent_minor, device.profile, device.profile_id, device.placement_start
        )
        assert written == name
    elif isinstance(device, WholeGpu):
        assert f"gpu-{device.minor}" == name
    else:
        assert device == PassthroughGpu(1)  # never an NVML GPU: nothing to write back
