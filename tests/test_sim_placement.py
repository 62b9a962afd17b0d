"""MIG profiles and placement: the driver's rules, layouts that fit and layouts that do not."""

from __future__ import annotations

from ctypes import byref

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
    """Mixed layout on GPU 0, seven 1g on GPU 1, MIG off on GPU 2, with the driver's GI ids.

    GPU 0 numbers its halves as most GPUs do, GPU 1 the other way round; both layouts got these
    ids on real A100s (docs/facts/mig-gpu-instance-ids.md: NVIDIA/DCGM#138, dask-cuda#583).
    """
    fleet = Fleet.default()
    assert layout(fleet, 0) == [
        (2, "3g.40gb", 4, 4),
        (3, "2g.20gb", 0, 2),
        (9, "1g.10gb", 2, 1),
        (10, "1g.10gb", 3, 1),
    ]
    assert layout(fleet, 1) == [  # created at 6, 4, 5, 0, 1, 2, 3: listed by id
        (7, "1g.10gb", 4, 1),
        (8, "1g.10gb", 5, 1),
        (9, "1g.10gb", 6, 1),
        (11, "1g.10gb", 0, 1),
        (12, "1g.10gb", 1, 1),
        (13, "1g.10gb", 2, 1),
        (14, "1g.10gb", 3, 1),
    ]
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
        ("1g.10gb", 2, 1),
        ("1g.10gb", 3, 1),
        ("2g.20gb", 0, 2),
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
    assert layout(fleet, 0) == [(0, full.name, 0, model.memory_slices)]  # the root: id 0
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


# The driver's GI id for each placement of an 8-memory-slice GPU, as transcripts show them
# (docs/facts/mig-gpu-instance-ids.md, table in section 1): (start, size) -> (normal, swapped).
EIGHT_SLICE_IDS = {
    **{(start, 1): (7 + start, 7 + (start ^ 4)) for start in range(7)},
    (0, 2): (3, 5),
    (2, 2): (4, 6),
    (4, 2): (5, 3),
    (6, 2): (6, 4),
    (0, 4): (1, 2),
    (4, 4): (2, 1),
    (0, 8): (0, 0),
}


@pytest.mark.parametrize("swapped", [False, True])
@pytest.mark.parametrize("model", [m for m in MODELS.values() if m.memory_slices == 8])
def test_a_gpu_instance_id_is_its_placements_node_in_the_slice_tree(model, swapped):
    """Every placement of every profile gets the id real drivers give it, in both numberings."""
    for profile in model.profiles:
        for placement in profile.placements:
            fleet = Fleet.from_spec(f"{model.key}:")
            fleet.gpus[0].halves_swapped = swapped
            nv = FakeNvml(fleet)
            nv.nvmlInit()
            device = nv.nvmlDeviceGetHandleByIndex(0)
            where = pynvml.c_nvmlGpuInstancePlacement_t(*placement)
            gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(device, profile.id, byref(where))
            expected = EIGHT_SLICE_IDS[tuple(placement)][swapped]
            assert nv.nvmlGpuInstanceGetInfo(gi).id == expected, (profile.name, placement)


@pytest.mark.parametrize(
    ("spec", "swapped", "profile_ids", "expected"),
    [
        # Seven 1g, one by one: placements 6, 4, 5, 0, 1, 2, 3 (an H100 PCIe, with -lgi).
        ("h100-80gb:", True, [19] * 7, [9, 7, 8, 11, 12, 13, 14]),
        ("a100-40gb:", True, [19] * 7, [9, 7, 8, 11, 12, 13, 14]),  # dask-cuda#583
        ("h100-80gb:", False, [19] * 7, [13, 11, 12, 7, 8, 9, 10]),
        # The MIG user guide's examples on an A100-SXM4-40GB (-cgi in this order).
        ("a100-40gb:", False, [19, 19, 14, 9], [13, 11, 3, None]),
        ("a100-40gb:", False, [9, 19, 14, 19], [2, 7, 4, 8]),
        ("a100-40gb:", False, [14, 19, 19, 19, 19, 19], [5, 13, 7, 8, 9, 10]),
        # Others' transcripts: A100-PCIE-40GB (swapped), A100 40GB, Azure's A100 80GB, an A30.
        ("a100-40gb:", True, [9, 19, 14, 19], [1, 11, 6, 12]),
        ("a100-40gb:", False, [19, 14, 5], [13, 5, 1]),
        ("a100-40gb:", True, [5, 14, 19], [2, 3, 9]),
        ("a100-80gb:", False, [14, 14, 14, 20], [5, 3, 4, 13]),
        ("a30:", False, [14, 14, 5], [3, 4, 2]),
    ],
)  # fmt: skip
def test_the_driver_places_instances_in_its_own_order(spec, swapped, profile_ids, expected):
    """Created without a placement, instances get the ids the driver gave them in transcripts.

    None: the driver answered Insufficient Resources.
    """
    fleet = Fleet.from_spec(spec)
    fleet.gpus[0].halves_swapped = swapped
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    got: list[int | None] = []
    for profile_id in profile_ids:
        try:
            gi = nv.nvmlDeviceCreateGpuInstance(device, profile_id)
            got.append(nv.nvmlGpuInstanceGetInfo(gi).id)
        except pynvml.NVMLError_InsufficientResources:
            got.append(None)
    assert got == expected


def test_the_first_1g_with_two_memory_slices_goes_at_6():
    """An H100 PCIe's first 1g.20gb was a DRA device named ...-1g20gb-15-6 (its start)."""
    fleet = Fleet.from_spec("h100-80gb:1g.20gb")
    assert layout(fleet, 0)[0][1:] == ("1g.20gb", 6, 2)


def test_fleets_have_gpus_of_both_numberings():
    """Which way a GPU numbers its halves is a fixed, seeded property; both kinds are common."""
    fleet = Fleet.from_spec("8*a100-40gb:,a30:")
    kinds = [gpu.halves_swapped for gpu in fleet.gpus]
    assert set(kinds[:8]) == {False, True}
    assert kinds[8] is False  # no A30 was seen numbering its halves the other way round
    assert [gpu.halves_swapped for gpu in Fleet.from_spec("8*a100-40gb:,a30:").gpus] == kinds
