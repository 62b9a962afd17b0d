"""The landing page: a node console that says at a glance what is wrong on this node.

The page is built from one ``Snapshot`` (the same consistent view the exposition renders) plus
the collector's recent events and troubles, so it never disagrees with ``/metrics``. It is
rendered on the server with Jinja2 and refreshes itself with a few lines of inline script: no
external resources, so it works air-gapped.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jinja2

from migexporter import catalog, xids
from migexporter.backends.base import ECC_ERROR_TYPES, EventKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from migexporter.backends.base import GpuSample, Readings
    from migexporter.collector import Collector, RecordedEvent, Trouble
    from migexporter.exposition import EventCount, EventKey, Snapshot
    from migexporter.topology import Gpu, GpuInstance

EVENTS_SHOWN = 20
BADGE_WINDOW_S = 3600.0  # an instance carries a badge for page/ticket events this recent
REFRESH_S = 5
# Placements count memory slices: 8 on the 7-compute-slice A100, H100, H200 and B200, as
# many as compute slices elsewhere (A30: 4); see sim/profiles.py.
_MEMORY_SLICES = {7: 8}
# What the driver's recovery action asks of an operator, and how urgent it is.
_RECOVERY_WORDS = {
    "gpu_reset": "needs GPU reset",
    "node_reboot": "needs node reboot",
    "drain_p2p": "drain peer-to-peer traffic",
    "drain_and_reset": "needs drain and GPU reset",
    "recover_imex_domain": "needs IMEX domain recovery",
    "bus_reset": "needs bus reset",
    "system_reboot": "needs system reboot",
}
_Where = tuple[str, int | None]  # GPU uuid, and the GPU instance id or None for the GPU itself
_SEVERITY_RANK = {xids.Severity.PAGE.value: 2, xids.Severity.TICKET.value: 1}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("migexporter", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt field fails the tests, not the operator
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Fact:
    """One short reading of a GPU's health; ``level`` is "ok", "ticket" or "page"."""

    label: str
    text: str
    level: str = "ok"


@dataclass(frozen=True)
class Badge:
    """The worst recent page- or ticket-severity event of an instance or GPU."""

    severity: str
    text: str


@dataclass(frozen=True)
class Cell:
    """One block of a GPU's slice strip: a GPU instance or free memory slices."""

    start: int  # first column, from 1 (CSS grid lines)
    span: int
    instance: InstanceView | None = None


@dataclass(frozen=True)
class InstanceView:
    """A GPU instance as the strip and the table show it."""

    id: int
    profile: str
    placement: str
    compute_instances: int
    activity: float | None
    sm_active: float | None
    memory: str
    holder: str
    badge: Badge | None


@dataclass(frozen=True)
class GpuView:
    """One GPU card of the page."""

    index: int
    name: str
    uuid: str
    state: str  # ok, lost, hung, failing, unknown
    reason: str
    since: str
    mig_enabled: bool
    cells: tuple[Cell, ...]
    placed: bool  # False: placements unknown, the strip counts compute slices
    instances: tuple[InstanceView, ...]
    facts: tuple[Fact, ...]
    attention: str  # "page" or "ticket" when a fact or badge of the GPU says so, else ""
    activity: float | None
    badge: Badge | None

    @property
    def columns(self) -> int:
        """How many slices the strip draws: its blocks' spans together."""
        return sum(cell.span for cell in self.cells)

    @property
    def word(self) -> str:
        """The state as the page spells it: OK, LOST, HUNG, FAILING, UNKNOWN."""
        return self.state.upper()


@dataclass(frozen=True)
class EventView:
    """One line of the latest driver events."""

    time: str
    gpu: str
    gpu_instance: str
    what: str
    mnemonic: str
    severity: str
    holder: str


@dataclass(frozen=True)
class Console:
    """Everything the page shows."""

    version: str
    backend: str
    node: str
    simulated: bool
    sampled: str
    backend_down: Trouble | None
    backend_down_since: str
    gpus: tuple[GpuView, ...]
    events: tuple[EventView, ...]
    links: tuple[str, ...]
    refresh_s: int = REFRESH_S


