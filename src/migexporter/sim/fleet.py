"""The simulated fleet: GPUs, MIG instances, workloads, faults and events behind one lock."""

from __future__ import annotations

import ctypes
import itertools
import random
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.backends.nvml import UNATTRIBUTED
from migexporter.sim import _operator, _placement
from migexporter.sim._events import Event, EventQueue
from migexporter.sim._model import GpuState, SimComputeInstance, SimGpu, SimGpuInstance
from migexporter.sim._spec import DEFAULT_SPEC, GpuSpec, check_fits, parse_fleet, parse_layout
from migexporter.sim._workload import Workload
from migexporter.sim.nvml import FakeNvml
from migexporter.sim.profiles import SimError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from migexporter.sim._nvml_base import Session
    from migexporter.sim.profiles import CiProfile, GiProfile, Placement

MAX_EVENTS = 100_000  # per injection
ADVANCE_STEP_S = 0.001
# Structs of destroyed instances kept allocated (see Fleet.retire): enough for days of
# scenario-driven reconfiguration, bounded so a long demo does not grow without end.
_RETIRED_KEPT = 100_000
GPU_FAULTS = ("fall_off_bus", "hang", "profiling_multipass", "overheat", "recover")
HOSTENGINE_FAULTS = ("hostengine_down", "hostengine_up")  # the node's nv-hostengine
NODE_FAULTS = (*HOSTENGINE_FAULTS, "nvml_shutdown")  # faults of the node, not of one GPU
FAULTS = GPU_FAULTS + NODE_FAULTS
# DGX H100 bus numbers of its eight GPUs, so PCI ids look like the real thing.
_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
# What nvidia-smi prints for driver errors that reconfiguration can meet.
_REASONS = {
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES: "Insufficient Resources",
    pynvml.NVML_ERROR_IN_USE: "In use by another client",
    pynvml.NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    pynvml.NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    pynvml.NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    pynvml.NVML_ERROR_NOT_FOUND: "Not Found",
}
_RECOVERY_PREFIX = "NVML_GPU_RECOVERY_ACTION_"
# NVML's GPU recovery actions by operator name, from pynvml's own constants ("gpu_reset": 1),
# in NVML's order: whatever the installed pynvml defines, nothing hard-coded here.
RECOVERY_ACTIONS: dict[str, int] = dict(
    sorted(
        (
            (name.removeprefix(_RECOVERY_PREFIX).lower(), value)
            for name, value in vars(pynvml).items()
            if name.startswith(_RECOVERY_PREFIX)
            and isinstance(value, int)
            and not isinstance(value, bool)
        ),
        key=lambda item: item[1],
    )
)


def _nvml_error(code: int) -> pynvml.NVMLError:
    """The real pynvml exception class for ``code`` (NVMLError maps it to its subclass)."""
    return pynvml.NVMLError(code)


def recovery_action_value(action: object) -> int:
    """The NVML value of a recovery action given by name (``gpu_reset``) or by value (1).

    Raises SimError, in one line listing the valid names, for anything else.
    """
    if isinstance(action, str) and action in RECOVERY_ACTIONS:
        return RECOVERY_ACTIONS[action]
    if (
        isinstance(action, int)
        and not isinstance(action, bool)
        and action in RECOVERY_ACTIONS.values()
    ):
        return action
    valid = ", ".join(RECOVERY_ACTIONS)
    raise SimError(f"unknown recovery action {action!r}; valid: {valid} (or their NVML values)")


def recovery_action_name(value: int) -> str:
    """The operator name of an NVML recovery action value (``gpu_reset`` for 1)."""
    return next(name for name, known in RECOVERY_ACTIONS.items() if known == value)


