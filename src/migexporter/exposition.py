"""Turn one collector snapshot into metric families and pre-rendered response bodies."""

from __future__ import annotations

import gzip
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from migexporter import catalog, xids
from migexporter.catalog import Kind, Metric

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from prometheus_client.metrics_core import Metric as Family

    from migexporter.backends.base import GpuSample, Readings
    from migexporter.topology import Gpu, GpuInstance, Topology

TEXT = CONTENT_TYPE_LATEST
OPENMETRICS = openmetrics.CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class EventKey:
    """One event series: its family, where it happened, and the family's extra label value."""

    metric: Metric  # an event family of the catalog (Scope.EVENT)
    gpu_uuid: str
    gpu_instance_id: int | None
    compute_instance_id: int | None
    detail: str = ""  # the XID, ECC error type or recovery action; "" for families without one


@dataclass(frozen=True)
class EventCount:
    """How often an event series fired and when it last did."""

    gpu: str  # the GPU's index when the first event came
    count: int
    last_seconds: float | None  # None for a series shown at 0 before its first event


@dataclass(frozen=True)
class BuildInfo:
    """What is running, for the build-info series."""

    version: str
    nvml_bindings_version: str = ""
    python_version: str = field(default_factory=platform.python_version)


@dataclass(frozen=True)
class Snapshot:
    """Everything one exposition shows; the collector makes one per cycle and per event batch."""

    build: BuildInfo
    backend: str
    backend_up: bool
    topology: Topology
    driver_version: str = ""
    samples: Mapping[str, GpuSample] = field(default_factory=dict)  # by GPU uuid, if read
    collect_duration: float | None = None
    last_collect: float | None = None
    errors: Mapping[str, int] = field(default_factory=dict)  # by GPU uuid; "" backend-wide
    events: Mapping[EventKey, EventCount] = field(default_factory=dict)

    def collect(self) -> Iterator[Family]:
        """prometheus_client's Collector protocol: yield every family, catalog order."""
        return iter(families(self))


class _Families:
    """Families created on first use and yielded in catalog order."""

    def __init__(self) -> None:
        self._by_metric: dict[Metric, Family] = {}

    def add(self, metric: Metric, labels: Iterable[str], value: float) -> None:
        family = self._by_metric.get(metric)
        if family is None:
            family = self._by_metric[metric] = _new_family(metric)
        label_values = list(labels)
        if metric.kind is Kind.INFO:
            scope_count = len(catalog.SCOPE_LABELS[metric.scope])
            extra = dict(zip(metric.extra_labels, label_values[scope_count:], strict=True))
            family.add_metric(label_values[:scope_count], extra)  # type: ignore[attr-defined]
        else:
            family.add_metric(label_values, value)  # type: ignore[attr-defined]

    def add_readings(self, readings: Readings | None, identity: tuple[str, ...]) -> None:
        for (metric, extra), value in readings.values.items() if readings else ():
            self.add(metric, identity + extra, value)

    def ordered(self) -> list[Family]:
        return [self._by_metric[m] for m in catalog.METRICS if m in self._by_metric]


def _new_family(metric: Metric) -> Family:
    labels = list(metric.labels)
    unit = metric.unit if metric.name.removesuffix("_total").endswith("_" + metric.unit) else ""
    if metric.kind is Kind.COUNTER:
        return CounterMetricFamily(metric.name, metric.help, labels=labels, unit=unit)
    if metric.kind is Kind.INFO:
        scope_labels = list(catalog.SCOPE_LABELS[metric.scope])
        return InfoMetricFamily(metric.name.removesuffix("_info"), metric.help, labels=scope_labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=labels, unit=unit)


def _gpu_labels(gpu: Gpu) -> tuple[str, ...]:
    return (str(gpu.index), gpu.uuid)


def _gi_labels(gpu: Gpu, gi: GpuInstance) -> tuple[str, ...]:
    return (str(gpu.index), gpu.uuid, str(gi.id), gi.profile)


