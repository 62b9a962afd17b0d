"""MIG profiles and placement: the driver's rules, layouts that fit and layouts that do not."""

from __future__ import annotations

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet, SimError
from migexporter.sim.profiles import MODELS

EIGHT_SLICE_PLACEMENTS = {  # nvidia-smi mig -lgipp on A100 / H100 / H200, by profile index
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE: ((0, 1, 2, 3, 4, 5, 6), 1),
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1: ((0, 1, 2, 3, 4, 5, 6), 1),
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2: ((0, 2, 4, 6), 2),
    pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE: ((0, 2, 4), 2),
    pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE: ((0, 4), 4),
    pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE: ((0,), 4),
    pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE: ((0,), 8),
}


def layout(fleet: Fleet, gpu: int) -> list[tuple[int, str, int, int]]:
    """(GI id, profile, start, size) of each GPU instance."""
    return [
        (gi["id"], gi["profile"], gi["placement"]["start"], gi["placement"]["size"])
        for gi in fleet.describe()["gpus"][gpu]["gpu_instances"]
    ]


def test_the_default_fleet():
    """Mixed layout on GPU 0, seven 1g on GPU 1 (GI id 2 among them), MIG off on GPU 2."""
    fleet = Fleet.default()
    assert layout(fleet, 0) == [
        (1, "3g.40gb", 4, 4),
        (2, "2g.20gb", 2, 2),
        (3, "1g.10gb", 1, 1),
        (4, "1g.10gb", 0, 1),
    ]
    assert [gi[0] for gi in layout(fleet, 1)] == [1, 2, 3, 4, 5, 6, 7]
    assert {gi[1] for gi in layout(fleet, 1)} == {"1g.10gb"}
    gpus = fleet.describe()["gpus"]
    assert [g["mig_enabled"] for g in gpus] == [True, True, False]
    assert layout(fleet, 2) == []
    indices = [ci["mig_index"] for gi in gpus[0]["gpu_instances"] for ci in gi["compute_instances"]]
    assert indices == [0, 1, 2, 3]


@pytest.mark.parametrize("model", [m for m in MODELS.values() if m.memory_slices == 8])
def test_placements_of_eight_slice_gpus(model):
    """Each profile's possible placements are those nvidia-smi -lgipp prints."""
    for profile in model.profiles:
        starts, size = EIGHT_SLICE_PLACEMENTS[profile.index]
        assert (profile.starts, profile.size) == (starts, size), profile.name


def test_an_impossible_layout_is_refused_with_the_drivers_reason_and_changes_nothing():
    """Two 3g.40gb fill the H100's memory: a third instance is out of resources."""
    fleet = Fleet.default()
    before = fleet.describe()
    with pytest.raises(SimError) as caught:
        fleet.reconfigure(0, ["3g.40gb", "3g.40gb", "1g.10gb"])
    assert str(caught.value) == (
        "Unable to create a GPU instance on GPU 0 using profile 1g.10gb: Insufficient Resources"
    )
    assert fleet.describe() == before


def test_layouts_are_searched_not_placed_greedily():
    """A layout that one-by-one creation cannot place is found by the batch search."""
    fleet = Fleet.from_spec("h100-80gb:")
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    for profile_id in (14, 19, 19):
        nv.nvmlDeviceCreateGpuInstance(device, profile_id)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nv.nvmlDeviceCreateGpuInstance(device, 9)
    fleet.reconfigure(0, ["2g.20gb", "1g.10gb", "1g.10gb", "3g.40gb"])
    assert sorted(gi[1:] for gi in layout(fleet, 0)) == [
        ("1g.10gb", 0, 1),
        ("1g.10gb", 1, 1),
        ("2g.20gb", 2, 2),
        ("3g.40gb", 4, 4),
    ]