class Fleet:
    """Simulated GPUs that the fake NVML library reads and an operator reconfigures.

    Thread-safe: every state change and read happens under ``lock``. Time comes from
    ``clock`` (default ``time.monotonic``); workloads are integrated lazily up to it.
    """

    def __init__(
        self,
        gpus: Sequence[GpuSpec],
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        privileged: bool = True,
    ) -> None:
        self.lock = threading.RLock()
        self.privileged = privileged  # default for FakeNvml(fleet): a root exporter
        self._clock = clock
        self._epoch = clock()
        self._wall_epoch = time.time()  # fleet time 0 on the wall clock, for driver timestamps
        self._seed = seed
        self._rng = random.Random(f"migexporter.sim:{seed}")  # noqa: S311 (reproducible, not secret)
        self._objects: dict[int, tuple[str, object]] = {}  # struct address -> (kind, object)
        self._retired: deque[object] = deque(maxlen=_RETIRED_KEPT)
        self._event_sets: dict[EventQueue, object] = {}
        self._uuids: set[str] = set()
        self._verbs = threading.Lock()  # operator actions run one at a time
        self._operator: FakeNvml | None = None
        # Every client's view of NVML (FakeNvml), for the nvml_shutdown fault.
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        # Read by the simulated DCGM host engine: down, and restarts (a fresh process).
        self.hostengine_up = True
        self.hostengine_generation = 0
        self.gpus: tuple[SimGpu, ...] = tuple(
            self._make_gpu(index, spec) for index, spec in enumerate(gpus)
        )
        for gpu, spec in zip(self.gpus, gpus, strict=True):
            if spec.layout:
                self._apply(gpu, spec)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        privileged: bool = True,
    ) -> Fleet:
        """A fleet from a compact spec such as ``2*h100-80gb:3g.40gb*2,a30``."""
        return cls(parse_fleet(spec), seed=seed, clock=clock, privileged=privileged)

    @classmethod
    def default(
        cls,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        privileged: bool = True,
    ) -> Fleet:
        """Three H100s: a mixed MIG layout, seven 1g.10gb instances, and MIG disabled."""
        return cls.from_spec(DEFAULT_SPEC, seed=seed, clock=clock, privileged=privileged)

    def _make_gpu(self, index: int, spec: GpuSpec) -> SimGpu:
        uuid = self._new_uuid("GPU-")
        domain, bus = divmod(index, len(_BUSES))
        gpu = SimGpu(
            index=index,
            uuid=uuid,
            model=spec.model,
            pci_bus_id=f"{domain:08X}:{_BUSES[bus]:02X}:00.0",
            mig_enabled=spec.mig_enabled,
            workload=Workload(f"{self._seed}:{uuid}", self.now()),
            created=self.now(),
            energy_offset_mj=self._rng.randrange(10**6, 10**9),
            temperature_offset_c=self._rng.uniform(0.0, 3.0),
            # No evidence says which GPUs swap their halves (both kinds sat in one host; the
            # one A30 transcript did not): taken from the seeded UUID, so a fleet has both.
            halves_swapped=spec.model.memory_slices == 8 and int(uuid[len("GPU-")], 16) % 2 == 1,
        )
        self.register(gpu.device, gpu, "device")
        return gpu

    def _new_uuid(self, prefix: str) -> str:
        """A fresh, never issued UUID: MIG devices get a new one each time they are created."""
        while True:
            hexa = f"{self._rng.getrandbits(128):032x}"
            uuid = f"{prefix}{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"
            if uuid not in self._uuids:
                self._uuids.add(uuid)
                return uuid

    # --- driver side: called by FakeNvml; methods that change state expect ``lock`` held ---

    def now(self) -> float:
        """Fleet time: seconds since the fleet was built, by its clock."""
        return self._clock() - self._epoch

    def timestamp_us(self, fleet_time: float) -> int:
        """A driver timestamp (microseconds since 1970) of a fleet time.

        The times NVML stamps on counters then move with the counters, also under a test clock.
        """
        return int((self._wall_epoch + fleet_time) * 1_000_000)

    def advance(self, gpu: SimGpu) -> None:
        """Bring the GPU's activity integrals up to now, at most once per millisecond.

        One sample reads a GPU a dozen times within a millisecond; integrating each time would
        make the simulator, not the exporter, what a benchmark measures. Hardware counters
        also move in steps.
        """
        now = self.now()
        if now - gpu.time >= ADVANCE_STEP_S:
            gpu.advance(now)

    def register(self, struct: object, obj: object, kind: str) -> None:
        """Make handles pointing at ``struct`` resolve to ``obj`` where a ``kind`` is wanted.

        Kinds: "device" (a GPU or a MIG device), "gpu_instance", "compute_instance",
        "event_set", "gpm_sample". A compute instance is both a "device" (its MIG device
        handle) and a "compute_instance", through two different structs.
        """
        self._objects[ctypes.addressof(struct)] = (kind, obj)  # type: ignore[arg-type]

    def retire(self, struct: object, *, keep: bool = True) -> None:
        """Make handles pointing at ``struct`` stale.

        With ``keep`` the struct stays allocated, so no new object gets its address and a
        stale handle keeps failing instead of silently naming another instance. GPM samples,
        allocated and freed every cycle, are not kept: their addresses may be reused, as
        NVML's own would be.
        """
        self._objects.pop(ctypes.addressof(struct), None)  # type: ignore[arg-type]
        if keep:
            self._retired.append(struct)

    def resolve(self, handle: object, kind: str) -> object | None:
        """What a ctypes handle of ``kind`` points at; None if NULL, stale or of another kind.

        Safe without ``lock``: one dict lookup.
        """
        try:
            address = ctypes.cast(handle, ctypes.c_void_p).value  # type: ignore[arg-type]
        except (ctypes.ArgumentError, TypeError):
            return None
        found = self._objects.get(address) if address else None
        return found[1] if found is not None and found[0] == kind else None

    def wait_usable(self, gpu: SimGpu) -> None:
        """Block while the GPU hangs; raise NVMLError_GpuIsLost once it fell off the bus.

        Call without holding ``lock``, or a hang would stop the whole fleet.
        """
        while True:
            if gpu.state is GpuState.LOST:
                raise _nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
            if gpu.state is GpuState.OK:
                return
            gpu.not_hung.wait()

    def create_gpu_instance(
        self, gpu: SimGpu, profile: GiProfile, placement: Placement | None
    ) -> SimGpuInstance:
        """Create a GPU instance at ``placement``, or at the driver's choice when None."""
        existing = [(gi.profile, gi.placement) for gi in gpu.gpu_instances.values()]
        if placement is not None and placement not in profile.placements:
            raise _nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        free = _placement.candidates(gpu.model, existing, profile)
        if placement is None:
            placement = free[0] if free else None
        if placement is None or placement not in free:
            raise _nvml_error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        self.advance(gpu)
        gi_id = _placement.gpu_instance_id(gpu.model, placement, gpu.halves_swapped)
        gi = SimGpuInstance(gpu, gi_id, profile, placement)
        gpu.gpu_instances[gi_id] = gi
        self.register(gi.handle, gi, "gpu_instance")
        self._config_changed(gpu)
        return gi

    def destroy_gpu_instance(self, gi: SimGpuInstance) -> None:
        """Destroy an empty GPU instance (NVMLError_InUse while it holds compute instances)."""
        if gi.compute_instances:
            raise _nvml_error(pynvml.NVML_ERROR_IN_USE)
        self.advance(gi.gpu)
        del gi.gpu.gpu_instances[gi.id]
        self.retire(gi.handle)
        self._config_changed(gi.gpu)

    def create_compute_instance(self, gi: SimGpuInstance, profile: CiProfile) -> SimComputeInstance:
        """Create a compute instance at the lowest free start, with the lowest free MIG index."""
        gpu = gi.gpu
        taken = [(ci.profile.slices, ci.start) for ci in gi.compute_instances.values()]
        starts = _placement.ci_starts(
            gi.profile.slices,
            [(size, (start,)) for size, start in taken] + [(profile.slices, profile.starts)],
        )
        used_indices = {ci.mig_index for ci in gpu.compute_instances()}
        free_indices = [i for i in range(gpu.model.max_mig_devices) if i not in used_indices]
        if starts is None or not free_indices:
            raise _nvml_error(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        self.advance(gpu)
        ci_id = next(i for i in itertools.count(0) if i not in gi.compute_instances)
        uuid = self._new_uuid("MIG-")
        ci = SimComputeInstance(
            gpu=gpu,
            gpu_instance=gi,
            id=ci_id,
            profile=profile,
            start=starts[-1],
            mig_index=free_indices[0],
            uuid=uuid,
            workload=Workload(f"{self._seed}:{uuid}", self.now()),
        )
        gi.compute_instances[ci_id] = ci
        self.register(ci.handle, ci, "compute_instance")
        self.register(ci.device, ci, "device")
        self._config_changed(gpu)
        return ci

    def destroy_compute_instance(self, ci: SimComputeInstance) -> None:
        """Destroy a compute instance; its MIG device handle and index go with it."""
        self.advance(ci.gpu)
        del ci.gpu_instance.compute_instances[ci.id]
        self.retire(ci.handle)
        self.retire(ci.device)
        self._config_changed(ci.gpu)

    def create_event_set(self, privileged: bool) -> tuple[object, EventQueue]:
        """A new event set: the struct its handles point at, and its queue."""
        queue = EventQueue(privileged)
        struct = pynvml.struct_c_nvmlEventSet_t()
        self.register(struct, queue, "event_set")
        self._event_sets[queue] = struct
        return struct, queue

    def free_event_set(self, queue: EventQueue) -> None:
        """Forget an event set and wake its waiter; a set already freed is left alone."""
        queue.close()
        struct = self._event_sets.pop(queue, None)
        if struct is not None:
            self.retire(struct)

    def publish(self, event: Event, count: int = 1) -> None:
        """Hand ``count`` copies of an event to every event set listening for it."""
        for queue in list(self._event_sets):
            queue.offer(event, count)

    def _config_changed(self, gpu: SimGpu) -> None:
        self.publish(Event(gpu.index, pynvml.nvmlEventMigConfigChange, 0))

    # --- operator side: what the control API and scenarios do ---

    def _gpu(self, gpu: object) -> SimGpu:
        if not isinstance(gpu, int) or isinstance(gpu, bool) or not 0 <= gpu < len(self.gpus):
            raise SimError(f"no GPU {gpu!r}; the fleet has GPUs 0 to {len(self.gpus) - 1}")
        return self.gpus[gpu]

    def _operator_session(self) -> FakeNvml:
        # A root tool like nvidia-smi, with its own library session: an exporter's
        # nvmlShutdown or lack of privileges does not affect it.
        if self._operator is None:
            self._operator = FakeNvml(self, privileged=True, client=False)
            self._operator.nvmlInit()
        return self._operator

    def _apply(self, gpu: SimGpu, spec: GpuSpec) -> None:
        """Destroy every instance of the GPU and create the spec's layout, through NVML."""
        placements = _placement.plan(gpu.model, [gi.profile for gi in spec.layout])
        assert placements is not None  # callers checked the layout with check_fits
        nv = self._operator_session()
        try:
            _operator.destroy_all(nv, gpu.index)
            _operator.create_layout(nv, gpu.index, spec.layout, placements)
        except pynvml.NVMLError as error:
            reason = _REASONS.get(error.value, f"NVML error {error.value}")
            raise SimError(f"reconfiguring GPU {gpu.index} failed: {reason}") from None

    def reconfigure(self, gpu: int, profiles: Sequence[str]) -> dict[str, Any]:
        """Replace GPU ``gpu``'s MIG layout, all or nothing, enabling MIG mode if needed.

        ``profiles`` items are ``3g.40gb``, ``1g.10gb*2`` or ``7g.80gb/1c*7``; an empty list
        leaves MIG enabled with no instances. Raises SimError with nvidia-smi's reason
        (``Unable to create a GPU instance on GPU 0 using profile 3g.40gb: Insufficient
        Resources``) before touching anything when the layout cannot be placed.
        """
        with self._verbs:
            with self.lock:
                sim = self._healthy(gpu)
                layout = parse_layout(sim.model, list(profiles))
                check_fits(sim.model, layout, gpu)
                if not sim.mig_enabled:
                    self.advance(sim)
                    sim.mig_enabled = True  # real GPUs need a reset for this; the sim does not
                    self._config_changed(sim)
            self._apply(sim, GpuSpec(sim.model, mig_enabled=True, layout=tuple(layout)))
            return self._describe_gpu(sim)

    def _healthy(self, gpu: int) -> SimGpu:
        """GPU ``gpu`` for an operator's action; SimError unless it is OK."""
        sim = self._gpu(gpu)
        if sim.state is not GpuState.OK:
            raise SimError(f"GPU {gpu} is {sim.state.value}; recover it first")
        return sim

    def add_instance(self, gpu: int, profile: str) -> dict[str, Any]:
        """Create one GPU instance of ``profile`` beside the others, as the DRA driver does.

        It gets one compute instance spanning it, at the first free placement. Returns the
        new instance as ``describe`` lists it; SimError when it does not fit.
        """
        with self._verbs:
            with self.lock:
                sim = self._healthy(gpu)
                if not sim.mig_enabled:
                    raise SimError(f"GPU {gpu} is not in MIG mode")
                [spec] = parse_layout(sim.model, [profile])
                existing = [(gi.profile, gi.placement) for gi in sim.gpu_instances.values()]
                free = _placement.candidates(sim.model, existing, spec.profile)
                if not free:
                    raise SimError(f"no free placement for {profile} on GPU {gpu}")
                before = set(sim.gpu_instances)
            try:
                _operator.create_layout(self._operator_session(), gpu, [spec], [free[0]])
            except pynvml.NVMLError as error:
                reason = _REASONS.get(error.value, f"NVML error {error.value}")
                raise SimError(f"creating {profile} on GPU {gpu} failed: {reason}") from None
            with self.lock:
                [gi_id] = set(sim.gpu_instances) - before
                gpu_info = self._describe_gpu(sim)
            return next(gi for gi in gpu_info["gpu_instances"] if gi["id"] == gi_id)

    def remove_instance(self, gpu: int, gi_id: int) -> None:
        """Destroy one GPU instance and its compute instances (a DRA claim released)."""
        with self._verbs:
            try:
                _operator.destroy_gpu_instance(self._operator_session(), gpu, gi_id)
            except pynvml.NVMLError as error:
                reason = _REASONS.get(error.value, f"NVML error {error.value}")
                raise SimError(f"destroying GPU instance {gi_id} on GPU {gpu}: {reason}") from None

    def disable_mig(self, gpu: int) -> dict[str, Any]:
        """Destroy every instance of GPU ``gpu``, then turn MIG mode off (``nvidia-smi -mig 0``).

        A GPU already out of MIG mode is left as it is.
        """
        with self._verbs:
            with self.lock:
                sim = self._healthy(gpu)
                if not sim.mig_enabled:
                    return self._describe_gpu(sim)
            self._apply(sim, GpuSpec(sim.model, mig_enabled=True, layout=()))
            with self.lock:
                self.advance(sim)
                sim.mig_enabled = False  # real GPUs need a reset for this; the sim does not
                self._config_changed(sim)
            return self._describe_gpu(sim)

    def inject_xid(
        self,
        gpu: int,
        xid: int,
        gpu_instance_id: int | None = None,
        compute_instance_id: int | None = None,
        count: int = 1,
    ) -> dict[str, Any]:
        """Raise ``count`` XID events on a GPU, attributed to an instance when ids are given."""
        for name, value in (("xid", xid), ("count", count)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise SimError(f"{name} must be an integer, not {value!r}")
        if not 0 < xid < 2**32:
            raise SimError(f"xid must be between 1 and {2**32 - 1}, not {xid}")
        if not 1 <= count <= MAX_EVENTS:
            raise SimError(f"count must be between 1 and {MAX_EVENTS}, not {count}")
        with self.lock:
            sim = self._gpu(gpu)
            self._check_instance(sim, gpu_instance_id, compute_instance_id)
            event = Event(
                gpu=sim.index,
                event_type=pynvml.nvmlEventTypeXidCriticalError,
                data=xid,
                gpu_instance_id=UNATTRIBUTED if gpu_instance_id is None else gpu_instance_id,
                compute_instance_id=(
                    UNATTRIBUTED if compute_instance_id is None else compute_instance_id
                ),
            )
            self.publish(event, count)
        return {
            "gpu": sim.index,
            "gpu_uuid": sim.uuid,
            "xid": xid,
            "gpu_instance_id": gpu_instance_id,
            "compute_instance_id": compute_instance_id,
            "count": count,
        }

    def _check_instance(self, sim: SimGpu, gi_id: object, ci_id: object) -> None:
        for name, value in (("gpu_instance_id", gi_id), ("compute_instance_id", ci_id)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise SimError(f"{name} must be an integer, not {value!r}")
        if gi_id is None:
            if ci_id is not None:
                raise SimError("compute_instance_id needs gpu_instance_id")
            return
        if not sim.mig_enabled:
            raise SimError(f"GPU {sim.index} is not in MIG mode: it has no GPU instances")
        gi = sim.gpu_instances.get(gi_id)  # type: ignore[call-overload]
        if gi is None:
            have = ", ".join(str(i) for i in sorted(sim.gpu_instances)) or "none"
            raise SimError(f"GPU {sim.index} has no GPU instance {gi_id} (it has: {have})")
        if ci_id is not None and ci_id not in gi.compute_instances:
            have = ", ".join(str(i) for i in sorted(gi.compute_instances)) or "none"
            raise SimError(
                f"GPU instance {gi_id} on GPU {sim.index} has no compute instance {ci_id} "
                f"(it has: {have})"
            )

    def inject_ecc(self, gpu: int, uncorrected: bool = False, count: int = 1) -> dict[str, Any]:
        """Count ECC errors on a GPU and raise as many single/double-bit events.

        Corrected errors raise ``nvmlEventTypeSingleBitEccError``, uncorrected ones
        ``nvmlEventTypeDoubleBitEccError``; both the volatile and the aggregate counters of
        ``nvmlDeviceGetTotalEccErrors`` grow by ``count``.
        """
        if not isinstance(uncorrected, bool):
            raise SimError(f"uncorrected must be true or false, not {uncorrected!r}")
        if not isinstance(count, int) or isinstance(count, bool):
            raise SimError(f"count must be an integer, not {count!r}")
        if not 1 <= count <= MAX_EVENTS:
            raise SimError(f"count must be between 1 and {MAX_EVENTS}, not {count}")
        error_type = (
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
            if uncorrected
            else pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        )
        kind = (
            pynvml.nvmlEventTypeDoubleBitEccError
            if uncorrected
            else pynvml.nvmlEventTypeSingleBitEccError
        )
        with self.lock:
            sim = self._gpu(gpu)
            for counter in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
                sim.ecc[error_type, counter] = sim.ecc.get((error_type, counter), 0) + count
            self.publish(Event(sim.index, kind, 0), count)
            return {
                "gpu": sim.index,
                "gpu_uuid": sim.uuid,
                "uncorrected": uncorrected,
                "count": count,
                "volatile_total": sim.ecc[error_type, pynvml.NVML_VOLATILE_ECC],
                "aggregate_total": sim.ecc[error_type, pynvml.NVML_AGGREGATE_ECC],
            }

    def inject_recovery_action(self, gpu: int, action: str | int) -> dict[str, Any]:
        """Make the driver ask for a recovery action on a GPU, and say so with an event.

        ``action`` is a name of RECOVERY_ACTIONS (``gpu_reset``, ``node_reboot``, ...) or its
        NVML value. ``nvmlDeviceGetFieldValues`` reports it under
        ``NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`` from now on, and one
        ``nvmlEventTypeGpuRecoveryAction`` event (eventData 0, no instance) is raised, even when
        the action does not change. The ``recover`` fault (a reset) sets it back to ``none``.
        """
        value = recovery_action_value(action)
        with self.lock:
            sim = self._gpu(gpu)
            sim.recovery_action = value
            self.publish(Event(sim.index, pynvml.nvmlEventTypeGpuRecoveryAction, 0))
            return {
                "gpu": sim.index,
                "gpu_uuid": sim.uuid,
                "recovery_action": recovery_action_name(value),
                "value": value,
            }

    def inject_pcie_replays(self, gpu: int, count: int = 1) -> dict[str, Any]:
        """Count ``count`` PCIe replays on a GPU (link-level retransmissions, no event).

        ``nvmlDeviceGetPcieReplayCounter``, NVML field NVML_FI_DEV_PCIE_REPLAY_COUNTER and
        DCGM field 202 report the running total; it never decreases, not even on ``recover``.
        """
        if not isinstance(count, int) or isinstance(count, bool):
            raise SimError(f"count must be an integer, not {count!r}")
        if not 1 <= count <= MAX_EVENTS:
            raise SimError(f"count must be between 1 and {MAX_EVENTS}, not {count}")
        with self.lock:
            sim = self._gpu(gpu)
            sim.pcie_replays += count
            return {
                "gpu": sim.index,
                "gpu_uuid": sim.uuid,
                "count": count,
                "total": sim.pcie_replays,
            }

    def _node_fault(self, kind: str) -> dict[str, Any]:
        if kind == "nvml_shutdown":
            for session in list(self.sessions):
                session.shut_down()
            return {"nvml": "uninitialised"}
        with self.lock:
            if kind == "hostengine_down":
                self.hostengine_up = False
            elif not self.hostengine_up:
                self.hostengine_up = True
                self.hostengine_generation += 1
            return self._describe_hostengine()

    def fault(self, gpu: int | None = None, kind: str = "") -> dict[str, Any]:
        """Make a GPU fall off the bus, hang, overheat, or recover with the same handles.

        ``profiling_multipass`` makes the host engine list SM occupancy (1003) in a pass of its
        own, so that it cannot be watched with 1002 and 1004; DCGM clients see it when they
        next read the GPU's metric groups. ``fall_off_bus`` raises XID 79 and
        ``nvmlEventTypeGpuUnavailableError`` before the GPU's calls start failing.
        ``overheat`` is a cooling failure: the GPU runs above its slowdown temperature with
        SW_THERMAL_SLOWDOWN set and a lower SM clock, accumulating thermal violation time.
        ``recover`` undoes every GPU fault and, like a GPU reset, sets the recovery action back
        to ``none`` (silently: no recovery action event).

        ``hostengine_down`` stops the node's DCGM host engine and ``hostengine_up`` starts a
        fresh one (a new process: new generation, nothing kept). ``nvml_shutdown``
        uninitialises NVML under every client but the simulator's own operator and host
        engine (separate processes), as a library in the client's process calling
        ``nvmlShutdown`` once too often would; calls fail with ``NVMLError_Uninitialized``
        until the client calls ``nvmlInit`` again. Node faults ignore ``gpu``.
        """
        if kind not in FAULTS:
            raise SimError(f"unknown fault {kind!r}; valid: {', '.join(FAULTS)}")
        if kind in NODE_FAULTS:
            return self._node_fault(kind)
        if gpu is None:
            raise SimError(f"fault {kind!r} needs a GPU index")
        with self.lock:
            sim = self._gpu(gpu)
            if kind == "fall_off_bus":
                # The kernel reports XID 79 "GPU has fallen off the bus", and NVML that the
                # GPU is unavailable; both are queued before the GPU's calls start failing.
                self.publish(Event(sim.index, pynvml.nvmlEventTypeXidCriticalError, 79))
                self.publish(Event(sim.index, pynvml.nvmlEventTypeGpuUnavailableError, 0))
                sim.state = GpuState.LOST
                sim.not_hung.set()  # blocked callers wake up and see the GPU gone
            elif kind == "hang":
                sim.not_hung.clear()
                sim.state = GpuState.HUNG
            elif kind == "profiling_multipass":
                sim.profiling_multipass = True
            elif kind == "overheat":
                sim.advance(self.now())  # violation time counts from now, not the last read
                sim.overheated = True
            else:  # recover
                sim.advance(self.now())
                sim.state = GpuState.OK
                sim.not_hung.set()
                sim.profiling_multipass = False
                sim.overheated = False
                sim.recovery_action = pynvml.NVML_GPU_RECOVERY_ACTION_NONE
            return {
                "gpu": sim.index,
                "gpu_uuid": sim.uuid,
                "state": sim.state.value,
                "overheated": sim.overheated,
            }

    def describe(self) -> dict[str, Any]:
        """The fleet as JSON-able data: GPUs, their instances, placements and MIG UUIDs."""
        with self.lock:
            return {
                "gpus": [self._describe_gpu(gpu) for gpu in self.gpus],
                "hostengine": self._describe_hostengine()["hostengine"],
            }

    def _describe_hostengine(self) -> dict[str, Any]:
        state = "up" if self.hostengine_up else "down"
        return {"hostengine": state, "generation": self.hostengine_generation}

    def _describe_gpu(self, gpu: SimGpu) -> dict[str, Any]:
        with self.lock:
            return {
                "index": gpu.index,
                "uuid": gpu.uuid,
                "name": gpu.model.product,
                "model": gpu.model.key,
                "mig_enabled": gpu.mig_enabled,
                "state": gpu.state.value,
                "recovery_action": recovery_action_name(gpu.recovery_action),
                "overheated": gpu.overheated,
                "gpu_instances": [
                    {
                        "id": gi.id,
                        "profile": gi.profile.name,
                        "profile_id": gi.profile.id,
                        "placement": {"start": gi.placement.start, "size": gi.placement.size},
                        "memory_mb": gi.profile.memory_mb,
                        "sms": gi.profile.sms,
                        "compute_instances": [
                            {
                                "id": ci.id,
                                "mig_uuid": ci.uuid,
                                "profile": ci.name,
                                "mig_index": ci.mig_index,
                            }
                            for _, ci in sorted(gi.compute_instances.items())
                        ],
                    }
                    for _, gi in sorted(gpu.gpu_instances.items())
                ],
            }
