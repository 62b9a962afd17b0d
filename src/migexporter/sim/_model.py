"""Simulated GPUs and MIG instances, and how their activity becomes telemetry."""

from __future__ import annotations

import enum
import hashlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._workload import (
    DRAM,
    GR,
    MEMORY,
    NVLINK_RX,
    NVLINK_TX,
    SM,
    ZERO,
    Vector,
    Workload,
    add,
    scale,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from migexporter.sim.profiles import CiProfile, GiProfile, GpuModel, Placement

MIB = 1 << 20
# Power asks for more than the limit under heavy load and the driver caps it just below. An
# H200 running a bf16 matmul (GPM SM 79.5 %, DRAM 14.7 %: a load of 0.6 below) was held at
# 692 W of its 700 W limit with SW_POWER_CAP set (benchmarks/results/nvml_calls-h200.json):
# the load that reaches the limit, and the fraction of the limit a capped GPU draws.
_FULL_POWER_LOAD = 0.6
_CAPPED_FRACTION = 692 / 700
# HBM warms less than the die: 29 -> 40 C while the die went 29 -> 55 C (the same H200).
_MEMORY_RISE = (40 - 29) / (55 - 29)
# The overheat fault (invented numbers): the die above the slowdown threshold, clocks cut.
_OVERHEAT_MARGIN_C = 3
_THERMAL_CLOCK_FRACTION = 0.7
# Linux process ids: the kernel hands out none below RESERVED_PIDS (300) once they wrap, and
# none at or above pid_max, 4194304 (PID_MAX_LIMIT) on 64-bit hosts as systemd sets it.
_FIRST_PID, _PID_MAX = 300, 1 << 22


def derived_number(uuid: str, purpose: str, count: int) -> int:
    """A number in ``range(count)`` fixed by a UUID: stable, and unrelated across purposes."""
    digest = hashlib.blake2b(f"{purpose}:{uuid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def simulated_pid(uuid: str) -> int:
    """The pid of the one process a GPU or MIG device runs: fixed for the device's life."""
    return _FIRST_PID + derived_number(uuid, "pid", _PID_MAX - _FIRST_PID)


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

    @property
    def pid(self) -> int:
        """The simulated process running on this MIG device."""
        return simulated_pid(self.uuid)

    def memory_used_bytes(self) -> int:
        """Its share of its GPU instance's memory in use: its footprint, weighted by its SMs.

        The GPU instance's memory in use is the sum of these shares.
        """
        weight = sum(ci.profile.sms for ci in self.gpu_instance.compute_instances.values())
        share = self.workload.levels[MEMORY] * self.profile.sms / weight
        return int(self.gpu_instance.memory_bytes * 0.95 * share)


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
        """Memory in use: its compute instances' shares, never above the instance's size."""
        return sum(ci.memory_used_bytes() for ci in self.compute_instances.values())


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
    overheated: bool = False  # the overheat fault: thermal slowdown until recovered
    # /dev/nvidia<minor>: the driver numbers GPUs in probe order, which on the usual systems is
    # the PCI order NVML indexes them in too; None means the index.
    minor: int | None = None
    # Whether the driver numbers this GPU's two memory halves the other way round
    # (_placement.gpu_instance_id); fixed per GPU, as on real ones.
    halves_swapped: bool = False
    pcie_replays: int = 0  # nvmlDeviceGetPcieReplayCounter
    # Integrals since creation, over fleet time: energy, and time spent power-capped or
    # thermally slowed down (NVML's violation counters).
    energy_j: float = 0.0
    power_violation_s: float = 0.0
    thermal_violation_s: float = 0.0
    below_base_clocks_s: float = 0.0  # idle or overheated; an idle H200 gains 1 s per second
    device: Any = field(default_factory=pynvml.struct_c_nvmlDevice_t)

    @property
    def minor_number(self) -> int:
        """What nvmlDeviceGetMinorNumber answers."""
        return self.index if self.minor is None else self.minor

    @property
    def pid(self) -> int:
        """The simulated process running on the GPU while MIG is disabled."""
        return simulated_pid(self.uuid)

    @property
    def serial(self) -> str:
        """The board's serial number: 13 stable digits (simulated, not a real board's)."""
        return f"1{derived_number(self.uuid, 'serial', 10**12):012d}"

    def __post_init__(self) -> None:
        self.not_hung.set()
        self.time = self.created

    def compute_instances(self) -> Iterator[SimComputeInstance]:
        """Every compute instance of every GPU instance."""
        for gi in self.gpu_instances.values():
            yield from gi.compute_instances.values()

    def advance(self, now: float) -> None:
        """Integrate every workload, energy and violation time up to fleet time ``now``.

        Steps end at every phase change of a workload, so the levels are constant within a
        step and the integrals are exact. Energy and violation time use the state at the
        start of each step: a fault that starts or ends between two calls would count from
        the later call, so the fleet advances a GPU before a fault changes it.
        """
        while now > self.time:
            until = min([now, *(w.phase_end for w in self._workloads())])
            self._step(until)
            self.time = until

    def _workloads(self) -> list[Workload]:
        if not self.mig_enabled:
            return [self.workload]
        return [ci.workload for ci in self.compute_instances()]

    def _step(self, until: float) -> None:
        elapsed = until - self.time
        levels = self.levels()
        self.energy_j += self._power_w(levels) * elapsed
        if self._capped(levels):
            self.power_violation_s += elapsed
        if self.overheated:
            self.thermal_violation_s += elapsed
        # The idle clock and the thermal cut are below base clocks; boost and a power-capped
        # clock are taken to be above (an assumption: the model has no base clock).
        if levels[GR] <= 0 or self.overheated:
            self.below_base_clocks_s += elapsed
        if not self.mig_enabled:
            self.totals = add(self.totals, self.workload.advance(until))
            return
        gpu_total = ZERO
        for gi in self.gpu_instances.values():
            gi_total, weight = ZERO, 0
            for ci in gi.compute_instances.values():
                gi_total = add(gi_total, scale(ci.workload.advance(until), ci.profile.sms))
                weight += ci.profile.sms
            if weight:
                gi.totals = add(gi.totals, scale(gi_total, 1 / weight))
            gpu_total = add(gpu_total, gi_total)
        self.totals = add(self.totals, _without_nvlink(scale(gpu_total, 1 / self.model.sms)))

    def levels(self) -> Vector:
        """Instantaneous activity of the whole GPU; no NVLink traffic in MIG mode."""
        if not self.mig_enabled:
            return self.workload.levels
        total = ZERO
        for ci in self.compute_instances():
            total = add(total, scale(ci.workload.levels, ci.profile.sms))
        return _without_nvlink(scale(total, 1 / self.model.sms))

    # Physics: power follows SM and DRAM activity up to the driver's cap; energy and
    # violation times are integrated in ``advance``.

    @staticmethod
    def _load(levels: Vector) -> float:
        return 0.7 * levels[SM] + 0.3 * levels[DRAM]

    def _demand_w(self, levels: Vector) -> float:
        span = self.model.power_limit_w - self.model.idle_power_w
        return self.model.idle_power_w + span * self._load(levels) / _FULL_POWER_LOAD

    def _capped(self, levels: Vector) -> bool:
        return self._demand_w(levels) >= _CAPPED_FRACTION * self.model.power_limit_w

    def _power_w(self, levels: Vector) -> float:
        return min(self._demand_w(levels), _CAPPED_FRACTION * self.model.power_limit_w)

    def power_mw(self) -> int:
        """Power draw now, in milliwatts; capped just below the enforced limit."""
        return int(self._power_w(self.levels()) * 1000)

    def energy_mj(self) -> int:
        """Energy since driver load, in millijoules: the integral of ``power_mw``."""
        return self.energy_offset_mj + int(1000 * self.energy_j)

    def _die_c(self) -> float:
        load = self._load(self.levels())
        if self.overheated:  # a cooling failure: hot whatever the load
            return self.model.slowdown_temp_c + _OVERHEAT_MARGIN_C + 5 * load
        return 30 + self.temperature_offset_c + 50 * load

    def temperature_c(self) -> int:
        """GPU (die) temperature: 30-85 C rising with load; above slowdown when overheated."""
        return round(self._die_c())

    def memory_temperature_c(self) -> int:
        """HBM temperature: rises with the die's, by less."""
        ambient = 30 + self.temperature_offset_c
        return round(ambient + _MEMORY_RISE * (self._die_c() - ambient))

    def sm_clock_mhz(self) -> int:
        """SM clock: boost while anything runs (cut when overheated), idle clock otherwise."""
        if self.levels()[GR] <= 0:
            return self.model.idle_sm_clock_mhz
        if self.overheated:
            return int(self.model.sm_clock_mhz * _THERMAL_CLOCK_FRACTION)
        return self.model.sm_clock_mhz

    def clocks_event_reasons(self) -> int:
        """NVML's current clocks event reasons: GPU idle, SW power cap, SW thermal slowdown."""
        levels = self.levels()
        reasons = 0
        if levels[GR] <= 0:
            reasons |= pynvml.nvmlClocksEventReasonGpuIdle
        if self._capped(levels):
            reasons |= pynvml.nvmlClocksEventReasonSwPowerCap
        if self.overheated:
            reasons |= pynvml.nvmlClocksEventReasonSwThermalSlowdown
        return int(reasons)

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


def _without_nvlink(vector: Vector) -> Vector:
    """``vector`` without NVLink traffic: instances' NVLink levels do not reach their GPU.

    NVLink is not supported in MIG mode (DCGM 2.0.15 release notes).
    """
    return tuple(0.0 if i in (NVLINK_TX, NVLINK_RX) else v for i, v in enumerate(vector))
