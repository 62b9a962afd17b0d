"""Where GPU instances may go: the driver's placement rules and a search for whole layouts."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from migexporter.sim.profiles import GiProfile, GpuModel, Placement

Occupant = tuple["GiProfile", "Placement"]


def _mask(placement: Placement) -> int:
    return ((1 << placement.size) - 1) << placement.start


def _within_limits(model: GpuModel, profiles: Iterable[GiProfile]) -> bool:
    """Per-profile instance counts and the compute slices of the GPU are not exceeded."""
    chosen = list(profiles)
    counts = Counter(p.id for p in chosen)
    if any(counts[p.id] > p.instances for p in chosen):
        return False
    return sum(p.slices for p in chosen) <= model.compute_slices


# The order in which the driver tries placement starts when it picks one itself
# (docs/facts/mig-gpu-instance-ids.md). On 8 memory slices, seven 1g created one by one land at
# 6, 4, 5, 0, 1, 2, 3 (an H100 PCIe's nvidia-smi mig -lgi; the same ids on A100s, e.g.
# rapidsai/dask-cuda#583); a profile with fewer starts takes them in the same order (3g: 4 then
# 0; 2g: 4, 0, 2; the first 1g.20gb at 6, as transcripts show). An A30's first two 1g landed at
# 0 and 1. Starts that overlap an instance are skipped. A second rule also fits every transcript
# (the free placement that leaves the most placements creatable, ties to the lowest start); they
# part only after placements chosen by hand, which no transcript shows, and the fixed order is
# the simpler of the two.
_START_ORDER = {8: (6, 4, 5, 0, 1, 2, 3), 4: (0, 1, 2, 3)}


def preferred(model: GpuModel, profile: GiProfile) -> list[Placement]:
    """Every placement of ``profile``, in the order the driver tries them."""
    order = _START_ORDER[model.memory_slices]
    return sorted(profile.placements, key=lambda pl: order.index(pl.start))


def gpu_instance_id(model: GpuModel, placement: Placement, halves_swapped: bool) -> int:
    """The id the driver gives a GPU instance at ``placement``.

    The memory slices form a binary tree, numbered from 0 at the root level by level: the whole
    GPU is 0, its halves 1 and 2, the quarters 3 to 6, single slices 7 to 14 (on 4 memory
    slices: 0, 1-2, 3-6). An instance's id is its node's number. Some GPUs number their two
    halves the other way round: on them a start is read with its top bit flipped. Two A100s of
    one host showed both (NVIDIA/DCGM#138: 3g.40gb at 4:4 is id 2 on one, 1 on the other), and
    nothing public tells which GPUs do: the fleet draws it per GPU from its seed.
    """
    slots = model.memory_slices
    start = placement.start ^ (slots // 2) if halves_swapped else placement.start
    return slots // placement.size - 1 + start // placement.size


def candidates(
    model: GpuModel, existing: Sequence[Occupant], profile: GiProfile
) -> list[Placement]:
    """Free placements for one more ``profile`` instance, in the order the driver tries them."""
    if not _within_limits(model, [*(p for p, _ in existing), profile]):
        return []
    used = 0
    for _, placement in existing:
        used |= _mask(placement)
    return [pl for pl in preferred(model, profile) if not used & _mask(pl)]


def plan(
    model: GpuModel, profiles: Sequence[GiProfile], existing: Sequence[Occupant] = ()
) -> list[Placement] | None:
    """Placements for all of ``profiles`` besides ``existing``, or None when they cannot fit.

    Backtracking in the given profile order, trying each profile's placements in the driver's
    order, so a layout the driver would take one instance at a time gets the same
    placements, and one that only fits in another arrangement is still found.
    """
    if not _within_limits(model, [*(p for p, _ in existing), *profiles]):
        return None
    used = 0
    for _, placement in existing:
        used |= _mask(placement)
    dead_ends: set[tuple[int, int]] = set()  # (position, occupied mask) known to fail

    def place(position: int, occupied: int) -> list[Placement] | None:
        if position == len(profiles):
            return []
        if (position, occupied) in dead_ends:
            return None
        for placement in preferred(model, profiles[position]):
            if occupied & _mask(placement):
                continue
            rest = place(position + 1, occupied | _mask(placement))
            if rest is not None:
                return [placement, *rest]
        dead_ends.add((position, occupied))
        return None

    return place(0, used)


def first_misfit(model: GpuModel, profiles: Sequence[GiProfile]) -> int | None:
    """Index of the first profile that cannot join the ones before it; None if all fit."""
    for end in range(1, len(profiles) + 1):
        if plan(model, profiles[:end]) is None:
            return end - 1
    return None


def ci_starts(width: int, sizes: Sequence[tuple[int, Sequence[int]]]) -> list[int] | None:
    """Starts for compute instances created one by one at their lowest free start.

    ``sizes`` holds (slices, allowed starts) per CI in creation order; ``width`` is the GPU
    instance's compute slices. None when one of them finds no room, as the driver would.
    """
    occupied = 0
    out = []
    for size, starts in sizes:
        mask = (1 << size) - 1
        start = next((s for s in starts if not occupied & (mask << s)), None)
        if start is None or start + size > width:
            return None
        occupied |= mask << start
        out.append(start)
    return out
