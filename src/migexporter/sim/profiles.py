"""MIG profile tables of the simulated GPU models, as the driver reports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pynvml


class SimError(ValueError):
    """A request to the simulator that cannot be honoured; the message is one line."""


class Placement(NamedTuple):
    """Where a GPU instance sits, in memory slices (NVML ``placement.start`` / ``.size``)."""

    start: int
    size: int


@dataclass(frozen=True)
class GiProfile:
    """One GPU-instance profile, the fields of ``c_nvmlGpuInstanceProfileInfo_v2_t``."""

    index: int  # NVML_GPU_INSTANCE_PROFILE_*: what nvmlDeviceGetGpuInstanceProfileInfo takes
    id: int  # what the driver calls the profile ID (nvidia-smi mig -lgip "ID")
    name: str  # "3g.40gb"; the v2 struct's name is "MIG " + name
    slices: int  # compute slices (sliceCount)
    instances: int  # instanceCount: how many of this profile fit on an empty GPU
    sms: int
    copy_engines: int
    decoders: int
    jpegs: int
    ofas: int
    memory_mb: int
    starts: tuple[int, ...]  # possible placement starts, in memory slices
    size: int  # memory slices one instance occupies

    @property
    def placements(self) -> tuple[Placement, ...]:
        """Every placement the driver allows, ascending as nvidia-smi -lgipp lists them."""
        return tuple(Placement(start, self.size) for start in self.starts)


@dataclass(frozen=True)
class CiProfile:
    """One compute-instance profile inside a GPU instance of a given profile."""

    index: int  # NVML_COMPUTE_INSTANCE_PROFILE_*; the driver reports the same number as its id
    slices: int
    instances: int
    sms: int
    name: str  # MIG device name: "1c.7g.80gb", or the GI's name when it spans the whole GI
    starts: tuple[int, ...]  # compute-slice starts inside the GI

    @property
    def id(self) -> int:
        """The profile id; equal to the index (nvidia-smi: "3g.40gb (ID 2)" for 3_SLICE)."""
        return self.index


@dataclass(frozen=True)
class GpuModel:
    """A MIG-capable GPU product and its static properties."""

    key: str  # spec name, e.g. "h100-80gb"
    product: str  # nvmlDeviceGetName
    pci_device_id: int  # nvmlPciInfo_t.pciDeviceId: device id << 16 | NVIDIA's vendor id
    memory_mib: int
    sms: int
    compute_slices: int
    memory_slices: int
    sm_clock_mhz: int
    idle_sm_clock_mhz: int
    mem_clock_mhz: int
    power_limit_w: int
    idle_power_w: int
    gpm: bool  # GPM exists on Hopper and newer only
    nvlinks: int  # NVLink links; 0 for none
    pcie_bytes_per_s: float  # nominal PCIe bandwidth per direction
    nvlink_bytes_per_s: float  # nominal NVLink bandwidth per direction, all links together
    encoders: int  # NVENC engines of the whole GPU
    slowdown_temp_c: int  # die temperature where the driver slows the clocks down
    profiles: tuple[GiProfile, ...]

    @property
    def max_mig_devices(self) -> int:
        """What nvmlDeviceGetMaxMigDeviceCount says with MIG enabled: one per compute slice."""
        return self.compute_slices

    @property
    def decoders(self) -> int:
        """NVDEC engines of the whole GPU: the decoder column of its whole-GPU profile."""
        return self.full_profile.decoders

    @property
    def sms_per_slice(self) -> int:
        """SMs of one compute slice, from the smallest profile."""
        return min(p.sms for p in self.profiles if p.slices == 1)

    def profile(self, name: str) -> GiProfile:
        """The profile called ``name`` ("3g.40gb"); SimError naming the valid ones otherwise."""
        wanted = name.strip().lower().removeprefix("mig ")
        for p in self.profiles:
            if p.name == wanted:
                return p
        valid = ", ".join(p.name for p in self.profiles)
        raise SimError(f"unknown profile {name!r} for {self.key}; valid profiles: {valid}")

    def profile_by_index(self, index: int) -> GiProfile | None:
        """The profile with this NVML_GPU_INSTANCE_PROFILE_* index, if the model has one."""
        return next((p for p in self.profiles if p.index == index), None)

    def profile_by_id(self, profile_id: int) -> GiProfile | None:
        """The profile with this driver profile id, if the model has one."""
        return next((p for p in self.profiles if p.id == profile_id), None)

    @property
    def full_profile(self) -> GiProfile:
        """The profile that spans the whole GPU (7g, or 4g on A30)."""
        return max(self.profiles, key=lambda p: (p.slices, p.memory_mb))


# Compute-instance sizes and their NVML_COMPUTE_INSTANCE_PROFILE_* index. A GI of g slices
# offers every size up to g (MIG user guide, "Concepts": a 4g GI holds 1c, 2c, 3c or 4c CIs).
_CI_INDEX = {
    1: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
    2: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
    3: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
    4: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
    7: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
}


def ci_profiles(model: GpuModel, gi: GiProfile) -> tuple[CiProfile, ...]:
    """The compute-instance profiles a GPU instance of profile ``gi`` offers.

    A CI spanning the whole GI has the GI's SMs; a smaller one has whole slices of the model's
    smallest profile (the per-slice SM count is not published for sub-GI CIs: an estimate).
    """
    out = []
    for size, index in _CI_INDEX.items():
        if size > gi.slices:
            continue
        whole = size == gi.slices
        if whole:
            starts: tuple[int, ...] = (0,)
        elif size == 3:
            # Assumed like the 3g GI placements {0,4}: two 3c CIs in a 7g GI, one elsewhere.
            starts = (0, 4) if gi.slices >= 7 else (0,)
        else:
            starts = tuple(range(0, gi.slices - size + 1, size))
        out.append(
            CiProfile(
                index=index,
                slices=size,
                instances=len(starts),
                sms=gi.sms if whole else size * model.sms_per_slice,
                name=gi.name if whole else f"{size}c.{gi.name}",
                starts=starts,
            )
        )
    return tuple(out)


def ci_profile(model: GpuModel, gi: GiProfile, name: str) -> CiProfile:
    """The CI profile called ``Nc`` (or the GI's own name) inside ``gi``; SimError otherwise."""
    wanted = name.strip().lower()
    for p in ci_profiles(model, gi):
        if wanted in {f"{p.slices}c", p.name, f"{p.slices}c.{gi.name}"}:
            return p
    valid = ", ".join(f"{p.slices}c" for p in ci_profiles(model, gi))
    raise SimError(f"unknown compute-instance profile {name!r} in {gi.name}; valid: {valid}")


# NVML_GPU_INSTANCE_PROFILE_* indices, short so that each table row fits on one line.
_1 = pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE
_2 = pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE
_3 = pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE
_4 = pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE
_7 = pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE
_1R1 = pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1  # the "+me" 1g profile
_1R2 = pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2  # 1 compute slice, 2 memory slices
_2R1 = pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1  # the "+me" 2g profile (A30)
_SEVEN = (0, 1, 2, 3, 4, 5, 6)  # 1g placements on an 8-memory-slice GPU: {0..6}:1


# PCIe per direction, nominal: 16 lanes x 32 GT/s (Gen5) or 16 GT/s (Gen4) x 128b/130b is
# 63.0 or 31.5 GB/s; rounded as NVIDIA's datasheets round them (H100 SXM: "PCIe Gen5: 128GB/s",
# both directions; A100: "PCIe Gen4: 64GB/s").
_PCIE_GEN5_X16 = 64e9
_PCIE_GEN4_X16 = 32e9
# ASSUMPTION: the die temperature where the driver starts slowing down (nvidia-smi -q "GPU
# Slowdown Temp"); not measured on any of these models.
_SLOWDOWN_TEMP_C = 87

# Row fields: index, id, name, slices, instances, SMs, CE, DEC, JPEG, OFA, memory MB, starts, size.
# Placements on 8 memory slices are the same on A100, H100 and H200: nvidia-smi mig -lgipp in
# the MIG user guide ("Getting Started"; also NVIDIA's H100 NVL blog) prints
# 19 {0..6}:1, 20 {0..6}:1, 15 {0,2,4,6}:2, 14 {0,2,4}:2, 9 {0,4}:4, 5 {0}:4, 0 {0}:8.

# H100 80GB HBM3: read from hardware, driver 580.159.04 (shared/facts/nvml-mig.md §1.3).
H100_80GB = GpuModel(
    key="h100-80gb",
    product="NVIDIA H100 80GB HBM3",
    pci_device_id=0x233010DE,
    memory_mib=81559,  # the total nvidia-smi commonly shows for it; not measured here
    sms=132,
    compute_slices=7,
    memory_slices=8,
    sm_clock_mhz=1980,  # deviceQuery: "GPU Max Clock rate: 1980 MHz", "Memory Clock rate: 2619"
    idle_sm_clock_mhz=345,
    mem_clock_mhz=2619,
    power_limit_w=700,
    idle_power_w=70,
    gpm=True,
    nvlinks=18,  # NVIDIA's HGX H100 pages: 18 NVLink 4 links per GPU, 900 GB/s both ways
    pcie_bytes_per_s=_PCIE_GEN5_X16,
    nvlink_bytes_per_s=450e9,
    encoders=0,  # no NVENC: the datasheet lists decoders only (7 NVDEC, 7 NVJPG)
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.10gb", 1, 7, 16, 1, 1, 1, 0, 9984, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.10gb+me", 1, 1, 16, 1, 1, 1, 1, 9984, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.20gb", 1, 4, 26, 1, 1, 1, 0, 20096, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.20gb", 2, 3, 32, 2, 2, 2, 0, 20096, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.40gb", 3, 2, 60, 3, 3, 3, 0, 40448, (0, 4), 4),
        GiProfile(_4, 5, "4g.40gb", 4, 1, 64, 4, 4, 4, 0, 40448, (0,), 4),
        GiProfile(_7, 0, "7g.80gb", 7, 1, 132, 8, 7, 7, 1, 81152, (0,), 8),
    ),
)  # fmt: skip

