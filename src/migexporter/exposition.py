"""Turn one collector snapshot into metric families and pre-rendered response bodies."""

from __future__ import annotations

import functools
import gzip
import math
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

from migexporter import catalog, compat, xids
from migexporter.catalog import Kind, Metric
from migexporter.pods import NO_OWNER, Labels, PodMap

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
    profile: str = ""  # the GPU instance's profile at the time; "" when not attributed
    owner: Labels = NO_OWNER  # namespace, pod, container holding the instance at the time


@dataclass(frozen=True)
class EventCount:
    """How often an event series fired and when it last did."""

    gpu: str  # the GPU's index when the first event came
    count: int
    last_seconds: float


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
    pods: PodMap = field(default_factory=PodMap)
    pod_resources_up: bool | None = None  # None: pod attribution is off
    compat_views: compat.Views = field(default_factory=compat.Views)  # dcgm-exporter names too

    def collect(self) -> Iterator[Family]:
        """prometheus_client's Collector protocol: yield every family, catalog order."""
        return iter(families(self))


_Series = tuple[tuple[str, ...], float]  # label values in the metric's label order, value


class _Collected:
    """Series by family, gathered in one walk over a snapshot."""

    def __init__(self) -> None:
        self.by_metric: dict[Metric, list[_Series]] = {}

    def add(self, metric: Metric, labels: Iterable[str], value: float) -> None:
        self.by_metric.setdefault(metric, []).append((tuple(labels), value))

    def add_readings(self, readings: Readings | None, identity: tuple[str, ...]) -> None:
        for (metric, extra), value in readings.values.items() if readings else ():
            self.add(metric, identity + extra, value)

    def ordered(self) -> list[tuple[Metric, list[_Series]]]:
        return [(m, self.by_metric[m]) for m in catalog.METRICS if m in self.by_metric]


def families(snapshot: Snapshot) -> list[Family]:
    """Every metric family of a snapshot as prometheus-client objects, in catalog order."""
    return [_family(metric, series) for metric, series in _collect(snapshot).ordered()]


def _family(metric: Metric, series: Iterable[_Series]) -> Family:
    labels = list(metric.labels)
    unit = metric.unit if metric.name.removesuffix("_total").endswith("_" + metric.unit) else ""
    family: Family
    if metric.kind is Kind.INFO:
        scope_count = len(catalog.SCOPE_LABELS[metric.scope])
        family = InfoMetricFamily(
            metric.name.removesuffix("_info"), metric.help, labels=labels[:scope_count]
        )
        for values, _ in series:
            extra = dict(zip(metric.extra_labels, values[scope_count:], strict=True))
            family.add_metric(list(values[:scope_count]), extra)
    else:
        kind = CounterMetricFamily if metric.kind is Kind.COUNTER else GaugeMetricFamily
        family = kind(metric.name, metric.help, labels=labels, unit=unit)
        for values, value in series:
            family.add_metric(list(values), value)
    family.samples = [
        sample._replace(labels={k: v for k, v in sample.labels.items() if _shown(k, v)})
        for sample in family.samples
    ]
    return family


def _shown(label: str, value: str) -> bool:
    """Whether a label is printed: an optional one (the pod labels) only when it has a value."""
    return bool(value) or label not in catalog.OPTIONAL_LABELS


def _gpu_labels(gpu: Gpu) -> tuple[str, ...]:
    return (str(gpu.index), gpu.uuid)


def _gi_labels(gpu: Gpu, gi: GpuInstance, pods: PodMap) -> tuple[str, ...]:
    return (str(gpu.index), gpu.uuid, str(gi.id), gi.profile, *pods.labels(gpu, gi))


def _collect(snapshot: Snapshot) -> _Collected:
    out = _Collected()
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
    if snapshot.pod_resources_up is not None:
        out.add(catalog.POD_RESOURCES_UP, (), float(snapshot.pod_resources_up))
    for code, row in sorted(xids.CATALOG.items()):
        row_labels = (str(code), row.mnemonic, row.description, row.action, row.severity.value)
        out.add(catalog.XID_INFO, row_labels, 1)
    for key, seen in sorted(snapshot.events.items(), key=_event_order):
        event_labels = _event_labels(key, seen)
        out.add(key.metric, event_labels, seen.count)
        if key.metric is catalog.XID_ERRORS:
            out.add(catalog.XID_LAST, event_labels, seen.last_seconds)
    if snapshot.backend_up:
        for gpu in snapshot.topology.gpus:
            _add_gpu(out, snapshot, gpu)
    return out


def _add_gpu(out: _Collected, snapshot: Snapshot, gpu: Gpu) -> None:
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
        gi_identity = _gi_labels(gpu, gi, snapshot.pods)
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
                snapshot.pods.claim(gpu, gi),
            ),
            1,
        )
        out.add_readings(sample.gpu_instances.get(gi.id), gi_identity)
        for ci in gi.compute_instances:
            ci_identity = (
                *(str(gpu.index), gpu.uuid, str(gi.id), str(ci.id), gi.profile),
                *snapshot.pods.labels(gpu, gi, ci),
            )
            out.add(
                catalog.COMPUTE_INSTANCE_INFO,
                (*ci_identity, ci.mig_uuid, ci.profile, str(ci.slices), _text(ci.sms)),
                1,
            )
            out.add_readings(sample.compute_instances.get((gi.id, ci.id)), ci_identity)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _event_labels(key: EventKey, seen: EventCount) -> tuple[str, ...]:
    where = (
        *(seen.gpu, key.gpu_uuid, _text(key.gpu_instance_id), _text(key.compute_instance_id)),
        key.profile,
        *key.owner,
    )
    return (*where, key.detail) if key.metric.extra_labels else where


