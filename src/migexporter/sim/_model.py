"""Simulated GPUs and MIG instances, and how their activity becomes telemetry."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._workload import DRAM, GR, MEMORY, SM, ZERO, Vector, Workload, add, scale

if TYPE_CHECKING:
    from collections.abc import Iterator

    from migexporter.sim.profiles import CiProfile, GiProfile, GpuModel, Placement

MIB = 1 << 20


class GpuState(enum.Enum):
    """Health of a simulated GPU."""

    OK = "ok"
    LOST = "lost"  # fell off the bus: its queries raise NVMLError_GpuIsLost
    HUNG = "hung"  # its queries block until it recovers


@dataclass(eq=False)
class SimComputeInstance:
    """One compute instance; with its GPU instance it is one MIG device."""

    gpu: SimGpu
    gpu_instance: SimGpuInstance
    id: int
    profile: CiProfile
    start: int  # first compute slice inside the GPU instance
    mig_index: int
    uuid: str
    workload: Workload
    # The objects NVML handles point at: the MIG device, and the compute instance itself.
    device: Any = field(default_factory=pynvml.struct_c_nvmlDevice_t)
    handle: Any = field(default_factory=pynvml.struct_c_nvmlComputeInstance_t)

    @property
    def name(self) -> str:
        """The MIG device name: "3g.40gb", or "1c.7g.80gb" for a CI smaller than its GI."""
        return self.profile.name


@dataclass(eq=False)
class SimGpuInstance:
    """One GPU instance: memory slices, compute slices and the compute instances on them."""

    gpu: SimGpu
    id: int
    profile: GiProfile
    placement: Placement
    compute_instances: dict[int, SimComputeInstance] = field(default_factory=dict)
    totals: Vector = ZERO  # activity-seconds, SM-weighted over its compute instances
    handle: Any = field(default_factory=pynvml.struct_c_nvmlGpuInstance_t)

    @property
    def memory_bytes(self) -> int:
        """Memory of the instance, as the profile states it."""
        return self.profile.memory_mb * MIB

    def levels(self) -> Vector:
        """Instantaneous activity: the SM-weighted mean of its compute instances."""
        cis = list(self.compute_instances.values())
        weight = sum(ci.profile.sms for ci in cis)
        if not weight:
            return ZERO
        total = ZERO
        for ci in cis:
            total = add(total, scale(ci.workload.levels, ci.profile.sms))
        return scale(total, 1 / weight)

    def memory_used_bytes(self) -> int:
        """Memory in use: follows the workloads' footprints, never above the instance's size."""
        return int(self.memory_bytes * 0.95 * self.levels()[MEMORY])


@dataclass(eq=False)
class SimGpu:
    """One physical GPU and everything that lives on it."""

    index: int
    uuid: str
    model: GpuModel
    pci_bus_id: str
    mig_enabled: bool
    workload: Workload  # what runs while MIG is disabled
    created: float  # fleet time of creation; energy is counted from here
    energy_offset_mj: int  # energy since "driver load", before the simulation started
    temperature_offset_c: float
    gpu_instances: dict[int, SimGpuInstance] = field(default_factory=dict)
    state: GpuState = GpuState.OK
    not_hung: threading.Event = field(default_factory=threading.Event)
    totals: Vector = ZERO  # activity-seconds over all SMs; idle SMs count as 0
    time: float = 0.0  # fleet time the totals are integrated up to
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (errorType, counter) -> n
    # DCGM lists SM occupancy in a pass of its own: 1003 cannot be watched with 1002 and 1004.
    profiling_multipass: bool = False
    # What the driver asks an operator to do (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION).
    recovery_action: int = pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    device: Any = field(default_factory=pynvml.struct_c_nvmlDevice_t)

    def __post_init__(self) -> None:
        self.not_hung.set()
        self.time = self.created

    def compute_instances(self) -> Iterator[SimComputeInstance]:
        """Every compute instance of every GPU instance."""
        for gi in self.gpu_instances.values():
            yield from gi.compute_instances.values()

    def advance(self, now: float) -> None:
        """Integrate every workload on the GPU up to fleet time ``now``."""
        if now <= self.time:
            return
        if self.mig_enabled:
            gpu_total = ZERO
            for gi in self.gpu_instances.values():
                gi_total, weight = ZERO, 0
                for ci in gi.compute_instances.values():
                    gi_total = add(gi_total, scale(ci.workload.advance(now), ci.profile.sms))
                    weight += ci.profile.sms
                if weight:
                    gi.totals = add(gi.totals, scale(gi_total, 1 / weight))
                gpu_total = add(gpu_total, gi_total)
            self.totals = add(self.totals, scale(gpu_total, 1 / self.model.sms))
        else:
            self.totals = add(self.totals, self.workload.advance(now))
        self.time = now

    def levels(self) -> Vector:
        """Instantaneous activity of the whole GPU."""
        if not self.mig_enabled:
            return self.workload.levels
        total = ZERO
        for ci in self.compute_instances():
            total = add(total, scale(ci.workload.levels, ci.profile.sms))
        return scale(total, 1 / self.model.sms)

    # Physics: power follows SM and DRAM activity, so energy is an exact integral of it.

    def _power_span_w(self) -> float:
        return 0.9 * self.model.power_limit_w - self.model.idle_power_w

    @staticmethod
    def _load(levels: Vector) -> float:
        return 0.7 * levels[SM] + 0.3 * levels[DRAM]

    def power_mw(self) -> int:
        """Power draw now, in milliwatts; always below the enforced limit."""
        watts = self.model.idle_power_w + self._power_span_w() * self._load(self.levels())
        return int(watts * 1000)

    def energy_mj(self) -> int:
        """Energy since driver load, in millijoules: the integral of ``power_mw``."""
        idle = self.model.idle_power_w * (self.time - self.created)
        active = self._power_span_w() * self._load(self.totals)
        return self.energy_offset_mj + int(1000 * (idle + active))

    def temperature_c(self) -> int:
        """GPU temperature, 30-85 C, rising with load."""
        return round(30 + self.temperature_offset_c + 50 * self._load(self.levels()))

    def sm_clock_mhz(self) -> int:
        """SM clock: boost while anything runs, idle clock otherwise."""
        busy = self.levels()[GR] > 0
        return self.model.sm_clock_mhz if busy else self.model.idle_sm_clock_mhz

    @property
    def reserved_bytes(self) -> int:
        """Memory the driver keeps: what the whole-GPU profile leaves out."""
        return (self.model.memory_mib - self.model.full_profile.memory_mb) * MIB

    def memory_used_bytes(self) -> int:
        """Allocated memory, without the reserved part (``c_nvmlMemory_v2_t.used``)."""
        if self.mig_enabled:
            return sum(gi.memory_used_bytes() for gi in self.gpu_instances.values())
        usable = self.model.memory_mib * MIB - self.reserved_bytes
        return int(usable * 0.97 * self.levels()[MEMORY])