# H200: names, instances, CE/DEC/JPEG/OFA from the MIG user guide ("Supported MIG Profiles",
# table "GPU Instance Profiles on H200"). SMs 16/16/32/132 and memory 16384/33280/143360 MB
# (16.00/32.50/140.00 GiB) from a public `nvidia-smi mig -lgip` capture; 3g has 60 SMs (CUDA
# reports 60 on a 3g.71gb). UNCONFIRMED: ids 15/9/5 (assumed as on H100), 1g.35gb's 26 SMs
# (as on H100), and the 1g.35gb / 3g / 4g memory (estimated from the H100 proportions).
H200_141GB = GpuModel(
    key="h200-141gb",
    product="NVIDIA H200",
    pci_device_id=0x233510DE,
    memory_mib=143771,  # as commonly shown by nvidia-smi; UNCONFIRMED
    sms=132,
    compute_slices=7,
    memory_slices=8,
    sm_clock_mhz=1980,
    idle_sm_clock_mhz=345,
    mem_clock_mhz=3201,
    power_limit_w=700,
    idle_power_w=75,
    gpm=True,
    nvlinks=18,  # H200 SXM datasheet: NVLink 900 GB/s both ways; 18 links assumed as on H100
    pcie_bytes_per_s=_PCIE_GEN5_X16,
    nvlink_bytes_per_s=450e9,
    # No NVENC, yet nvmlDeviceGetEncoderUtilization answers [0, 100000] (H200, driver
    # 580.159.04: benchmarks/results/nvml_calls-h200.json).
    encoders=0,
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.18gb", 1, 7, 16, 1, 1, 1, 0, 16384, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.18gb+me", 1, 1, 16, 1, 1, 1, 1, 16384, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.35gb", 1, 4, 26, 1, 1, 1, 0, 33280, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.35gb", 2, 3, 32, 2, 2, 2, 0, 33280, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.71gb", 3, 2, 60, 3, 3, 3, 0, 71424, (0, 4), 4),
        GiProfile(_4, 5, "4g.71gb", 4, 1, 64, 4, 4, 4, 0, 71424, (0,), 4),
        GiProfile(_7, 0, "7g.141gb", 7, 1, 132, 8, 7, 7, 1, 143360, (0,), 8),
    ),
)  # fmt: skip

