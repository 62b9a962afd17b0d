"""Recording rules: the fleet views, computed once a minute instead of on every dashboard open.

Names follow ``level:metric:operations`` (Prometheus's rule naming; kubernetes-mixin and
node-mixin do the same): ``level`` lists the labels kept, ``metric`` is the source family, and
``operations`` are newest first. Ratios are recorded as separate sums or as the quotient of
sums, never as an average of ratios. Levels:

- ``gpu``: one series per physical MIG GPU (``cluster``, ``node``, ``instance``, ``gpu``,
  ``gpu_uuid``); ``gpu_cause``: per GPU and throttling cause, only where the GPU is throttled;
  ``gpu_action``: per GPU and recovery action, only where the driver asks for one;
- ``node``, ``node_profile``, ``node_band``, ``node_severity``, ``node_xid``, ``node_reason``,
  ``node_action``, ``node_error_type``: one per node, and per profile, activity band, XID
  severity, XID, clock-event reason, recovery action or ECC error type on it, so that a
  dashboard filtered to some nodes still sums correctly;
- ``xid``: one per XID code, the catalog's mnemonic, for dashboards to name recorded XIDs;
- ``cluster``, ``cluster_profile``, ``cluster_severity``: one per ``cluster`` label value (a
  single series where the data has no ``cluster`` label).

Every node-level series carries ``node``: the target's ``node`` label where the scrape
configuration sets one (the Kubernetes ServiceMonitor does), else its ``instance``; one recorded
series per target holds that choice and the others join it (a join of one series per node).
Only the expressions both PromQL and MetricsQL (VictoriaMetrics) accept are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migexporter import catalog, xids

INTERVAL = "1m"  # of the recording group; fleet views need no finer resolution
GROUP = "migexporter-fleet"
# Below this GR-engine activity, averaged over AVG_WINDOW, a GPU instance counts as idle.
IDLE_RATIO, AVG_WINDOW = 0.05, "5m"
MEMORY_FULL_RATIO = 0.95
# Activity bands of GPU instances (upper bounds, exclusive), for a distribution that sums.
BANDS = (("idle", IDLE_RATIO), ("low", 0.3), ("medium", 0.7), ("high", None))
# Compute slices a GPU instance can hold (A30 up to 4, A100/H100/H200 up to 7): one branch of
# the slice-weighted roll-up each.
SLICE_COUNTS = (1, 2, 3, 4, 7)

CLUSTER = "cluster"
NODE = ("cluster", "node", "instance")
GPU = (*NODE, "gpu", "gpu_uuid")


@dataclass(frozen=True)
class Record:
    """One recording rule."""

    name: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        rule: dict[str, Any] = {"record": self.name, "expr": self.expr}
        if self.labels:
            rule["labels"] = dict(self.labels)
        return rule


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def _node_of_target() -> str:
    """One series per target naming its node: its ``node`` label, else its ``instance``."""
    build = catalog.BUILD_INFO.name
    without = f'max by (cluster, instance) ({build}{{node=""}})'
    named = f'label_replace({without}, "node", "$1", "instance", "(.*)")'
    return f'{named} or max by ({_by(NODE)}) ({build}{{node!=""}})'


def _per_node(
    aggregation: str, expr: str, labels: tuple[str, ...] = (), *, zeros: bool = False
) -> str:
    """``aggregation`` of ``expr`` per target (and ``labels``), with the target's node.

    With ``zeros``, targets with nothing in ``expr`` record 0 rather than no series.
    """
    by = _by(("cluster", "instance", *labels))
    value = f"{aggregation} by ({by}) ({expr}) * on (cluster, instance) group_left (node) {BUILD}"
    return f"({value} or 0 * {BUILD})" if zeros else f"({value})"


def _slice_weighted(metric: catalog.Metric) -> str:
    """``metric`` of each GPU instance times its compute slices, one branch per slice count.

    A GI profile's name starts with its compute slices (``3g.40gb``: 3), so the weight comes
    from the series' own ``profile`` label: no join with the instance-info series.
    """
    return " or ".join(f'({metric.name}{{profile=~"{n}g[.].*"}} * {n})' for n in SLICE_COUNTS)


def events(metric: catalog.Metric, selector: str, window: str) -> str:
    """Events of the series of ``metric`` and ``selector`` within ``window``, per series.

    Event counters appear with their first event, so a series born in the window counts its
    whole value (``increase`` cannot see a series born at 1); ``* 1`` drops the name so that
    both branches carry the same label sets.
    """
    counter = metric.name + (f"{{{selector}}}" if selector else "")
    return f"({counter} unless {counter} offset {window}) * 1 or increase({counter}[{window}])"


def xid_events(selector: str, window: str) -> str:
    """XID events of the series of ``selector`` within ``window``, per series (``events``)."""
    return events(catalog.XID_ERRORS, selector, window)


def codes(severity: xids.Severity, *, leave_out: tuple[int, ...] = ()) -> list[int]:
    """The XIDs of ``severity`` in the catalog."""
    return [
        code
        for code, row in sorted(xids.CATALOG.items())
        if row.severity is severity and code not in leave_out
    ]


def recorded(level: str, metric: catalog.Metric, operations: str) -> str:
    """``level:metric:operations``; a ratio's ``_ratio`` and a counter's ``_total`` go."""
    return f"{level}:{metric.name.removesuffix('_ratio').removesuffix('_total')}:{operations}"


# Recorded names, for the dashboards that read them.
BUILD = recorded("node_instance", catalog.BUILD_INFO, "relabel")
_ACTIVE = catalog.GI_GR_ENGINE_ACTIVE
GPU_ACTIVE_SUM = recorded("gpu", _ACTIVE, "slice_weighted_sum")
GPU_ACTIVE = recorded("gpu", _ACTIVE, "slice_weighted_avg")
NODE_ACTIVE_SUM = recorded("node", _ACTIVE, "slice_weighted_sum")
NODE_ACTIVE = recorded("node", _ACTIVE, "slice_weighted_avg")
CLUSTER_ACTIVE = recorded("cluster", _ACTIVE, "slice_weighted_avg")
NODE_GPUS = recorded("node_mig_mode", catalog.GPU_INFO, "count")
NODE_GPUS_UP = recorded("node", catalog.GPU_UP, "sum")
NODE_SLICES_USED = recorded("node", catalog.GPU_MIG_SLICES_USED, "sum")
NODE_SLICES_CAPACITY = recorded("node", catalog.GPU_MIG_SLICES_CAPACITY, "sum")
CLUSTER_SLICES_USED = recorded("cluster", catalog.GPU_MIG_SLICES_USED, "sum")
CLUSTER_SLICES_CAPACITY = recorded("cluster", catalog.GPU_MIG_SLICES_CAPACITY, "sum")
PROFILE_INSTANCES = recorded("node_profile", catalog.GPU_INSTANCE_INFO, "count")
PROFILE_ACTIVE_SUM = recorded("node_profile", _ACTIVE, "sum")
PROFILE_MEMORY_USED = recorded("node_profile", catalog.GI_MEMORY_USED, "sum")
PROFILE_MEMORY_TOTAL = recorded("node_profile", catalog.GI_MEMORY_TOTAL, "sum")
CLUSTER_PROFILE_INSTANCES = recorded("cluster_profile", catalog.GPU_INSTANCE_INFO, "count")
BAND_INSTANCES = recorded("node_band", _ACTIVE, f"count_avg{AVG_WINDOW}")
# GPU instances using more than MEMORY_FULL_RATIO of their own memory.
MEMORY_FULL = recorded("node", catalog.GI_MEMORY_USED, "count_full")
XID_WINDOW = INTERVAL  # one window per evaluation: summed over time, each event counts once
THROTTLE_WINDOW = "5m"
# Fraction of time each throttled GPU's clocks were held down, by cause: the fleet dashboard
# ranks these instead of every GPU's counters over its whole range.
GPU_THROTTLED = recorded("gpu_cause", catalog.GPU_THROTTLED, f"rate{THROTTLE_WINDOW}")
NODE_XIDS = recorded("node_severity", catalog.XID_ERRORS, f"increase{XID_WINDOW}")
CLUSTER_XIDS = recorded("cluster_severity", catalog.XID_ERRORS, f"increase{XID_WINDOW}")
# XID events per node and XID, with our severity; only minutes with events have a sample.
NODE_XID_EVENTS = recorded("node_xid", catalog.XID_ERRORS, f"increase{XID_WINDOW}")
# One series per XID of the exporters' catalog with its mnemonic (one of them, should two
# exporter versions differ): dashboards join a few dozen series instead of every target's catalog.
XID_MNEMONICS = recorded("xid", catalog.XID_INFO, "max")
# Device health: per GPU, the recovery action its driver asks for (only GPUs asked one: the
# state set has a series per action and GPU, most of them 0); per node, GPUs with a row remap
# pending or failed (0 where none), GPUs asked a recovery action and GPUs held down, by action
# or clock-event reason (only where there are some), and ECC and recovery-action events per
# minute (only minutes with some).
NODE_REMAP_PENDING = recorded("node", catalog.GPU_ROW_REMAP_PENDING, "sum")
NODE_REMAP_FAILED = recorded("node", catalog.GPU_ROW_REMAP_FAILED, "sum")
GPU_RECOVERY_ASKED = recorded("gpu_action", catalog.GPU_RECOVERY_ACTION, "asked")
NODE_RECOVERY_ACTIONS = recorded("node_action", catalog.GPU_RECOVERY_ACTION, "count_asked")
NODE_CLOCK_EVENTS = recorded("node_reason", catalog.GPU_CLOCK_EVENT, "count_active")
EVENT_WINDOW = XID_WINDOW
NODE_ECC_EVENTS = recorded("node_error_type", catalog.ECC_EVENTS, f"increase{EVENT_WINDOW}")
NODE_RECOVERY_EVENTS = recorded(
    "node_action", catalog.RECOVERY_ACTION_EVENTS, f"increase{EVENT_WINDOW}"
)
NO_ACTION = "none"  # the recovery action of a GPU that needs nothing
IDLE_REASON = "gpu_idle"  # the clock-event reason that is no problem


def _gpu_records() -> list[Record]:
    capacity = f"{catalog.GPU_MIG_SLICES_CAPACITY.name} > 0"
    weighted = _slice_weighted(catalog.GI_GR_ENGINE_ACTIVE)
    gpu = ("gpu", "gpu_uuid")
    return [
        Record(BUILD, _node_of_target()),
        # Busy slices: each instance's activity times its slices, summed per physical GPU.
        Record(GPU_ACTIVE_SUM, _per_node("sum", weighted, gpu)),
        Record(GPU_ACTIVE, f"{GPU_ACTIVE_SUM} / on ({_by(GPU)}) {_per_node('sum', capacity, gpu)}"),
        # Only GPUs that were throttled get a series: no rows of zeros.
        Record(
            GPU_THROTTLED,
            _per_node(
                "sum",
                f"rate({catalog.GPU_THROTTLED.name}[{THROTTLE_WINDOW}])",
                (*gpu, "cause"),
            )
            + " > 0",
        ),
    ]


def _node_records() -> list[Record]:
    gi_info, gpu_info = catalog.GPU_INSTANCE_INFO.name, catalog.GPU_INFO.name
    gr = catalog.GI_GR_ENGINE_ACTIVE.name
    used, total = catalog.GI_MEMORY_USED.name, catalog.GI_MEMORY_TOTAL.name
    capacity = catalog.GPU_MIG_SLICES_CAPACITY.name
    average = f"avg_over_time({gr}[{AVG_WINDOW}])"
    bands = []
    low = 0.0
    for band, high in BANDS:
        above = f" >= {low}" if low else ""
        below = f" < {high}" if high is not None else ""
        expr = _per_node("count", f"({average}{above}){below}")
        bands.append(Record(BAND_INSTANCES, expr, {"band": band}))
        low = high or low
    return [
        Record(NODE_ACTIVE_SUM, f"sum by ({_by(NODE)}) ({GPU_ACTIVE_SUM})"),
        Record(
            NODE_ACTIVE,
            f"{NODE_ACTIVE_SUM} / on ({_by(NODE)}) {_per_node('sum', f'{capacity} > 0')}",
        ),
        Record(NODE_GPUS, _per_node("count", gpu_info, ("mig_mode",))),
        Record(NODE_GPUS_UP, _per_node("sum", catalog.GPU_UP.name)),
        Record(NODE_SLICES_USED, _per_node("sum", catalog.GPU_MIG_SLICES_USED.name)),
        Record(NODE_SLICES_CAPACITY, _per_node("sum", capacity)),
        Record(PROFILE_INSTANCES, _per_node("count", gi_info, ("profile",))),
        Record(PROFILE_ACTIVE_SUM, _per_node("sum", gr, ("profile",))),
        Record(PROFILE_MEMORY_USED, _per_node("sum", used, ("profile",))),
        Record(PROFILE_MEMORY_TOTAL, _per_node("sum", total, ("profile",))),
        *bands,
        # 0 on nodes where none is full, so that "none" reads as 0, not as missing data.
        Record(
            MEMORY_FULL,
            _per_node("count", f"{used} / {total} > {MEMORY_FULL_RATIO}", zeros=True),
        ),
    ]


def _severity_selector(severity: xids.Severity) -> str:
    """The XIDs of ``severity``; ticket also takes the XIDs the catalog lacks (as ``xids``)."""
    if severity is xids.Severity.TICKET:
        others = [code for s in xids.Severity if s is not severity for code in codes(s)]
        return f'xid!~"{"|".join(map(str, sorted(others)))}"'
    return f'xid=~"{"|".join(map(str, codes(severity)))}"'


def _xid_records() -> list[Record]:
    info = catalog.XID_INFO.name
    records = [Record(XID_MNEMONICS, f"max by (xid, mnemonic) (topk by (xid) (1, {info}))")]
    for severity in xids.Severity:
        found = xid_events(_severity_selector(severity), XID_WINDOW)
        # Only nodes and XIDs with events in the window get a series: no rows of zeros.
        expr = f"{_per_node('sum', found, ('xid',))} > 0"
        records.append(Record(NODE_XID_EVENTS, expr, {"severity": severity.value}))
    records.append(Record(NODE_XIDS, f"sum by ({_by((*NODE, 'severity'))}) ({NODE_XID_EVENTS})"))
    return records


def _device_records() -> list[Record]:
    action, reason = catalog.GPU_RECOVERY_ACTION.name, catalog.GPU_CLOCK_EVENT.name
    asked = f'{action}{{action!="{NO_ACTION}"}} == 1'
    active = f'{reason}{{reason!="{IDLE_REASON}"}} == 1'
    return [
        Record(NODE_REMAP_PENDING, _per_node("sum", catalog.GPU_ROW_REMAP_PENDING.name)),
        Record(NODE_REMAP_FAILED, _per_node("sum", catalog.GPU_ROW_REMAP_FAILED.name)),
        Record(GPU_RECOVERY_ASKED, _per_node("max", asked, ("gpu", "gpu_uuid", "action"))),
        Record(
            NODE_RECOVERY_ACTIONS,
            f"count by ({_by((*NODE, 'action'))}) ({GPU_RECOVERY_ASKED})",
        ),
        Record(NODE_CLOCK_EVENTS, _per_node("count", active, ("reason",))),
        Record(
            NODE_ECC_EVENTS,
            f"{_per_node('sum', events(catalog.ECC_EVENTS, '', EVENT_WINDOW), ('error_type',))}"
            " > 0",
        ),
        Record(
            NODE_RECOVERY_EVENTS,
            _per_node("sum", events(catalog.RECOVERY_ACTION_EVENTS, "", EVENT_WINDOW), ("action",))
            + " > 0",
        ),
    ]


def _cluster_records() -> list[Record]:
    def total(name: str, labels: tuple[str, ...] = (CLUSTER,)) -> str:
        return f"sum by ({_by(labels)}) ({name})"

    return [
        Record(
            CLUSTER_ACTIVE,
            f"{total(NODE_ACTIVE_SUM)} / on ({CLUSTER}) {total(NODE_SLICES_CAPACITY)}",
        ),
        Record(CLUSTER_SLICES_USED, total(NODE_SLICES_USED)),
        Record(CLUSTER_SLICES_CAPACITY, total(NODE_SLICES_CAPACITY)),
        Record(CLUSTER_PROFILE_INSTANCES, total(PROFILE_INSTANCES, (CLUSTER, "profile"))),
        Record(CLUSTER_XIDS, total(NODE_XIDS, (CLUSTER, "severity"))),
    ]


def records() -> list[Record]:
    """Every recording rule, in evaluation order: a rule reads only rules before it."""
    return [
        *_gpu_records(),
        *_node_records(),
        *_xid_records(),
        *_device_records(),
        *_cluster_records(),
    ]


def groups() -> list[dict[str, Any]]:
    """The recording group."""
    return [{"name": GROUP, "interval": INTERVAL, "rules": [r.rule() for r in records()]}]