def page(collector: Collector, *, node: str, simulated: bool, links: tuple[str, ...]) -> str:
    """The landing page's HTML, now."""
    content = build(collector, node=node, simulated=simulated, links=links, now=time.time())
    return _TEMPLATES.get_template("console.html").render(console=content)


def build(
    collector: Collector, *, node: str, simulated: bool, links: tuple[str, ...], now: float
) -> Console:
    """The page's content, separate from its markup so tests can read it."""
    snapshot = collector.snapshot()
    backend_trouble = collector.backend_trouble
    badges = _badges(snapshot.events, now)
    gpus = tuple(
        _gpu_view(
            gpu,
            snapshot.samples.get(gpu.uuid),
            collector.gpu_trouble.get(gpu.uuid),
            backend_down=not snapshot.backend_up,
            snapshot=snapshot,
            badges=badges,
        )
        for gpu in snapshot.topology.gpus
    )
    return Console(
        version=snapshot.build.version,
        backend=snapshot.backend,
        node=node,
        simulated=simulated,
        sampled=_clock(snapshot.last_collect) if snapshot.last_collect else "not yet",
        backend_down=backend_trouble if not snapshot.backend_up else None,
        backend_down_since=_since(backend_trouble.since, now) if backend_trouble else "",
        gpus=gpus,
        events=tuple(_event_view(e) for e in itertools.islice(collector.events, EVENTS_SHOWN)),
        links=links,
    )


def _gpu_view(  # noqa: PLR0913  (one GPU's parts, keyword-only)
    gpu: Gpu,
    sample: GpuSample | None,
    trouble: Trouble | None,
    *,
    backend_down: bool,
    snapshot: Snapshot,
    badges: Mapping[_Where, Badge],
) -> GpuView:
    if backend_down:
        state, reason, since = "unknown", "the backend is down", ""
    elif trouble is not None:
        state, reason = trouble.state, trouble.reason
        since = _clock(trouble.since)
    elif sample is None:
        state, reason, since = "unknown", "no sample yet", ""
    else:
        state, reason, since = "ok", "", ""
    instances = tuple(
        _instance_view(gi, sample, snapshot, badges.get((gpu.uuid, gi.id)), gpu)
        for gi in sorted(gpu.gpu_instances, key=_placement_order)
    )
    readings = sample.gpu if sample is not None else None
    facts = _facts(gpu, readings, snapshot.events) if readings is not None else ()
    badge = badges.get((gpu.uuid, None))
    levels = {f.level for f in facts} | {
        b.severity for b in (badge, *(i.badge for i in instances)) if b
    }
    return GpuView(
        index=gpu.index,
        name=gpu.name,
        uuid=gpu.uuid,
        state=state,
        reason=reason,
        since=since,
        mig_enabled=gpu.mig_enabled,
        cells=_strip(gpu, instances),
        placed=_placed(gpu),
        instances=instances,
        facts=facts,
        attention=next((level for level in ("page", "ticket") if level in levels), ""),
        activity=readings.get(catalog.GPU_GR_ENGINE_ACTIVE) if readings else None,
        badge=badge,
    )


def _placement_order(gi: GpuInstance) -> tuple[int, int]:
    return (gi.placement.start if gi.placement else 1 << 16, gi.id)


def _columns(gpu: Gpu) -> int:
    """How many slices the strip draws: memory slices, or compute slices without placements."""
    if not _placed(gpu):
        return max(gpu.mig_slices_total, gpu.mig_slices_used, 1)
    ends = [gi.placement.start + gi.placement.size for gi in gpu.gpu_instances if gi.placement]
    return max([_MEMORY_SLICES.get(gpu.mig_slices_total, gpu.mig_slices_total), *ends, 1])


def _placed(gpu: Gpu) -> bool:
    """Whether every GPU instance's placement is known (reading them needs privileges)."""
    return all(gi.placement is not None for gi in gpu.gpu_instances)


