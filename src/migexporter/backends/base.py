"""The contract every measurement backend fulfils, and the values it hands to the collector."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from migexporter.catalog import Metric
    from migexporter.topology import Gpu


class BackendUnavailableError(Exception):
    """The vendor library cannot be used at all (no driver, host engine gone, ...)."""


class GpuUnavailableError(Exception):
    """One GPU cannot be read this cycle (fell off the bus, hung, driver error)."""


ReadingKey = tuple["Metric", tuple[str, ...]]


@dataclass
class Readings:
    """Values of one entity, keyed by catalog metric and the values of its extra labels."""

    values: dict[ReadingKey, float] = field(default_factory=dict)

    def set(self, metric: Metric, value: float, *extra_labels: str) -> None:
        """Record one value; ``extra_labels`` follow ``metric.extra_labels`` in order."""
        self.values[(metric, extra_labels)] = float(value)

    def get(self, metric: Metric, *extra_labels: str) -> float | None:
        """The value recorded for ``metric``, or None when it was not measured."""
        return self.values.get((metric, extra_labels))


@dataclass
class GpuSample:
    """One collection of one physical GPU and its MIG instances.

    A metric missing from a ``Readings`` was not measured (not supported, no permission, or
    the first GPM sample of an instance): its series is omitted, never reported as 0.
    """

    gpu: Readings = field(default_factory=Readings)
    gpu_instances: dict[int, Readings] = field(default_factory=dict)
    compute_instances: dict[tuple[int, int], Readings] = field(default_factory=dict)
    errors: int = 0  # unexpected per-field driver errors seen while sampling
    # Profiling field id -> whether the backend can measure it on this GPU.
    fields_supported: dict[int, bool] = field(default_factory=dict)


class EventKind(enum.Enum):
    """Driver events the exporter acts on."""

    XID = "xid"
    ECC_SINGLE_BIT = "ecc_single_bit"
    ECC_DOUBLE_BIT = "ecc_double_bit"
    MIG_CONFIG_CHANGE = "mig_config_change"
    GPU_UNAVAILABLE = "gpu_unavailable"
    RECOVERY_ACTION = "recovery_action"


# The error_type label of ECC events: single-bit errors are corrected, double-bit ones are not.
ECC_ERROR_TYPES = {EventKind.ECC_SINGLE_BIT: "corrected", EventKind.ECC_DOUBLE_BIT: "uncorrected"}


@dataclass(frozen=True)
class DeviceEvent:
    """One event from the driver; instance ids are None when it was not attributed."""

    gpu_uuid: str
    kind: EventKind
    time: float
    xid: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    recovery_action: str | None = None  # RECOVERY_ACTION events: what the driver asks for


class Backend(Protocol):
    """A source of topology, samples and events.

    Every method blocks: the collector calls them from worker threads, one thread per GPU for
    ``discover_gpu`` and ``sample`` (so a hung GPU stalls only itself) and one for
    ``wait_events``.
    """

    name: str
    driver_version: str

    def open(self) -> None:
        """Initialise the vendor library; raise BackendUnavailableError when it cannot be."""

    def gpu_count(self) -> int:
        """How many physical GPUs the library lists; BackendUnavailableError when it cannot."""

    def discover_gpu(self, index: int) -> Gpu:
        """Enumerate one GPU and its MIG instances as they are now."""

    def sample(self, gpu: Gpu) -> GpuSample:
        """Read one GPU and its instances; raise GpuUnavailableError when it cannot be read."""

    def wait_events(self, timeout_s: float) -> list[DeviceEvent]:
        """Block up to ``timeout_s`` for driver events; return those that arrived."""

    def close(self) -> None:
        """Release the vendor library's resources."""
