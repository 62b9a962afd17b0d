"""The compact fleet spec: ``[N*]MODEL[:GI[*N][/CI[*M]]+...]`` per GPU, GPUs separated by ``,``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migexporter.sim import _placement
from migexporter.sim.profiles import CiProfile, GiProfile, GpuModel, SimError, ci_profile, model

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_SPEC = "h100-80gb:3g.40gb+2g.20gb+1g.10gb*2,h100-80gb:1g.10gb*7,h100-80gb"
MAX_GPUS = 64  # more than any single host holds; keeps a typo like 800* from eating memory
MAX_COUNT = 64  # per profile item; anything above the GPU's 7 slices is refused anyway

_GPU = re.compile(r"(?:(?P<count>\d+)\*)?(?P<model>[A-Za-z0-9-]+)(?::(?P<layout>.*))?", re.DOTALL)
_COUNTED = re.compile(r"(?P<name>[^*]+?)(?:\*(?P<count>\d+))?")


@dataclass(frozen=True)
class GiSpec:
    """One GPU instance to create, with the compute instances to create inside it."""

    profile: GiProfile
    compute_instances: tuple[CiProfile, ...]


@dataclass(frozen=True)
class GpuSpec:
    """One GPU of the fleet: its model and, when MIG is enabled, its instances."""

    model: GpuModel
    mig_enabled: bool = False
    layout: tuple[GiSpec, ...] = ()


def _counted(text: str, what: str) -> tuple[str, int]:
    """Split ``NAME*N`` into (NAME, N); N defaults to 1 and must be positive."""
    match = _COUNTED.fullmatch(text.strip())
    if match is None:
        raise SimError(f"bad {what} {text.strip()!r}: expected NAME or NAME*COUNT")
    count = int(match["count"] or 1)
    if not 1 <= count <= MAX_COUNT:
        raise SimError(f"bad {what} {text.strip()!r}: the count must be 1 to {MAX_COUNT}")
    return match["name"].strip(), count


def parse_layout(gpu_model: GpuModel, items: Sequence[str]) -> list[GiSpec]:
    """Parse layout items like ``3g.40gb``, ``1g.10gb*2`` or ``7g.80gb/1c*7``.

    A GPU instance without ``/`` gets one compute instance spanning it, as ``-cgi ... -C``
    does. Raises SimError for unknown profiles and for compute instances that do not fit.
    """
    layout: list[GiSpec] = []
    for item in items:
        gi_part, *ci_parts = item.split("/")
        name, count = _counted(gi_part, "GPU instance")
        profile = gpu_model.profile(name)
        cis: list[CiProfile] = []
        for part in ci_parts or [profile.name]:
            ci_name, ci_count = _counted(part, "compute instance")
            cis.extend([ci_profile(gpu_model, profile, ci_name)] * ci_count)
        if _placement.ci_starts(profile.slices, [(c.slices, c.starts) for c in cis]) is None:
            names = ", ".join(c.name for c in cis)
            raise SimError(f"compute instances {names} do not fit in one {profile.name}")
        layout.extend([GiSpec(profile, tuple(cis))] * count)
    return layout


def check_fits(gpu_model: GpuModel, layout: Sequence[GiSpec], gpu: int) -> None:
    """Raise SimError with nvidia-smi's wording when the layout cannot be placed."""
    profiles = [gi.profile for gi in layout]
    misfit = _placement.first_misfit(gpu_model, profiles)
    if misfit is not None:
        raise SimError(
            f"Unable to create a GPU instance on GPU {gpu} using profile "
            f"{profiles[misfit].name}: Insufficient Resources"
        )


def parse_fleet(spec: str) -> list[GpuSpec]:
    """Parse a fleet spec (or the word ``default``); SimError says what is wrong in one line."""
    try:
        return _parse_fleet(spec)
    except SimError as error:
        raise SimError(f"invalid fleet spec {spec.strip()!r}: {error}") from None


def _parse_fleet(spec: str) -> list[GpuSpec]:
    text = " ".join(spec.split())  # one line, whatever the caller passed
    if text.lower() == "default":
        text = DEFAULT_SPEC
    if not text:
        raise SimError("it is empty; give at least one GPU, e.g. h100-80gb")
    gpus: list[GpuSpec] = []
    for position, entry in enumerate(text.split(","), start=1):
        match = _GPU.fullmatch(entry.strip())
        if match is None:
            raise SimError(f"GPU entry {position} {entry.strip()!r} is not [N*]MODEL[:PROFILES]")
        count = int(match["count"] or 1)
        if count < 1:
            raise SimError(f"GPU entry {position}: the count must be at least 1")
        gpu_model = model(match["model"])
        layout_text = match["layout"]
        items = layout_text.split("+") if layout_text and layout_text.strip() else []
        if any(not item.strip() for item in items):
            raise SimError(f"GPU entry {position}: empty profile between '+' signs")
        layout = parse_layout(gpu_model, items)
        check_fits(gpu_model, layout, len(gpus))
        gpus.extend([GpuSpec(gpu_model, layout_text is not None, tuple(layout))] * count)
        if len(gpus) > MAX_GPUS:
            raise SimError(f"more than {MAX_GPUS} GPUs")
    return gpus