# A100-SXM4-40GB: several public `nvidia-smi mig -lgip` captures (4.75 / 9.75 / 19.62 / 39.50 GiB
# on recent drivers; older drivers print slightly smaller sizes) and the MIG user guide's
# engine columns (7g: 5 NVDEC / 1 JPEG / 1 OFA, 7 CE).
A100_40GB = GpuModel(
    key="a100-40gb",
    product="NVIDIA A100-SXM4-40GB",
    pci_device_id=0x20B010DE,
    memory_mib=40960,
    sms=108,
    compute_slices=7,
    memory_slices=8,
    sm_clock_mhz=1410,
    idle_sm_clock_mhz=210,
    mem_clock_mhz=1215,
    power_limit_w=400,
    idle_power_w=55,
    gpm=False,
    nvlinks=12,  # A100 whitepaper: 12 NVLink 3 links, 600 GB/s both ways (datasheet: 600 GB/s)
    pcie_bytes_per_s=_PCIE_GEN4_X16,
    nvlink_bytes_per_s=300e9,
    encoders=0,  # no NVENC: the A100 datasheet lists decoders only
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.5gb", 1, 7, 14, 1, 0, 0, 0, 4864, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.5gb+me", 1, 1, 14, 1, 1, 1, 1, 4864, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.10gb", 1, 4, 14, 1, 1, 0, 0, 9984, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.10gb", 2, 3, 28, 2, 1, 0, 0, 9984, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.20gb", 3, 2, 42, 3, 2, 0, 0, 20096, (0, 4), 4),
        GiProfile(_4, 5, "4g.20gb", 4, 1, 56, 4, 2, 0, 0, 20096, (0,), 4),
        GiProfile(_7, 0, "7g.40gb", 7, 1, 98, 7, 5, 1, 1, 40448, (0,), 8),
    ),
)  # fmt: skip