def _event_order(item: tuple[EventKey, EventCount]) -> tuple[str, tuple[str, ...]]:
    key, seen = item
    return key.metric.name, _event_labels(key, seen)


@dataclass
class Exposition:
    """The response bodies of one snapshot, rendered once and served many times.

    Only the gzipped formats that scrapers ask for are compressed: Prometheus asks for one, so
    compressing both on every cycle would mostly be thrown away. ``render`` compresses those
    asked of the previous snapshot; any other is compressed on its first request and kept.
    """

    text: bytes
    openmetrics: bytes
    _gzipped: dict[bool, bytes] = field(default_factory=dict, repr=False)

    def body(self, *, openmetrics: bool, gzipped: bool) -> bytes:
        """The body for a negotiated format and encoding."""
        plain = self.openmetrics if openmetrics else self.text
        if not gzipped:
            return plain
        body = self._gzipped.get(openmetrics)
        if body is None:
            # Level 1: a tenth of the size at a third of level 6's cost, once per snapshot.
            body = self._gzipped[openmetrics] = gzip.compress(plain, 1, mtime=0)
        return body

    def gzipped_formats(self) -> frozenset[bool]:
        """The formats (``openmetrics`` true or false) asked for gzipped so far."""
        return frozenset(self._gzipped)


def render(snapshot: Snapshot, gzipped: Iterable[bool] = ()) -> Exposition:
    """Render a snapshot in both formats, and gzip the formats of ``gzipped``.

    prometheus-client's generate_latest takes ~20 ms for 8 GPUs x 7 instances, in a thread that
    holds the interpreter lock while scrapes wait. Sample lines are the same in both formats,
    so they are written once, here, and only the family headers differ; the headers come from
    prometheus-client itself (``_headers``), and a test holds the bytes equal to its output.
    """
    text_parts: list[str] = []
    om_parts: list[str] = []
    for metric, series in _collect(snapshot).ordered():
        text_header, om_header = _headers(metric)
        lines = _sample_lines(metric, series)
        text_parts += (text_header, lines)
        om_parts += (om_header, lines)
    for family in compat.render(snapshot, snapshot.compat_views):
        text_parts.append(family.text(openmetrics=False))
        om_parts.append(family.text(openmetrics=True))
    om_parts.append("# EOF\n")
    exposition = Exposition("".join(text_parts).encode(), "".join(om_parts).encode())
    for om in gzipped:  # here, in the render thread, rather than on a scrape
        exposition.body(openmetrics=om, gzipped=True)
    return exposition


@functools.cache
def _headers(metric: Metric) -> tuple[str, str]:
    """HELP/TYPE (and UNIT) lines of a family in the text and OpenMetrics formats."""
    empty = _OneFamily(_family(metric, ()))
    om = openmetrics.generate_latest(empty).decode()  # type: ignore[no-untyped-call]
    return generate_latest(empty).decode(), om.removesuffix("# EOF\n")


@functools.cache
def _label_order(metric: Metric) -> tuple[tuple[int, str], ...]:
    """Label positions and names in the sorted order both formats print them in."""
    return tuple(sorted(enumerate(metric.labels), key=lambda pair: pair[1]))


# Per series seen: "name{labels} ", the last value and its line, so that a render formats only
# the values that changed (most series hold still between cycles). Cleared when it grows past
# what any node holds, so reconfigurations cannot make it grow without end.
_LINES: dict[tuple[Metric, tuple[str, ...]], tuple[str, float, str]] = {}
_LINES_MAX = 100_000


def _sample_lines(metric: Metric, series: list[_Series]) -> str:
    if len(_LINES) > _LINES_MAX:
        _LINES.clear()
    lines = []
    for values, value in series:
        cached = _LINES.get((metric, values))
        if cached is None:
            prefix = _prefix(metric, values)
        else:
            prefix, last, line = cached
            # 0.0 == -0.0 but they print differently; NaN never equals and is always formatted.
            if last == value and (value or math.copysign(1.0, last) == math.copysign(1.0, value)):
                lines.append(line)
                continue
        line = f"{prefix}{floatToGoString(value)}\n"  # type: ignore[no-untyped-call]
        _LINES[metric, values] = (prefix, value, line)
        lines.append(line)
    return "".join(lines)


def _prefix(metric: Metric, values: tuple[str, ...]) -> str:
    labels = ",".join(
        f'{label}="{_escape(values[i])}"'
        for i, label in _label_order(metric)
        if _shown(label, values[i])
    )
    return f"{metric.name}{{{labels}}} " if labels else f"{metric.name} "


def _escape(value: str) -> str:
    """Label-value escaping of both formats: backslash, newline and double quote."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class _OneFamily:
    """A registry-like object with one family, for prometheus-client's generators."""

    def __init__(self, family: Family) -> None:
        self._family = family

    def collect(self) -> Iterator[Family]:
        yield self._family