def families(snapshot: Snapshot) -> list[Family]:
    """Every metric family of a snapshot, in catalog order."""
    out = _Families()
    build = snapshot.build
    out.add(
        catalog.BUILD_INFO, (build.version, build.python_version, build.nvml_bindings_version), 1
    )
    backend = snapshot.backend
    out.add(catalog.BACKEND_UP, (backend,), float(snapshot.backend_up))
    if snapshot.collect_duration is not None:
        out.add(catalog.COLLECT_DURATION, (backend,), snapshot.collect_duration)
    if snapshot.last_collect is not None:
        out.add(catalog.LAST_COLLECT, (backend,), snapshot.last_collect)
    for uuid, count in sorted(snapshot.errors.items()):
        out.add(catalog.COLLECT_ERRORS, (backend, uuid), count)
    for code, row in sorted(xids.CATALOG.items()):
        row_labels = (str(code), row.mnemonic, row.description, row.action, row.severity.value)
        out.add(catalog.XID_INFO, row_labels, 1)
    for key, seen in sorted(snapshot.events.items(), key=_event_order):
        event_labels = _event_labels(key, seen)
        out.add(key.metric, event_labels, seen.count)
        if key.metric is catalog.XID_ERRORS and seen.last_seconds is not None:
            out.add(catalog.XID_LAST, event_labels, seen.last_seconds)
    if snapshot.backend_up:
        for gpu in snapshot.topology.gpus:
            _add_gpu(out, snapshot, gpu)
    return out.ordered()


def _add_gpu(out: _Families, snapshot: Snapshot, gpu: Gpu) -> None:
    identity = _gpu_labels(gpu)
    mig_mode = "enabled" if gpu.mig_enabled else "disabled"
    out.add(
        catalog.GPU_INFO,
        (*identity, gpu.name, snapshot.driver_version, mig_mode, gpu.pci_bus_id),
        1,
    )
    sample = snapshot.samples.get(gpu.uuid)
    out.add(catalog.GPU_UP, identity, float(sample is not None))
    if sample is None:
        return  # nothing stale: a GPU that cannot be read keeps only its info and up series
    out.add_readings(sample.gpu, identity)
    for field_id, supported in sorted(sample.fields_supported.items()):
        out.add(catalog.FIELD_SUPPORTED, (gpu.uuid, str(field_id)), float(supported))
    if gpu.mig_enabled:
        out.add(catalog.GPU_MIG_SLICES_CAPACITY, identity, gpu.mig_slices_total)
        out.add(catalog.GPU_MIG_SLICES_USED, identity, gpu.mig_slices_used)
    for gi in gpu.gpu_instances:
        gi_identity = _gi_labels(gpu, gi)
        placement = gi.placement
        out.add(
            catalog.GPU_INSTANCE_INFO,
            (
                *gi_identity,
                gi.mig_uuid,
                _text(gi.profile_id),
                str(gi.slices),
                "" if placement is None else str(placement.start),
                "" if placement is None else str(placement.size),
                _text(gi.sms),
            ),
            1,
        )
        out.add_readings(sample.gpu_instances.get(gi.id), gi_identity)
        for ci in gi.compute_instances:
            ci_identity = (str(gpu.index), gpu.uuid, str(gi.id), str(ci.id), gi.profile)
            out.add(
                catalog.COMPUTE_INSTANCE_INFO,
                (*ci_identity, ci.mig_uuid, ci.profile, str(ci.slices), _text(ci.sms)),
                1,
            )
            out.add_readings(sample.compute_instances.get((gi.id, ci.id)), ci_identity)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _event_labels(key: EventKey, seen: EventCount) -> tuple[str, ...]:
    where = (seen.gpu, key.gpu_uuid, _text(key.gpu_instance_id), _text(key.compute_instance_id))
    return (*where, key.detail) if key.metric.extra_labels else where


def _event_order(item: tuple[EventKey, EventCount]) -> tuple[str, tuple[str, ...]]:
    key, seen = item
    return key.metric.name, _event_labels(key, seen)


@dataclass(frozen=True)
class Exposition:
    """The response bodies of one snapshot, rendered once and served many times."""

    text: bytes
    openmetrics: bytes
    text_gzip: bytes
    openmetrics_gzip: bytes

    def body(self, *, openmetrics: bool, gzipped: bool) -> bytes:
        """The body for a negotiated format and encoding."""
        if openmetrics:
            return self.openmetrics_gzip if gzipped else self.openmetrics
        return self.text_gzip if gzipped else self.text


def render(snapshot: Snapshot) -> Exposition:
    """Render a snapshot in both formats, plain and gzipped."""
    text = generate_latest(snapshot)
    om = openmetrics.generate_latest(snapshot)  # type: ignore[no-untyped-call]
    # Level 6 keeps a rebuild cheap; scrapes reuse the result until the next cycle.
    return Exposition(text, om, gzip.compress(text, 6, mtime=0), gzip.compress(om, 6, mtime=0))