# A100-SXM4-80GB: a public `nvidia-smi mig -lgip` capture on driver 515.86.01 (9.50 / 19.50 /
# 39.25 / 79.00 GiB; later drivers print 9.75 / 19.62 / 39.50 / 79.25). The 1g.20gb row is not
# in that capture: memory 19.50 GiB from another capture, engines as A100-40GB's 1g.10gb.
A100_80GB = GpuModel(
    key="a100-80gb",
    product="NVIDIA A100-SXM4-80GB",
    pci_device_id=0x20B210DE,
    memory_mib=81920,
    sms=108,
    compute_slices=7,
    memory_slices=8,
    sm_clock_mhz=1410,
    idle_sm_clock_mhz=210,
    mem_clock_mhz=1593,
    power_limit_w=400,
    idle_power_w=60,
    gpm=False,
    nvlinks=12,  # as A100-SXM4-40GB
    pcie_bytes_per_s=_PCIE_GEN4_X16,
    nvlink_bytes_per_s=300e9,
    encoders=0,
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.10gb", 1, 7, 14, 1, 0, 0, 0, 9728, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.10gb+me", 1, 1, 14, 1, 1, 1, 1, 9728, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.20gb", 1, 4, 14, 1, 1, 0, 0, 19968, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.20gb", 2, 3, 28, 2, 1, 0, 0, 19968, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.40gb", 3, 2, 42, 3, 2, 0, 0, 40192, (0, 4), 4),
        GiProfile(_4, 5, "4g.40gb", 4, 1, 56, 4, 2, 0, 0, 40192, (0,), 4),
        GiProfile(_7, 0, "7g.80gb", 7, 1, 98, 7, 5, 1, 1, 80896, (0,), 8),
    ),
)  # fmt: skip

# A30: a public `nvidia-smi mig -lgip` capture (ids 14/21/5/6/0; 5.81 / 11.69 / 23.44 GiB; SMs
# 14/28/56). That capture shows 1 NVDEC on 1g.6gb where the MIG user guide says 0: the capture
# wins. Placements {0,1,2,3}:1, {0,2}:2, {0}:4 follow the guide's A30 diagram; the +me rows'
# placements are UNCONFIRMED (assumed equal to their plain profiles').
A30_24GB = GpuModel(
    key="a30",
    product="NVIDIA A30",
    pci_device_id=0x20B710DE,
    memory_mib=24576,  # 24 GiB; the exact total nvidia-smi shows is UNCONFIRMED
    sms=56,
    compute_slices=4,
    memory_slices=4,
    sm_clock_mhz=1440,
    idle_sm_clock_mhz=210,
    mem_clock_mhz=1215,
    power_limit_w=165,
    idle_power_w=30,
    gpm=False,
    # The A30 can take an NVLink bridge to one other A30 (datasheet: 200 GB/s); the
    # simulated cards have none.
    nvlinks=0,
    pcie_bytes_per_s=_PCIE_GEN4_X16,
    nvlink_bytes_per_s=0.0,
    encoders=0,  # no NVENC: the A30 datasheet lists 4 NVDEC, 1 NVJPG, 1 OFA
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 14, "1g.6gb", 1, 4, 14, 1, 1, 0, 0, 5952, (0, 1, 2, 3), 1),
        GiProfile(_1R1, 21, "1g.6gb+me", 1, 1, 14, 1, 1, 1, 1, 5952, (0, 1, 2, 3), 1),
        GiProfile(_2, 5, "2g.12gb", 2, 2, 28, 2, 2, 0, 0, 11968, (0, 2), 2),
        GiProfile(_2R1, 6, "2g.12gb+me", 2, 1, 28, 2, 2, 1, 1, 11968, (0, 2), 2),
        GiProfile(_4, 0, "4g.24gb", 4, 1, 56, 4, 4, 1, 1, 24000, (0,), 4),
    ),
)  # fmt: skip

