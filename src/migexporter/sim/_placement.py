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


def candidates(
    model: GpuModel, existing: Sequence[Occupant], profile: GiProfile
) -> list[Placement]:
    """Free placements for one more ``profile`` instance, in the order the driver tries them.

    Descending start: NVIDIA's examples show the first 3g instance of an empty GPU at 4:4.
    """
    if not _within_limits(model, [*(p for p, _ in existing), profile]):
        return []
    used = 0
    for _, placement in existing:
        used |= _mask(placement)
    return [pl for pl in reversed(profile.placements) if not used & _mask(pl)]


def plan(
    model: GpuModel, profiles: Sequence[GiProfile], existing: Sequence[Occupant] = ()
) -> list[Placement] | None:
    """Placements for all of ``profiles`` besides ``existing``, or None when they cannot fit.

    Backtracking in the given profile order, trying each profile's placements in descending
    start order, so a layout the driver would take one instance at a time gets the same
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
        for placement in reversed(profiles[position].placements):
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
