"""NVIDIA's DRA device names: what each name points at, and the key a GPU instance matches by.

The exporter only reads these names; the simulated DRA driver (``sim.kubelet``) writes them,
on its own, so that each checks the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migexporter.topology import Gpu, GpuInstance

# The formats, from kubernetes-sigs/dra-driver-nvidia-gpu cmd/gpu-kubelet-plugin (sources in
# shared/facts/dra-driver-nvidia-gpu.md): "gpu-<minor>" for a whole GPU, the minor being
# nvmlDeviceGetMinorNumber (not the NVML index); "gpu-<parent minor>-mig-<profile>-<GI profile
# id>-<placement start>" for a MIG device since v25.12, the profile without dots and in RFC 1123
# form ("1g.10gb+me" is "1g10gb-me"); "gpu-<minor>-mig-<GI profile id>-<start>-<size>" before;
# "gpu-vfio-<n>" for a GPU passed through to a VM, which NVML never sees.
DRIVER = "gpu.nvidia.com"
PREFIX = "gpu-"
MIG_SEPARATOR = "-mig-"
PASSTHROUGH_PREFIX = "gpu-vfio-"

_NUMBER = re.compile(r"0|[1-9][0-9]*")  # as Go's %d writes it: ASCII, no leading zeros
# A MIG profile in a name: "<G>g<GB>gb" plus attributes, such as "-me", "-meall", "-gfx".
_PROFILE = re.compile(r"[0-9]+g[0-9]+gb(?:-[a-z]+)*")

InstanceKey = tuple[int, int, int]  # parent minor, GI profile id, placement start


@dataclass(frozen=True)
class WholeGpu:
    """``gpu-<minor>``: a GPU given whole."""

    minor: int


@dataclass(frozen=True)
class MigDevice:
    """A MIG device: one GPU instance with the one compute instance that spans it."""

    parent_minor: int
    profile: str | None  # as written in the name ("1g10gb-me"); None in the pre-v25.12 form
    profile_id: int  # the GPU instance profile id
    placement_start: int
    placement_size: int | None = None  # only the pre-v25.12 form writes it

    @property
    def key(self) -> InstanceKey:
        """What identifies the GPU instance; the profile text is the driver's, not NVML's."""
        return (self.parent_minor, self.profile_id, self.placement_start)


@dataclass(frozen=True)
class PassthroughGpu:
    """``gpu-vfio-<n>``: a GPU bound to vfio-pci for a VM; ``n`` is no minor number."""

    index: int


Device = WholeGpu | MigDevice | PassthroughGpu


def parse(name: str) -> Device:
    """What a device name of NVIDIA's DRA driver points at; ValueError says why it cannot tell."""
    if not name.startswith(PREFIX):
        raise ValueError(f"does not start with {PREFIX!r}")
    if name.startswith(PASSTHROUGH_PREFIX):
        return PassthroughGpu(_number(name.removeprefix(PASSTHROUGH_PREFIX), "passthrough index"))
    minor, mig, rest = name.removeprefix(PREFIX).partition(MIG_SEPARATOR)
    parent = _number(minor, "GPU minor number")
    if not mig:
        return WholeGpu(parent)
    parts = rest.split("-")
    if len(parts) == 3 and all(_NUMBER.fullmatch(p) for p in parts):
        old_id, old_start, old_size = (int(p) for p in parts)  # before v25.12
        return MigDevice(parent, None, old_id, old_start, old_size)
    if len(parts) < 3:
        raise ValueError("MIG part is not <profile>-<GI profile id>-<placement start>")
    profile, profile_id, start = rest.rsplit("-", 2)
    if not _PROFILE.fullmatch(profile):
        raise ValueError(f"MIG profile {profile!r} is not like '1g10gb' or '1g10gb-me'")
    return MigDevice(
        parent, profile, _number(profile_id, "GI profile id"), _number(start, "placement start")
    )


def _number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a number")
    return int(text)


def instance_key(gpu: Gpu, gi: GpuInstance) -> InstanceKey | None:
    """What a DRA MIG device name says of this GPU instance; None when any of it is unknown."""
    if gpu.minor_number is None or gi.profile_id is None or gi.placement is None:
        return None
    return (gpu.minor_number, gi.profile_id, gi.placement.start)