def _strip(gpu: Gpu, instances: tuple[InstanceView, ...]) -> tuple[Cell, ...]:
    """The strip's blocks, free slices included, in placement order.

    Without placements the instances are drawn side by side by their compute slices, in id
    order, and only the slices no instance holds are drawn free.
    """
    if not gpu.mig_enabled:
        return ()
    by_id = {view.id: view for view in instances}
    taken: dict[int, Cell] = {}  # first column (from 0) -> the instance's block
    if _placed(gpu):
        for gi in gpu.gpu_instances:
            assert gi.placement is not None  # _placed
            taken[gi.placement.start] = Cell(gi.placement.start + 1, gi.placement.size,
                                             by_id[gi.id])  # fmt: skip
    else:
        column = 0
        for gi in sorted(gpu.gpu_instances, key=lambda gi: gi.id):
            taken[column] = Cell(column + 1, max(gi.slices, 1), by_id[gi.id])
            column += max(gi.slices, 1)
    cells, column, columns = [], 0, _columns(gpu)
    while column < columns:
        if column in taken:
            cells.append(taken[column])
            column += taken[column].span
            continue
        free = column
        while column < columns and column not in taken:
            column += 1
        cells.append(Cell(free + 1, column - free))
    return tuple(cells)


def _instance_view(
    gi: GpuInstance,
    sample: GpuSample | None,
    snapshot: Snapshot,
    badge: Badge | None,
    gpu: Gpu,
) -> InstanceView:
    readings = sample.gpu_instances.get(gi.id) if sample is not None else None
    used = readings.get(catalog.GI_MEMORY_USED) if readings else None
    namespace, pod, _container = snapshot.pods.labels(gpu, gi)
    return InstanceView(
        id=gi.id,
        profile=gi.profile,
        placement=f"{gi.placement.start}:{gi.placement.size}" if gi.placement else "unknown",
        compute_instances=len(gi.compute_instances),
        activity=readings.get(catalog.GI_GR_ENGINE_ACTIVE) if readings else None,
        sm_active=readings.get(catalog.GI_SM_ACTIVE) if readings else None,
        memory=f"{_gib(used)} / {_gib(gi.memory_bytes)}",
        holder=f"{namespace}/{pod}" if pod else "",
        badge=badge,
    )


def _facts(gpu: Gpu, readings: Readings, events: Mapping[EventKey, EventCount]) -> tuple[Fact, ...]:
    """Recovery action, ECC, row remap, temperature and power of one GPU."""
    facts = [
        _recovery_fact(readings),
        _ecc_fact(gpu, readings, events),
        _remap_fact(gpu, readings),
    ]
    temperature = readings.get(catalog.GPU_TEMPERATURE)
    if temperature is not None:
        facts.append(Fact("temperature", f"{temperature:.0f} °C"))
    power, limit = readings.get(catalog.GPU_POWER), readings.get(catalog.GPU_POWER_LIMIT)
    if power is not None:
        text = f"{power:.0f} W" + (f" of {limit:.0f} W" if limit else "")
        facts.append(Fact("power", text))
    return tuple(f for f in facts if f is not None)


def _recovery_fact(readings: Readings) -> Fact | None:
    current = next(
        (
            labels[0]
            for (metric, labels), value in readings.values.items()
            if metric is catalog.GPU_RECOVERY_ACTION and value == 1
        ),
        None,
    )
    if current is None:
        return None  # not measured: older drivers
    if current == "none":
        return Fact("recovery", "none needed")
    level = "page" if current in catalog.RECOVERY_ACTIONS_THAT_PAGE else "ticket"
    return Fact("recovery", _RECOVERY_WORDS.get(current, f"recovery action {current}"), level)