@pytest.mark.parametrize(
    ("profiles", "fits"),
    [
        (["1g.10gb*7"], True),
        (["1g.10gb*8"], False),
        (["1g.10gb+me"], True),
        (["1g.10gb+me*2"], False),
        (["1g.20gb*4"], True),
        (["1g.20gb*5"], False),
        (["2g.20gb*3", "1g.20gb"], True),
        (["2g.20gb*3", "1g.10gb*2"], False),
        (["4g.40gb", "3g.40gb"], True),
        (["4g.40gb*2"], False),
        (["7g.80gb", "1g.10gb"], False),
    ],
)
def test_instance_counts_and_slices_limit_h100_layouts(profiles, fits):
    """Per-profile instance counts and memory slices decide what fits on an H100."""
    fleet = Fleet.from_spec("h100-80gb")
    if fits:
        fleet.reconfigure(0, profiles)
        assert layout(fleet, 0)
    else:
        with pytest.raises(SimError, match="Insufficient Resources"):
            fleet.reconfigure(0, profiles)


@pytest.mark.parametrize(
    ("profiles", "fits"),
    [
        (["1g.6gb*4"], True),
        (["1g.6gb*5"], False),
        (["2g.12gb*2"], True),
        (["2g.12gb", "1g.6gb*2"], True),
        (["2g.12gb+me*2"], False),
        (["1g.6gb+me", "1g.6gb*3"], True),
        (["4g.24gb"], True),
        (["4g.24gb", "1g.6gb"], False),
    ],
)
def test_a30_layouts(profiles, fits):
    """The A30 has four slices: 1g at 0-3, 2g at 0 and 2, 4g at 0."""
    fleet = Fleet.from_spec("a30:")
    if fits:
        fleet.reconfigure(0, profiles)
    else:
        with pytest.raises(SimError, match="Insufficient Resources"):
            fleet.reconfigure(0, profiles)


def test_a30_has_four_mig_device_slots():
    """nvmlDeviceGetMaxMigDeviceCount is 4 on an A30 in MIG mode."""
    nv = FakeNvml(Fleet.from_spec("a30:1g.6gb*4"))
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetMaxMigDeviceCount(device) == 4
    assert nv.nvmlDeviceGetName(nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 3)) == (
        "NVIDIA A30 MIG 1g.6gb"
    )


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_every_models_whole_gpu_profile_fits_alone(model):
    """7g (4g on A30) takes every memory slice of an empty GPU."""
    fleet = Fleet.from_spec(f"{model.key}:")
    full = model.full_profile
    fleet.reconfigure(0, [full.name])
    assert layout(fleet, 0) == [(1, full.name, 0, model.memory_slices)]
    assert full.slices == model.compute_slices


def test_reconfiguring_enables_mig_and_an_empty_list_leaves_no_instances():
    """A MIG-disabled GPU gets MIG on; an empty layout keeps MIG on with nothing in it."""
    fleet = Fleet.default()
    fleet.reconfigure(2, ["4g.40gb", "2g.20gb"])
    assert fleet.describe()["gpus"][2]["mig_enabled"] is True
    assert [gi[1] for gi in layout(fleet, 2)] == ["4g.40gb", "2g.20gb"]
    fleet.reconfigure(2, [])
    assert fleet.describe()["gpus"][2]["mig_enabled"] is True
    assert layout(fleet, 2) == []


def test_reconfiguration_goes_through_the_library_even_for_an_unprivileged_exporter():
    """The operator is root: an exporter without privileges does not stop it."""
    fleet = Fleet.from_spec("h100-80gb:1g.10gb", privileged=False)
    exporter = FakeNvml(fleet)
    exporter.nvmlInit()
    fleet.reconfigure(0, ["3g.40gb*2"])
    assert [gi[1] for gi in layout(fleet, 0)] == ["3g.40gb", "3g.40gb"]
    exporter.nvmlShutdown()
    fleet.reconfigure(0, ["7g.80gb/1c*7"])
    cis = fleet.describe()["gpus"][0]["gpu_instances"][0]["compute_instances"]
    assert [ci["profile"] for ci in cis] == ["1c.7g.80gb"] * 7


def test_unknown_profiles_name_the_valid_ones():
    """A profile the model does not have is refused with the model's profile list."""
    fleet = Fleet.from_spec("a100-40gb")
    with pytest.raises(SimError) as caught:
        fleet.reconfigure(0, ["3g.40gb"])
    message = str(caught.value)
    assert "unknown profile '3g.40gb' for a100-40gb" in message
    assert "1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb" in message
