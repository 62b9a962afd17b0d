"""What every fake NVML call shares: the init count, handle lookup, hangs and out-parameters."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import TYPE_CHECKING, Any

import pynvml

from migexporter.sim._model import GpuState, SimComputeInstance, SimGpu, SimGpuInstance

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from migexporter.sim._events import EventQueue
    from migexporter.sim.fleet import Fleet


def fail(code: int) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML return code (NVMLError picks the subclass)."""
    return pynvml.NVMLError(code)


def _gpu_of(obj: object) -> SimGpu | None:
    if isinstance(obj, SimGpu):
        return obj
    if isinstance(obj, SimGpuInstance | SimComputeInstance):
        return obj.gpu
    return None


def store(ref: Any, value: int) -> None:
    """Write ``value`` through an out-parameter: ``byref(c)``, ``pointer(c)`` or ``c``."""
    if ref is None:
        raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    target = getattr(ref, "_obj", None)  # what ctypes.byref() wraps
    if target is None:
        target = getattr(ref, "contents", ref)
    target.value = value


def fill(ref: Any, items: Sequence[Any]) -> None:
    """Write ``items`` into a caller's ctypes array (or ``byref`` of one, or a pointer)."""
    if ref is None:
        raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    target = getattr(ref, "_obj", ref)
    if isinstance(target, ctypes.Array) and len(target) < len(items):
        raise fail(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
    for position, item in enumerate(items):
        target[position] = item


class Session:
    """One process's view of the library: NVML counts nvmlInit/nvmlShutdown per process."""

    def __init__(
        self, fleet: Fleet, privileged: bool | None = None, *, client: bool = True
    ) -> None:
        self._fleet = fleet
        self._privileged = fleet.privileged if privileged is None else privileged
        self._refcount = 0
        self._refcount_lock = threading.Lock()
        # Freed with the library, as NVML frees a process's event sets and GPM samples.
        self._event_queues: list[EventQueue] = []
        self._gpm_samples: dict[int, object] = {}  # struct address -> struct
        if client:  # the simulator's operator and host engine are processes of their own
            fleet.sessions.add(self)

    def shut_down(self) -> None:
        """Uninitialise, as another user of the process's NVML calling nvmlShutdown would.

        Every call fails with NVMLError_Uninitialized until the next nvmlInit.
        """
        with self._refcount_lock:
            self._refcount = 0
        self.release_resources()

    def release_resources(self) -> None:
        """Free this session's event sets and GPM samples: NVML frees them when it shuts down."""
        with self._fleet.lock:
            for queue in self._event_queues:
                self._fleet.free_event_set(queue)
            self._event_queues.clear()
            for struct in self._gpm_samples.values():
                self._fleet.retire(struct, keep=False)
            self._gpm_samples.clear()

    def own_event_set(self, queue: EventQueue) -> None:
        """Remember an event set this session created, so that a shutdown frees it."""
        self._event_queues.append(queue)

    def _check_init(self) -> None:
        if self._refcount <= 0:
            raise fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _require_privilege(self) -> None:
        if not self._privileged:
            raise fail(pynvml.NVML_ERROR_NO_PERMISSION)

    @contextlib.contextmanager
    def _call(self, *handles: Any, block: bool = True) -> Iterator[None]:
        """Enter a call about ``handles``: initialised, their GPUs reachable, lock held.

        A hung GPU blocks here, before the fleet lock is taken, so the other GPUs, the
        event waits and the operator keep working. ``block=False`` is for bookkeeping calls
        that do not talk to the GPU (event registration): they must not stall an event
        thread behind one hung GPU.
        """
        self._check_init()
        gpus = [
            gpu
            for handle in handles
            for kind in ("device", "gpu_instance", "compute_instance")
            if (gpu := _gpu_of(self._fleet.resolve(handle, kind))) is not None
        ]
        for gpu in gpus if block else ():
            self._fleet.wait_usable(gpu)
        with self._fleet.lock:
            if any(gpu.state is GpuState.LOST for gpu in gpus):
                raise fail(pynvml.NVML_ERROR_GPU_IS_LOST)
            yield

    def _device(self, handle: Any) -> tuple[SimGpu, SimComputeInstance | None]:
        """A device handle: (the GPU, None) for a GPU, (parent, its CI) for a MIG device."""
        obj = self._fleet.resolve(handle, "device")
        if isinstance(obj, SimGpu):
            return obj, None
        if isinstance(obj, SimComputeInstance):
            return obj.gpu, obj
        raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def _gpu(self, handle: Any, mig_error: int = pynvml.NVML_ERROR_NOT_SUPPORTED) -> SimGpu:
        """A physical GPU handle; a MIG device handle raises ``mig_error``."""
        gpu, mig = self._device(handle)
        if mig is not None:
            raise fail(mig_error)
        return gpu

    def _gpu_instance(self, handle: Any) -> SimGpuInstance:
        obj = self._fleet.resolve(handle, "gpu_instance")
        if not isinstance(obj, SimGpuInstance):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return obj

    def _compute_instance(self, handle: Any) -> SimComputeInstance:
        obj = self._fleet.resolve(handle, "compute_instance")
        if not isinstance(obj, SimComputeInstance):
            raise fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return obj