def _ecc_fact(gpu: Gpu, readings: Readings, events: Mapping[EventKey, EventCount]) -> Fact | None:
    seen = dict.fromkeys(ECC_ERROR_TYPES.values(), 0)
    for key, count in events.items():
        if key.metric is catalog.ECC_EVENTS and key.gpu_uuid == gpu.uuid:
            seen[key.detail] = seen.get(key.detail, 0) + count.count
    lifetime = {t: readings.get(catalog.GPU_ECC_ERRORS, t) for t in ("corrected", "uncorrected")}
    if all(v is None for v in lifetime.values()) and not any(seen.values()):
        return None  # ECC off or unsupported
    parts = [f"{seen['uncorrected']} uncorrected, {seen['corrected']} corrected since start"]
    if lifetime["uncorrected"] is not None:
        parts.append(
            f"lifetime {lifetime['uncorrected']:.0f} uncorrected, "
            f"{lifetime['corrected'] or 0:.0f} corrected"
        )
    level = "ticket" if seen["uncorrected"] else "ok"
    return Fact("ECC", "; ".join(parts), level)


def _remap_fact(gpu: Gpu, readings: Readings) -> Fact | None:
    failed = readings.get(catalog.GPU_ROW_REMAP_FAILED)
    pending = readings.get(catalog.GPU_ROW_REMAP_PENDING)
    if failed is None and pending is None:
        # nvml.h: nvmlDeviceGetRemappedRows is not supported while MIG instances exist
        return Fact("row remap", "not readable with MIG instances") if gpu.gpu_instances else None
    rows = sum(
        readings.get(catalog.GPU_REMAPPED_ROWS, t) or 0 for t in ("corrected", "uncorrected")
    )
    if failed:
        return Fact("row remap", "FAILED: replace the GPU", "page")
    if pending:
        return Fact("row remap", "pending: needs GPU reset", "ticket")
    return Fact("row remap", f"ok, {rows:.0f} rows remapped")


def _badges(events: Mapping[EventKey, EventCount], now: float) -> dict[_Where, Badge]:
    """The worst page- or ticket-severity XID of the last hour per (GPU, instance or None)."""
    worst: dict[_Where, tuple[int, float, Badge]] = {}
    for key, count in events.items():
        if key.metric is not catalog.XID_ERRORS or now - count.last_seconds > BADGE_WINDOW_S:
            continue
        row = xids.describe(int(key.detail))
        rank = _SEVERITY_RANK.get(row.severity.value)
        if rank is None:
            continue
        where = (key.gpu_uuid, key.gpu_instance_id)
        badge = Badge(row.severity.value, f"XID {row.code} {row.mnemonic}".strip())
        if where not in worst or (rank, count.last_seconds) > worst[where][:2]:
            worst[where] = (rank, count.last_seconds, badge)
    return {where: badge for where, (_, _, badge) in worst.items()}


def _event_view(recorded: RecordedEvent) -> EventView:
    event = recorded.event
    if event.kind is EventKind.XID and event.xid is not None:
        row = xids.describe(event.xid)
        what, mnemonic, severity = f"XID {event.xid}", row.mnemonic, row.severity.value
    elif event.kind in ECC_ERROR_TYPES:
        what, mnemonic, severity = f"ECC {ECC_ERROR_TYPES[event.kind]}", "", ""
    elif event.kind is EventKind.RECOVERY_ACTION:
        action = event.recovery_action or "unknown"
        what, mnemonic, severity = "recovery action", action, ""
    else:
        what, mnemonic, severity = event.kind.value.replace("_", " "), "", ""
    namespace, pod, _container = recorded.owner
    return EventView(
        time=_clock(event.time),
        gpu=recorded.gpu or "?",
        gpu_instance="" if event.gpu_instance_id is None else str(event.gpu_instance_id),
        what=what,
        mnemonic=mnemonic,
        severity=severity,
        holder=f"{namespace}/{pod}" if pod else "",
    )


def _clock(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _since(seconds: float, now: float) -> str:
    ago = max(now - seconds, 0.0)
    return (
        f"{_clock(seconds)} ({ago:.0f}s ago)"
        if ago < 120
        else f"{_clock(seconds)} ({ago / 60:.0f} min ago)"
    )


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"