# H100 NVL (94GB HBM3, PCIe card with NVLink bridges). Profile table: `nvidia-smi mig -lgip` and
# `-lgipp` on driver 560.35.03 in github.com/AlizeeChen11/mig-and-mps mig/README.md (commit
# 2f33226, lines 25-68); the same lgip rows are in NVIDIA/gpu-operator commit eee03d4b ("[H100
# NVL]update all-balanced MIG config"). MB: that README's MIG devices print 11008 / 22144 /
# 47488 MiB for 1g.12gb / 1g.24gb / 3g.47gb (lines 99-105); 2g and 4g equal 1g.24gb and 3g as
# lgip shows the same GiB. 7g.94gb's 95360 is inferred from "93.12" GiB (93.125 x 1024).
# Other drivers print other sizes (10.62 / 21.50 / 46.12 / 92.62 GiB in OpenNebula's docs).
H100_NVL = GpuModel(
    key="h100-nvl",
    product="NVIDIA H100 NVL",  # nvidia-smi in mig-and-mps mig/README.md line 87
    # pci.ids "2321 GH100 [H100L 94GB]" (NVIDIA/go-nvlib pkg/pciids/default_pci.ids); mig-parted
    # deployments/systemd/config-default.yaml filters "H100 NVL, H800 NVL" by 0x232110DE
    pci_device_id=0x232110DE,
    memory_mib=95830,  # nvidia-smi "95830MiB" (mig-and-mps mig/README.md line 88)
    sms=132,  # 7g.94gb row: SM 132; CUDA multiProcessorCount 132 (caps-tum/mt4g, below)
    compute_slices=7,
    memory_slices=8,
    # caps-tum/mt4g sample_results/NVIDIA H100 NVL/README.md: clockRate 1785000 kHz,
    # memoryClockRate 2619000 kHz
    sm_clock_mhz=1785,
    idle_sm_clock_mhz=345,  # UNCONFIRMED: as on H100 80GB
    mem_clock_mhz=2619,
    power_limit_w=400,  # nvidia-smi "62W /  400W" (mig-and-mps mig/README.md line 88)
    idle_power_w=62,  # the same line, idle in P0; other captures show 60-65 W
    gpm=True,
    # UNCONFIRMED: 12 links = 600 GB/s both ways (the NVLink-bridge figure third-party spec pages
    # quote) at 50 GB/s both ways per NVLink 4 link (H100 SXM: 18 links, 900 GB/s)
    nvlinks=12,
    pcie_bytes_per_s=_PCIE_GEN5_X16,  # PCIe Gen5 x16 card (gpu.blog, aiminingco spec pages)
    nvlink_bytes_per_s=300e9,
    encoders=0,  # lgip ENC column 0 on every profile, 7g.94gb included
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.12gb", 1, 7, 16, 1, 1, 1, 0, 11008, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.12gb+me", 1, 1, 16, 1, 1, 1, 1, 11008, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.24gb", 1, 4, 26, 1, 1, 1, 0, 22144, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.24gb", 2, 3, 32, 2, 2, 2, 0, 22144, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.47gb", 3, 2, 60, 3, 3, 3, 0, 47488, (0, 4), 4),
        GiProfile(_4, 5, "4g.47gb", 4, 1, 64, 4, 4, 4, 0, 47488, (0,), 4),
        GiProfile(_7, 0, "7g.94gb", 7, 1, 132, 8, 7, 7, 1, 95360, (0,), 8),
    ),
)  # fmt: skip

