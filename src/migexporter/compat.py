"""Compatibility views: dcgm-exporter's names, units and labels, rendered from our own snapshot.

``--compat dcgm-exporter`` adds, next to the native families, what dcgm-exporter 4.8 serves with
its default counters (``etc/default-counters.csv`` of NVIDIA/dcgm-exporter), in its shape:

- one entity per GPU instance on a GPU that has instances, else one per GPU (its default
  ``-d f``); compute instances are never entities of their own;
- labels ``gpu``, ``UUID`` (the parent GPU's, also on instances), ``pci_bus_id``, ``device``,
  ``modelName``, then ``GPU_I_PROFILE`` and ``GPU_I_ID`` on instances, ``hostname``, the driver
  version label, then the attributes in sorted order (``container``, ``err_code``, ``err_msg``,
  ``namespace``, ``pod``, ``xid``): its ``gpuMetricsFormat`` template, whose maps Go prints sorted;
- a field DCGM keeps per GPU (temperature, power, clocks, ...) repeats the GPU's value on every
  instance, since DCGM answers a GPU-level field on an instance with its parent's value; memory
  and profiling fields are the instance's own;
- families in field-id order (the template ranges over a map keyed by counter, field id first),
  int64 fields printed with ``%d``, doubles with ``%f``; a field without a value has no series;
- ``DCGM_FI_DEV_XID_ERRORS`` shows what DCGM keeps on the entity: see ``_last_xids``.

Every value is a conversion of a native sample of the same snapshot, never a second read of the
driver; the table ``PROFILES`` is the one place where a compat name is written.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from migexporter import catalog, dcgm_exporter_xids

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from migexporter.backends.base import Readings
    from migexporter.catalog import Metric
    from migexporter.exposition import EventCount, EventKey, Snapshot
    from migexporter.topology import Gpu, GpuInstance

MIB = 2**20
XID_FIELD = 230  # DCGM_FI_DEV_XID_ERRORS: a gauge of the last XID, from our event counts


@dataclass(frozen=True)
class Field:
    """One dcgm-exporter family and the native series it converts.

    Attributes:
        field_id: the DCGM field id; dcgm-exporter prints its families in this order.
        name: the metric name dcgm-exporter prints.
        kind: ``gauge`` or ``counter``, as its counters file declares it.
        help: its HELP text.
        gpu: the native GPU-scope family, with ``detail`` its extra label values.
        instance: the native GPU-instance family where DCGM measures the field per instance;
            None where DCGM answers an instance with its GPU's value.
        scale: multiplies the native value (in base units) into dcgm-exporter's unit.
        integer: an int64 field, printed ``%d``; else a double, printed ``%f``.
        floor: round down rather than to nearest (DCGM divides NVML's bytes into MiB).
    """

    field_id: int
    name: str
    kind: str
    help: str
    gpu: Metric | None
    detail: tuple[str, ...] = ()
    instance: Metric | None = None
    scale: float = 1.0
    integer: bool = True
    floor: bool = False

    def value(self, readings: Readings | None, metric: Metric | None) -> str | None:
        """The printed value from ``readings``, or None where the native series is absent."""
        native = readings.values.get((metric, self.detail)) if readings and metric else None
        if native is None:
            return None
        scaled = native * self.scale
        if not math.isfinite(scaled):
            return _GO_SPECIAL[str(scaled)]
        if self.integer:
            return str(math.floor(scaled) if self.floor else round(scaled))
        return f"{scaled:f}"


_GO_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


@dataclass(frozen=True)
class Profile:
    """One exporter version's output: its fields, driver-version label and XID families."""

    name: str
    fields: tuple[Field, ...]
    driver_label: str
    xid_gauge: str
    xid_help: str
    xid_total: str = "DCGM_EXP_XID_ERRORS_TOTAL"
    xid_total_help: str = (
        "Total number of XID errors since migexporter started, by xid and GPU instance; "
        "unlike dcgm-exporter's, never reset while the process lives."
    )


G = catalog
_PROF_PCIE_HELP = (
    "The rate of data {} over the PCIe bus - including both protocol headers and data payloads "
    "- in bytes per second."
)
# dcgm-exporter 4.8's default counters (etc/default-counters.csv at d5e5f51), help texts as
# printed. Left out: DCGM_FI_DEV_VGPU_LICENSE_STATUS, which exists in vGPU guests only (on bare
# metal DCGM answers "not supported" and dcgm-exporter prints no series either).
DCGM_EXPORTER_4_8: tuple[Field, ...] = (
    Field(100, "DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).",
          G.GPU_SM_CLOCK, scale=1e-6),
    Field(101, "DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).",
          G.GPU_MEMORY_CLOCK, scale=1e-6),
    Field(140, "DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).",
          G.GPU_MEMORY_TEMPERATURE),
    Field(150, "DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", G.GPU_TEMPERATURE),
    Field(155, "DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", G.GPU_POWER,
          integer=False),
    Field(156, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
          "Total energy consumption since boot (in mJ).", G.GPU_ENERGY, scale=1e3),
    Field(202, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.",
          G.GPU_PCIE_REPLAYS),
    Field(203, "DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", G.GPU_UTILIZATION,
          scale=100),
    Field(204, "DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).",
          G.GPU_MEMORY_COPY_UTILIZATION, scale=100),
    Field(206, "DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).",
          G.GPU_ENCODER_UTILIZATION, scale=100),
    Field(207, "DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).",
          G.GPU_DECODER_UTILIZATION, scale=100),
    Field(251, "DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).",
          G.GPU_MEMORY_FREE, instance=G.GI_MEMORY_FREE, scale=1 / MIB, floor=True),
    Field(252, "DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).",
          G.GPU_MEMORY_USED, instance=G.GI_MEMORY_USED, scale=1 / MIB, floor=True),
    Field(253, "DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).",
          G.GPU_MEMORY_RESERVED, instance=G.GI_MEMORY_RESERVED, scale=1 / MIB, floor=True),
    Field(393, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter",
          "Number of remapped rows for uncorrectable errors", G.GPU_REMAPPED_ROWS,
          ("uncorrected",)),
    Field(394, "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter",
          "Number of remapped rows for correctable errors", G.GPU_REMAPPED_ROWS,
          ("corrected",)),
    Field(395, "DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed",
          G.GPU_ROW_REMAP_FAILED),
    # A rate despite its type: DCGM's KiB/s of both directions divided by 1000, truncated.
    Field(449, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter",
          "Total number of NVLink bandwidth counters for all lanes", G.GPU_NVLINK_DATA_RATE,
          scale=1 / (1024 * 1000), floor=True),
    Field(1001, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge",
          "Ratio of time the graphics engine is active.", G.GPU_GR_ENGINE_ACTIVE,
          instance=G.GI_GR_ENGINE_ACTIVE, integer=False),
    Field(1004, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge",
          "Ratio of cycles the tensor (HMMA) pipe is active.", G.GPU_TENSOR_ACTIVE,
          instance=G.GI_TENSOR_ACTIVE, integer=False),
    Field(1005, "DCGM_FI_PROF_DRAM_ACTIVE", "gauge",
          "Ratio of cycles the device memory interface is active sending or receiving data.",
          G.GPU_DRAM_ACTIVE, instance=G.GI_DRAM_ACTIVE, integer=False),
    Field(1009, "DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", _PROF_PCIE_HELP.format("transmitted"),
          G.GPU_PCIE_THROUGHPUT, ("tx",)),
    Field(1010, "DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", _PROF_PCIE_HELP.format("received"),
          G.GPU_PCIE_THROUGHPUT, ("rx",)),
)  # fmt: skip


def _renamed(fields: Iterable[Field], changes: dict[int, dict[str, object]]) -> tuple[Field, ...]:
    """``fields`` with each field id's changes applied; one renamed to None is left out."""
    out = []
    for each in fields:
        change = changes.get(each.field_id, {})
        if change.get("name", each.name) is not None:
            out.append(replace(each, **change))  # type: ignore[arg-type]
    return tuple(sorted(out, key=lambda f: f.field_id))


# dcgm-exporter 4.9 renamed its fields to their DCGM 4.7 names and base units (its 4.9.0 release
# notes). Names: DCGM's dcgm_fields.h at 72fa3fe (new names, the old as deprecated aliases of the
# same ids) and go-dcgm's base_unit_fields_test.go at b7fa315 (the new ids of the fields whose
# unit changed: 1603, 1604, 1611). Where no source names a field's 4.9 form (frame buffer in
# bytes), the family is left out (None) and the README lists it. Help texts are ours.
_TO_4_9: dict[int, dict[str, object]] = {
    100: {"field_id": 1603, "name": "DCGM_FI_DEV_SM_CLOCK_HERTZ", "help": "SM clock (in Hz).",
          "scale": 1.0},
    101: {"field_id": 1604, "name": "DCGM_FI_DEV_MEMORY_CLOCK_HERTZ",
          "help": "Memory clock (in Hz).", "scale": 1.0},
    140: {"name": "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", "help": "Memory temperature (in C)."},
    150: {"name": "DCGM_FI_DEV_GPU_TEMP_CELSIUS", "help": "GPU temperature (in C)."},
    155: {"name": "DCGM_FI_DEV_BOARD_POWER_WATTS", "help": "Power draw (in W)."},
    156: {"field_id": 1611, "name": "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL",
          "help": "Total energy consumption since boot (in J).", "scale": 1.0, "integer": False},
    202: {"name": "DCGM_FI_DEV_PCIE_REPLAY_TOTAL"},
    203: {"name": "DCGM_FI_DEV_GPU_UTIL_RATIO", "help": "GPU utilization (ratio 0-1).",
          "scale": 1.0, "integer": False},
    251: {"name": None},
    252: {"name": None},
    253: {"name": None},
    393: {"name": "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL"},
    394: {"name": "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL"},
    395: {"name": "DCGM_FI_DEV_ROW_REMAP_FAILED"},
    449: {"name": "DCGM_FI_DEV_NVLINK_THROUGHPUT_TOTAL"},
    1001: {"name": "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO"},
    1004: {"name": "DCGM_FI_PROF_TENSOR_UTIL_RATIO"},
    1005: {"name": "DCGM_FI_PROF_DRAM_UTIL_RATIO"},
}  # fmt: skip
# 4.10 renamed the PCIe rates once more (its release notes).
_TO_4_10: dict[int, dict[str, object]] = {
    1009: {"name": "DCGM_FI_PROF_PCIE_TX_BYTES_PER_SECOND"},
    1010: {"name": "DCGM_FI_PROF_PCIE_RX_BYTES_PER_SECOND"},
}
_XID_HELP = "Value of the last XID error encountered."
_4_9 = _renamed(DCGM_EXPORTER_4_8, _TO_4_9)

PROFILES: dict[str, Profile] = {
    "dcgm-exporter": Profile(
        "dcgm-exporter", DCGM_EXPORTER_4_8, "DCGM_FI_DRIVER_VERSION", "DCGM_FI_DEV_XID_ERRORS",
        _XID_HELP,
    ),
    "dcgm-exporter-4.9": Profile(
        "dcgm-exporter-4.9", _4_9, "DCGM_FI_SYSTEM_DRIVER_VERSION", "DCGM_FI_DEV_XID_ERROR",
        _XID_HELP,
    ),
    "dcgm-exporter-4.10": Profile(
        "dcgm-exporter-4.10", _renamed(_4_9, _TO_4_10), "DCGM_FI_SYSTEM_DRIVER_VERSION",
        "DCGM_FI_DEV_XID_ERROR", _XID_HELP,
    ),
}  # fmt: skip


def host_label() -> str:
    """dcgm-exporter's ``hostname`` label: ``NODE_NAME`` when set (Kubernetes), else the host."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


@dataclass(frozen=True)
class Views:
    """The compat profiles a snapshot is also rendered in, and the host label they carry."""

    profiles: tuple[Profile, ...] = ()
    hostname: str = ""


@dataclass(frozen=True)
class _Entity:
    """One series owner as dcgm-exporter sees it: a GPU, or one GPU instance of it."""

    gpu: Gpu
    gi: GpuInstance | None
    readings: Readings | None  # the GPU's own readings
    gi_readings: Readings | None


def _entities(snapshot: Snapshot) -> Iterator[_Entity]:
    if not snapshot.backend_up:
        return
    for gpu in snapshot.topology.gpus:
        sample = snapshot.samples.get(gpu.uuid)
        if sample is None:
            continue  # nothing stale, as for the native families
        if not gpu.gpu_instances:
            yield _Entity(gpu, None, sample.gpu, None)
        for gi in gpu.gpu_instances:
            yield _Entity(gpu, gi, sample.gpu, sample.gpu_instances.get(gi.id))


def _identity(gpu: Gpu, gi_id: str, profile: str, hostname: str, driver: str) -> str:
    """The labels every series of an entity starts with, in dcgm-exporter's order."""
    labels = (
        f'gpu="{gpu.index}",UUID="{_escape(gpu.uuid)}",pci_bus_id="{_escape(gpu.pci_bus_id)}",'
        f'device="nvidia{gpu.index}",modelName="{_escape(gpu.name)}"'
    )
    if gi_id:
        labels += f',GPU_I_PROFILE="{_escape(profile)}",GPU_I_ID="{gi_id}"'
    if hostname:
        labels += f',hostname="{_escape(hostname)}"'
    return labels + driver


def _attributes(pairs: Iterable[tuple[str, str]]) -> str:
    """Attribute labels as dcgm-exporter prints a map: sorted by name, empty ones left out."""
    return "".join(f',{k}="{_escape(v)}"' for k, v in sorted(pairs) if v)


def _escape(value: str) -> str:
    # dcgm-exporter prints label values raw; escaping keeps an odd name from breaking the page.
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


@dataclass(frozen=True)
class Family:
    """One rendered compat family: its name, type and sample lines."""

    name: str
    kind: str
    help: str
    lines: str

    def text(self, *, openmetrics: bool) -> str:
        """The family in the text format, or in OpenMetrics.

        OpenMetrics names a counter's sample ``<family>_total``: a counter is declared
        ``unknown`` there, so that its sample keeps dcgm-exporter's name.
        """
        kind = "unknown" if openmetrics and self.kind == "counter" else self.kind
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {kind}\n{self.lines}"


def render(snapshot: Snapshot, views: Views) -> list[Family]:
    """Every compat family of ``snapshot`` with at least one series, profile by profile."""
    entities = list(_entities(snapshot))
    last_xids = _last_xids(snapshot.events)
    out: list[Family] = []
    for profile in views.profiles:
        driver = (
            f',{profile.driver_label}="{_escape(snapshot.driver_version)}"'
            if snapshot.driver_version
            else ""
        )
        rows = []
        for entity in entities:
            gi = entity.gi
            gi_id = str(gi.id) if gi else ""
            identity = _identity(
                entity.gpu, gi_id, gi.profile if gi else "", views.hostname, driver
            )
            owner = snapshot.pods.labels(entity.gpu, gi)
            pods = tuple(zip(catalog.POD_LABELS, owner, strict=True))
            rows.append((entity, identity, pods))
        fields = sorted((*profile.fields, _XID_MARK), key=lambda f: f.field_id)
        for each in fields:
            if each is _XID_MARK:
                lines = _xid_gauge_lines(profile, rows, last_xids)
                kind, name, help_text = "gauge", profile.xid_gauge, profile.xid_help
            else:
                lines = _field_lines(each, rows)
                kind, name, help_text = each.kind, each.name, each.help
            if lines:
                out.append(Family(name, kind, help_text, lines))
        totals = _xid_total_lines(profile, snapshot, views.hostname, driver)
        if totals:
            out.append(Family(profile.xid_total, "counter", profile.xid_total_help, totals))
    # A name two profiles share (4.9 kept DCGM_FI_DEV_ENC_UTIL) is served once, as the first
    # profile asked for has it: a family may appear only once on a page.
    unique: dict[str, Family] = {}
    for family in out:
        unique.setdefault(family.name, family)
    return list(unique.values())


_XID_MARK = Field(XID_FIELD, "", "gauge", "", None)  # where the XID gauge goes in field order
_Row = tuple[_Entity, str, tuple[tuple[str, str], ...]]


def _field_lines(each: Field, rows: list[_Row]) -> str:
    lines = []
    for entity, identity, pods in rows:
        if entity.gi is not None and each.instance is not None:
            value = each.value(entity.gi_readings, each.instance)
        else:
            value = each.value(entity.readings, each.gpu)
        if value is not None:
            lines.append(f"{each.name}{{{identity}{_attributes(pods)}}} {value}\n")
    return "".join(lines)


_Where = tuple[str, int | None]  # GPU uuid, GPU instance id (None: the GPU itself)


def _last_xids(events: Mapping[EventKey, EventCount]) -> dict[_Where, int]:
    """The latest XID DCGM keeps on each GPU instance entity, and on each GPU entity.

    DCGM stores an XID on the compute instance the driver names, else on the GPU instance,
    else on the GPU (DcgmCacheManager::RecordXidFor*, NVIDIA/DCGM 72fa3fe); dcgm-exporter
    watches GPU instances, or GPUs without them, so an XID of a compute instance moves none of
    its gauges. Such XIDs are counted in the total, per instance.
    """
    latest: dict[_Where, tuple[float, int]] = {}
    for key, seen in events.items():
        if key.metric is not catalog.XID_ERRORS or key.compute_instance_id is not None:
            continue
        where = (key.gpu_uuid, key.gpu_instance_id)
        candidate = (seen.last_seconds, int(key.detail))
        if where not in latest or candidate > latest[where]:
            latest[where] = candidate
    return {where: code for where, (_, code) in latest.items()}


def _xid_gauge_lines(profile: Profile, rows: list[_Row], last: dict[_Where, int]) -> str:
    """dcgm-exporter's last-value gauge: the entity's latest XID.

    No series before the first one: DCGM answers a field without samples with a blank.
    """
    lines = []
    messages = dcgm_exporter_xids.MESSAGES
    for entity, identity, pods in rows:
        code = last.get((entity.gpu.uuid, entity.gi.id if entity.gi else None))
        if code is None:
            continue
        message = messages[code] if 0 <= code < len(messages) else dcgm_exporter_xids.UNKNOWN
        attributes = _attributes((*pods, ("err_code", str(code)), ("err_msg", message)))
        lines.append(f"{profile.xid_gauge}{{{identity}{attributes}}} {code}\n")
    return "".join(lines)


# The GPUs seen, by uuid: a GPU that fell off the bus keeps its XID counters' labels.
_SEEN: dict[str, Gpu] = {}


def _xid_total_lines(profile: Profile, snapshot: Snapshot, hostname: str, driver: str) -> str:
    """One counter per XID and GPU instance, or GPU where the driver named no instance.

    The profile and pod labels are the instance's when the event came, as natively.
    """
    _SEEN.update((gpu.uuid, gpu) for gpu in snapshot.topology.gpus)
    counts: dict[str, int] = {}
    order: list[tuple[int, int, int, str]] = []
    for key, seen in snapshot.events.items():
        if key.metric is not catalog.XID_ERRORS:
            continue
        gpu = snapshot.topology.gpu(key.gpu_uuid) or _SEEN.get(key.gpu_uuid)
        if gpu is None:  # not in this process's topology yet: the next render shows it
            continue
        gi_id = "" if key.gpu_instance_id is None else str(key.gpu_instance_id)
        identity = _identity(gpu, gi_id, key.profile, hostname, driver)
        pods = tuple(zip(catalog.POD_LABELS, key.owner, strict=True))
        labels = identity + _attributes((*pods, ("xid", key.detail)))
        if labels not in counts:
            counts[labels] = 0
            where = -1 if key.gpu_instance_id is None else key.gpu_instance_id
            order.append((gpu.index, where, int(key.detail), labels))
        counts[labels] += seen.count
    return "".join(
        f"{profile.xid_total}{{{labels}}} {counts[labels]}\n" for *_, labels in sorted(order)
    )