# GH200 with 96GB HBM3 ("GH200 480GB": 480GB is the Grace memory). Profile table: `nvidia-smi mig
# -lgip` in github.com/kf-cuanschutz/NVIDIA_Grace_Hopper_benchmarking_logs_, file
# Daily_installs_loggings/Lessons_learned_from_the_slurm_MIG_installation_July_27th_.md, lines
# 40-67 (driver 550.54.15 per Experiments/nvbandwidth+perf_072424.md of the same host): 11.00 /
# 23.00 / 46.50 / 93.00 GiB, so 11264 / 23552 / 47616 / 95232 MB. No -lgipp capture: the
# placements are the standard 8-slice ones (UNCONFIRMED for this model).
GH200_96GB = GpuModel(
    key="gh200-96gb",
    # nvidia-smi -L in that repo (Daily_installs_loggings/July_27th_2024_.md line 69), and
    # nvidia-smi in github.com/hu-po/warp-ik docs/specs/arm-gh200.md
    product="NVIDIA GH200 480GB",
    # pci.ids "2342 GH100 [GH200 120GB / 480GB]" (NVIDIA/go-nvlib); NVIDIA/gpu-operator commit
    # 6f7e6b0d ("Update device-id of GH200-480GB for MIG configuration") adds 0x234210DE
    pci_device_id=0x234210DE,
    memory_mib=97871,  # nvidia-smi "97871MiB" (warp-ik docs/specs/arm-gh200.md, driver 570.124.06)
    sms=132,  # 7g.96gb row: SM 132; warp-ik "Number of multiprocessors: 132"
    compute_slices=7,
    memory_slices=8,
    # warp-ik: "Clock rate: 1.98GHz", "Peak memory clock frequency: 2.62GHz"; OpenCL-Benchmark
    # "132 at 1980 MHz" (github.com/mredenti/PowerCapping configuration/OpenCL_benchmark.md).
    # 2619 (not 2620) is UNCONFIRMED: assumed equal to H100's HBM3 clock.
    sm_clock_mhz=1980,
    idle_sm_clock_mhz=345,  # UNCONFIRMED: as on H100 80GB
    mem_clock_mhz=2619,
    # nvidia-smi "86W /  700W" (warp-ik); other GH200 hosts print a 900 W cap: the module's power
    # is shared with Grace and configurable, so the GPU's limit varies by system
    power_limit_w=700,
    idle_power_w=86,  # the same line, idle in P0
    gpm=True,
    # UNCONFIRMED: a one-superchip server has no NVLink peer GPU; the NVLink-C2C to Grace is
    # not modelled as NVLink links
    nvlinks=0,
    # UNCONFIRMED: the GPU reaches Grace over NVLink-C2C, not PCIe; the nominal Gen5 x16 value
    # only keeps the simulated PCIe counters in a plausible range
    pcie_bytes_per_s=_PCIE_GEN5_X16,
    nvlink_bytes_per_s=0.0,
    encoders=0,  # lgip ENC column 0 on every profile, 7g.96gb included
    slowdown_temp_c=_SLOWDOWN_TEMP_C,
    profiles=(
        GiProfile(_1, 19, "1g.12gb", 1, 7, 16, 1, 1, 1, 0, 11264, _SEVEN, 1),
        GiProfile(_1R1, 20, "1g.12gb+me", 1, 1, 16, 1, 1, 1, 1, 11264, _SEVEN, 1),
        GiProfile(_1R2, 15, "1g.24gb", 1, 4, 26, 1, 1, 1, 0, 23552, (0, 2, 4, 6), 2),
        GiProfile(_2, 14, "2g.24gb", 2, 3, 32, 2, 2, 2, 0, 23552, (0, 2, 4), 2),
        GiProfile(_3, 9, "3g.48gb", 3, 2, 60, 3, 3, 3, 0, 47616, (0, 4), 4),
        GiProfile(_4, 5, "4g.48gb", 4, 1, 64, 4, 4, 4, 0, 47616, (0,), 4),
        GiProfile(_7, 0, "7g.96gb", 7, 1, 132, 8, 7, 7, 1, 95232, (0,), 8),
    ),
)  # fmt: skip

# Not modelled, for want of a source for their whole profile table (docs/facts/
# mig-profiles-new-models.md): H20, H200 NVL, GH200 144GB HBM3e, B200. For the last two the
# public `-lgip` captures that could be read stop after the 2g row (B200: mig-parted PRs #166
# and #187; GH200 144GB: mig-parted PR #139), so the 3g, 4g and 7g rows are unsourced.

_ALL_MODELS = (A100_40GB, A100_80GB, H100_80GB, H200_141GB, A30_24GB, H100_NVL, GH200_96GB)
MODELS: dict[str, GpuModel] = {m.key: m for m in _ALL_MODELS}


def model(key: str) -> GpuModel:
    """The model called ``key`` (case-insensitive); SimError naming the valid ones otherwise."""
    try:
        return MODELS[key.strip().lower()]
    except KeyError:
        raise SimError(f"unknown GPU model {key!r}; valid: {', '.join(MODELS)}") from None
