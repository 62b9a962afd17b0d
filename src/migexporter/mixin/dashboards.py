"""Grafana dashboards, built with grafanalib from the metric catalog and the recording rules.

Three dashboards: the MIG fleet, one MIG instance in depth, and the exporter's own health. Every
metric name comes from ``catalog`` or ``rules``; every panel queries the ``datasource`` variable;
panels are Grafana 11 types only. The fleet dashboard opens on recorded series (``rules``) and
bounded views (top-k, distributions, per-profile sums), so that it stays fast on thousands of
nodes; its per-instance and per-GPU panels sit in collapsed rows, which Grafana queries only
once opened, after a node or GPU is chosen. ``files`` gives the JSON that ``migexporter
dashboards`` writes, and ``queries`` lists every PromQL expression a dashboard runs, for the
tests that run them all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from migexporter import catalog, xids
from migexporter.mixin import rules

if TYPE_CHECKING:
    from collections.abc import Iterator

DATASOURCE = "${datasource}"
WIDTH = 24  # Grafana's grid is 24 columns wide
REFRESH_ON_TIME_RANGE_CHANGE = 2  # so that instances created since the page loaded appear
SCHEMA_VERSION = 39  # Grafana 11's schema; nothing in these dashboards needs a migration
TAGS = ["migexporter", "gpu", "mig"]
FLEET_UID, INSTANCE_UID, EXPORTER_UID = "migexporter-fleet", "migexporter-instance", "migexporter"
TITLES = {FLEET_UID: "MIG fleet", INSTANCE_UID: "MIG instance", EXPORTER_UID: "migexporter"}
# Short panel titles of the profiling fields, by DCGM field id.
FIELD_TITLES = {
    1001: "GR engine active",
    1002: "SM active",
    1003: "SM occupancy",
    1004: "Tensor pipes active",
    1005: "DRAM active",
    1006: "FP64 pipes active",
    1007: "FP32 pipes active",
    1008: "FP16 pipes active",
}
PIPE_FIELDS = (1006, 1007, 1008)

GI_LEGEND = "{{instance}} GPU {{gpu}} GI {{gpu_instance_id}} ({{profile}})"
GPU_LEGEND = "{{instance}} GPU {{gpu}}"
NODE_GPU_LEGEND = "{{node}} GPU {{gpu}}"  # recorded series name the node
CI_LEGEND = "GI {{gpu_instance_id}} CI {{compute_instance_id}} ({{profile}})"
XID_LEGEND = "XID {{xid}} {{mnemonic}} ({{severity}})"  # never NVIDIA's action alone
UNKNOWN_XID = "not in the catalog"  # the mnemonic shown for an XID the catalog lacks

# Grafana units per catalog unit; ratios are 0-1, shown as percent.
UNITS = {
    "ratio": "percentunit",
    "bytes": "bytes",
    "celsius": "celsius",
    "watts": "watt",
    "hertz": "hertz",
    "joules": "joule",
    "seconds": "s",
    "bytes_per_second": "Bps",
    "": "short",
}


def _selector(**matchers: str) -> str:
    """``{k=~"v", ...}`` from keyword matchers; ``=v`` is an exact match, ``!v`` excludes one."""
    parts = []
    for label, value in matchers.items():
        op, text = {"=": ("=", value[1:]), "!": ("!=", value[1:])}.get(value[:1], ("=~", value))
        parts.append(f'{label}{op}"{text}"')
    return "{" + ", ".join(parts) + "}"


def _series(metric: catalog.Metric, **matchers: str) -> str:
    return metric.name + (_selector(**matchers) if matchers else "")


# The filters of each dashboard's variables, as matchers. Recorded series carry cluster and
# node; raw series are filtered by their scrape target (instance), which the hidden instance
# variable derives from the chosen nodes.
NODES = {"cluster": "$cluster", "node": "$node"}
FLEET = {"instance": "$instance", "gpu_uuid": "$gpu"}
FLEET_GI = {**FLEET, "profile": "$profile"}
ONE_GI = {"instance": "$instance", "gpu_uuid": "$gpu", "gpu_instance_id": "$gpu_instance"}
TOP = 10  # series in a top-k panel
TOP_TABLE = 50  # rows in a top-k table
# Variables that may have no values: a cluster label exists only in multi-cluster setups.
OPTIONAL_VARIABLES = frozenset({"cluster"})


@dataclass
class _Grid:
    """Places panels left to right, wrapping at the grid's width; rows span the width.

    Panels after a collapsed row go inside it, placed as if it were open (Grafana packs the
    rows below it upwards while it is closed).
    """

    panels: list[g.Panel] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0
    _collapsed: g.RowPanel | None = None

    def row(self, title: str, *, collapsed: bool = False) -> None:
        self._wrap()
        row = g.RowPanel(title=title, gridPos=g.GridPos(1, WIDTH, 0, self.y), collapsed=collapsed)
        self.panels.append(row)
        self._collapsed = row if collapsed else None
        self.y += 1

    def add(self, panel: g.Panel, width: int, height: int = 8) -> None:
        if self.x + width > WIDTH:
            self._wrap()
        panel.gridPos = g.GridPos(height, width, self.x, self.y)
        (self._collapsed.panels if self._collapsed else self.panels).append(panel)
        self.x += width
        self.line_height = max(self.line_height, height)

    def _wrap(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x, self.line_height = 0, 0


def _target(expr: str, legend: str = "", ref: str = "A", *, table: bool = False) -> g.Target:
    if table:
        return g.Target(expr=expr, refId=ref, instant=True, format="table", legendFormat=legend)
    return g.Target(expr=expr, refId=ref, legendFormat=legend)


def _timeseries(title: str, description: str, targets: list[g.Target], unit: str) -> g.TimeSeries:
    extra: dict[str, Any] = {}
    if unit == UNITS["ratio"]:  # ratios are drawn on their whole 0-1 range
        extra = {"fieldConfig": {"defaults": {"min": 0, "max": 1}}}
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=unit,
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["mean", "max", "lastNotNull"],
        tooltipMode="multi",
        extraJson=extra,
    )


def _metric_panel(
    metric: catalog.Metric, title: str, matchers: dict[str, str], legend: str
) -> g.TimeSeries:
    """One catalog metric over time; its HELP text is the panel's description."""
    return _timeseries(
        title,
        metric.help,
        [_target(_series(metric, **matchers), legend)],
        UNITS[metric.unit],
    )


def _stat(title: str, description: str, expr: str, unit: str = "short") -> g.Stat:
    return g.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=[_target(expr)],
        format=unit,
        reduceCalc="lastNotNull",
        graphMode="none",
        noValue="0",
        thresholds=[{"color": "green", "value": None}],
    )


def _timeline(
    title: str, description: str, targets: list[g.Target], states: dict[str, tuple[str, str]]
) -> g.StateTimeline:
    """Series whose values are states over time, each value shown as its (text, colour)."""
    return g.StateTimeline(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        mappings=[
            {"type": "value", "options": {value: {"text": text, "color": colour}}}
            for value, (text, colour) in states.items()
        ],
    )


def _up_timeline(title: str, description: str, target: g.Target) -> g.StateTimeline:
    """Up (green) and down (red)."""
    return _timeline(title, description, [target], {"1": ("up", "green"), "0": ("down", "red")})


def _events_timeline(title: str, description: str, target: g.Target) -> g.StateTimeline:
    """Active (orange) and clear (green)."""
    states = {"1": ("active", "orange"), "0": ("clear", "green")}
    return _timeline(title, description, [target], states)


def _table(title: str, description: str, targets: list[g.Target], unit: str = "short") -> g.Table:
    """An instant table; several queries are merged into one row per series."""
    return g.Table(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=unit,
        filterable=True,
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}},
        ],
    )


def _datasource() -> g.Template:
    return g.Template(name="datasource", label="Data source", query="prometheus", type="datasource")


def _variable(  # noqa: PLR0913  (the keyword-only options of Grafana's variable)
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    hidden: bool = False,
    all_value: str | None = ".*",
) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=DATASOURCE,
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
        includeAll=multi,
        multi=multi,
        allValue=all_value if multi else None,
        sort=3,  # numerically ascending: GPU 2 before GPU 10
        hide=2 if hidden else 0,
    )


def _label_values(metric: catalog.Metric, label: str, **matchers: str) -> str:
    return f"label_values({_series(metric, **matchers)}, {label})"


def _recorded_values(name: str, label: str, **matchers: str) -> str:
    return f"label_values({name}{_selector(**matchers)}, {label})"


def _node_variables(*, multi: bool = True) -> list[g.Template]:
    """Cluster (where the data has one), node, and the hidden scrape targets of those nodes.

    Nodes are named by the recorded series that holds each target's node (its ``node`` label,
    else its ``instance``); raw series are then filtered by ``instance``.
    """
    return [
        _variable("cluster", "Cluster", _recorded_values(rules.BUILD, "cluster")),
        _variable(
            "node", "Node", _recorded_values(rules.BUILD, "node", cluster="$cluster"), multi=multi
        ),
        # All is the list of the chosen nodes' targets, not ".*", which would match every one.
        _variable(
            "instance",
            "Scrape target",
            _recorded_values(rules.BUILD, "instance", **NODES),
            hidden=True,
            all_value=None,
        ),
    ]


def _dashboard(uid: str, description: str, variables: list[g.Template], grid: _Grid) -> g.Dashboard:
    """A dashboard of ``grid``'s panels, linked to the other two with their variables and time."""
    return g.Dashboard(
        uid=uid,
        title=TITLES[uid],
        description=description,
        tags=TAGS,
        timezone="browser",
        refresh="30s",
        time=g.Time("now-1h", "now"),
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        templating=g.Templating(list=[_datasource(), *variables]),
        links=[_link(other) for other in TITLES if other != uid],
        panels=grid.panels,
        schemaVersion=SCHEMA_VERSION,
    ).auto_panel_ids()


def _link(uid: str) -> g.DashboardLink:
    title = TITLES[uid]
    return g.DashboardLink(
        title=title,
        type="link",
        uri=f"/d/{uid}",
        includeVars=True,
        keepTime=True,
        icon="dashboard",
        tooltip=f"Open the {title} dashboard with these variables and time range",
    )


def _recorded(name: str, **matchers: str) -> str:
    return name + _selector(**(matchers or NODES))


def _sum(name: str, by: str = "", **matchers: str) -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({_recorded(name, **matchers)})"


def _top(expr: str, k: int = TOP, *, lowest: bool = False) -> str:
    """The ``k`` series of ``expr`` highest (or lowest) on average over the dashboard's range.

    The ranking is taken once, at the range's end (``@ end()``), so that a graph shows the same
    ``k`` series at every step instead of up to ``k`` per step.
    """
    rank = "bottomk" if lowest else "topk"
    return f"{expr} and {rank}({k}, avg_over_time({expr}[$__range] @ end()))"


def _stat_row(grid: _Grid) -> None:
    gpus = rules.NODE_GPUS
    grid.row("Fleet")
    stats = [
        ("Nodes", "Nodes with a migexporter target.", f"count({_recorded(rules.BUILD)})"),
        (
            "GPUs in MIG mode",
            "Physical GPUs with MIG enabled.",
            f"{_sum(gpus, **NODES, mig_mode='=enabled')} or vector(0)",
        ),
        (
            "GPUs not answering",
            (
                "GPUs the exporters list but that did not answer their last collection (lost, "
                "hung or failing)."
            ),
            f"({_sum(gpus)} - {_sum(rules.NODE_GPUS_UP)}) or vector(0)",
        ),
        (
            "GPU instances",
            "MIG GPU instances of the selected profiles.",
            f"{_sum(rules.PROFILE_INSTANCES, **NODES, profile='$profile')} or vector(0)",
        ),
        (
            "Idle instances",
            (
                f"GPU instances whose GR engine was active less than {rules.IDLE_RATIO:.0%} of the "
                f"time over the last {rules.AVG_WINDOW}: capacity held but unused."
            ),
            f"{_sum(rules.BAND_INSTANCES, **NODES, band='=idle')} or vector(0)",
        ),
        (
            "Memory-full instances",
            f"GPU instances using more than {rules.MEMORY_FULL_RATIO:.0%} of their own memory.",
            f"{_sum(rules.MEMORY_FULL)} or vector(0)",
        ),
        (
            "Free compute slices",
            "Compute slices not held by any GPU instance: room for new instances.",
            f"({_sum(rules.NODE_SLICES_CAPACITY)} - {_sum(rules.NODE_SLICES_USED)}) or vector(0)",
        ),
    ]
    for title, description, expr in stats:
        grid.add(_stat(title, description, expr), 3, 4)
    grid.add(
        _stat(
            "Activity (slice-weighted)",
            "GR-engine activity of all GPU instances, each weighted by its compute slices, over "
            "all MIG slices: how busy the MIG capacity is.",
            f"{_sum(rules.NODE_ACTIVE_SUM)} / {_sum(rules.NODE_SLICES_CAPACITY)}",
            "percentunit",
        ),
        3,
        4,
    )


def _activity_row(grid: _Grid) -> None:
    grid.row("Activity")
    weighted = f"{_sum(rules.NODE_ACTIVE_SUM)} / {_sum(rules.NODE_SLICES_CAPACITY)}"
    profiles = {**NODES, "profile": "$profile"}
    by_profile = (
        f"{_sum(rules.PROFILE_ACTIVE_SUM, 'profile', **profiles)}"
        f" / {_sum(rules.PROFILE_INSTANCES, 'profile', **profiles)}"
    )
    grid.add(
        _timeseries(
            "Activity, slice-weighted and per profile",
            "Slice-weighted GR-engine activity of the selected nodes, and the average activity "
            "of the GPU instances of each profile.",
            [_target(weighted, "all MIG slices", "A"), _target(by_profile, "{{profile}}", "B")],
            "percentunit",
        ),
        12,
    )
    bands = g.TimeSeries(
        title="GPU instances by activity",
        description=f"How many GPU instances are idle (under {rules.IDLE_RATIO:.0%}), low, "
        f"medium or highly active, on average over {rules.AVG_WINDOW}: the distribution of "
        "the fleet's instances.",
        dataSource=DATASOURCE,
        targets=[_target(_sum(rules.BAND_INSTANCES, "band"), "{{band}}")],
        unit="short",
        stacking={"mode": "normal", "group": "A"},
        fillOpacity=60,
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["lastNotNull"],
        tooltipMode="multi",
    )
    grid.add(bands, 12)
    gpu = _recorded(rules.GPU_ACTIVE, **NODES, gpu_uuid="$gpu")
    for title, description, lowest in (
        (
            f"Busiest {TOP} MIG GPUs",
            "Physical MIG GPUs with the highest slice-weighted activity over the range.",
            False,
        ),
        (
            f"Least busy {TOP} MIG GPUs",
            (
                "Physical MIG GPUs with the lowest slice-weighted activity over the range: "
                "candidates for consolidation."
            ),
            True,
        ),
    ):
        target = _target(_top(gpu, lowest=lowest), NODE_GPU_LEGEND)
        grid.add(_timeseries(title, description, [target], "percentunit"), 12)


def _top_table(title: str, description: str, expr: str, column: str) -> g.Table:
    table = _table(title, description, [_target(f"topk({TOP}, {expr})", table=True)])
    table.overrides = [_override("Value", column, "short")]
    table.sortBy = [g.TableSortByField(displayName=column, desc=True)]
    return table


def _capacity_row(grid: _Grid) -> None:
    grid.row("Capacity and memory")
    profiles = {**NODES, "profile": "$profile"}
    by_profile = g.BarGauge(
        title="Instances by profile",
        description="How many GPU instances of each MIG profile exist.",
        dataSource=DATASOURCE,
        targets=[
            _target(_sum(rules.PROFILE_INSTANCES, "profile", **profiles), "{{profile}}"),
        ],
        orientation="horizontal",
        displayMode="basic",
        calc="lastNotNull",
        min=0,
        thresholds=[{"color": "blue", "value": None}],
    )
    grid.add(by_profile, 8)
    used, capacity = _sum(rules.NODE_SLICES_USED), _sum(rules.NODE_SLICES_CAPACITY)
    grid.add(
        _timeseries(
            "Compute slices used and free",
            "Slices held by GPU instances, and slices still free for new instances (scheduling "
            "headroom), on the selected nodes.",
            [_target(used, "used", "A"), _target(f"{capacity} - {used}", "free", "B")],
            "short",
        ),
        8,
    )
    memory = (
        f"{_sum(rules.PROFILE_MEMORY_USED, 'profile', **profiles)}"
        f" / {_sum(rules.PROFILE_MEMORY_TOTAL, 'profile', **profiles)}"
    )
    grid.add(
        _timeseries(
            "Memory used / instance size, per profile",
            "Frame buffer in use as a fraction of the GPU instances' own memory, summed per "
            "profile.",
            [_target(memory, "{{profile}}")],
            "percentunit",
        ),
        8,
    )
    free = (
        f"{_recorded(rules.NODE_SLICES_CAPACITY)} - on (cluster, node, instance)"
        f" {_recorded(rules.NODE_SLICES_USED)}"
    )
    grid.add(
        _top_table(
            f"Nodes with the most free slices (top {TOP})",
            "Where a new GPU instance fits: free compute slices per node.",
            free,
            "Free slices",
        ),
        12,
    )
    grid.add(
        _top_table(
            f"Nodes with memory-full instances (top {TOP})",
            f"GPU instances using more than {rules.MEMORY_FULL_RATIO:.0%} of their own memory, "
            "per node: workloads about to run out.",
            _recorded(rules.MEMORY_FULL),
            "Instances",
        ),
        12,
    )


def _xid_value_names() -> list[dict[str, Any]]:
    """Grafana value mappings naming each XID of the catalog, with our severity."""
    return [
        {
            "type": "value",
            "options": {
                str(code): {"text": f"{code} {row.mnemonic} ({row.severity.value})", "index": i}
            },
        }
        for i, (code, row) in enumerate(sorted(xids.CATALOG.items()))
    ]


def _per_step(name: str, by: str, **matchers: str) -> str:
    """A recorded per-minute series summed within each step, by ``by``.

    Its panel's minimum interval is the recording interval, so that the steps tile the range
    and each evaluation's sample is counted in exactly one of them.
    """
    return f"sum by ({by}) (sum_over_time({_recorded(name, **matchers)}[$__interval]))"


def _named_xids(expr: str) -> str:
    """``expr`` (by ``xid``) with each XID's mnemonic; XIDs the catalog lacks say so."""
    return (
        f"{expr} * on (xid) group_left (mnemonic) {rules.XID_MNEMONICS}"
        f' or on (xid) label_replace({expr}, "mnemonic", "{UNKNOWN_XID}", "", "")'
    )


def _event_bars(title: str, description: str, targets: list[g.Target]) -> g.TimeSeries:
    """Events per interval of the recording rules, stacked bars with their sums in the legend."""
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        interval=rules.INTERVAL,
        unit="short",
        drawStyle="bars",
        stacking={"mode": "normal", "group": "A"},
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["sum"],
        tooltipMode="multi",
    )


def _fleet_xid_row(grid: _Grid) -> None:
    grid.row("XID errors")
    grid.add(
        _event_bars(
            "XID events by severity",
            "XID events on the selected nodes in each interval (at least a minute), by our "
            "severity (page, ticket, info); only intervals with events have a value.",
            [_target(_per_step(rules.NODE_XIDS, "severity"), "{{severity}}")],
        ),
        12,
    )
    per_node = "sum by (cluster, node, severity)"
    grid.add(
        _table(
            "Nodes with XID events",
            f"XID events per node and severity over the dashboard's range (top {TOP_TABLE}).",
            [
                _target(
                    f"topk({TOP_TABLE}, {per_node}"
                    f" (sum_over_time({_recorded(rules.NODE_XIDS)}[$__range])))",
                    table=True,
                )
            ],
        ),
        12,
    )
    grid.add(
        g.StateTimeline(
            title="XID events over time",
            description="XID events on the selected nodes in each interval (at least a "
            "minute), one row per XID that had events in the range, named with its mnemonic "
            "and our severity; the tables name the nodes and GPU instances.",
            dataSource=DATASOURCE,
            targets=[
                _target(_named_xids(_per_step(rules.NODE_XID_EVENTS, "xid, severity")), XID_LEGEND)
            ],
            interval=rules.INTERVAL,
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            mergeValues=True,
        ),
        24,
        8,
    )
    where = "cluster, instance, gpu, gpu_uuid, gpu_instance_id, profile, xid"
    events = rules.xid_events(_selector(**FLEET)[1:-1], "$__range")
    table = _table(
        "XID errors in the range",
        "XID events per GPU instance and XID over the dashboard's range, with the XID's "
        f"mnemonic and our severity; only series with events (top {TOP_TABLE}).",
        [_target(f"topk({TOP_TABLE}, sum by ({where}) ({events}) > 0)", table=True)],
    )
    table.overrides = [
        _override("Value", "Events", "short"),
        {
            "matcher": {"id": "byName", "options": "xid"},
            "properties": [
                {"id": "displayName", "value": "XID"},
                {"id": "mappings", "value": _xid_value_names()},
            ],
        },
    ]
    table.sortBy = [g.TableSortByField(displayName="Events", desc=True)]
    grid.add(table, 24)


def _fleet_health_stats(grid: _Grid) -> None:
    """Counts of GPUs with a device problem, and device events in the range."""
    in_range = "sum(sum_over_time({}[$__range])) or vector(0)"
    stats = [
        (
            "GPUs with a failed row remap",
            f"{catalog.GPU_ROW_REMAP_FAILED.help} Now, on the selected nodes.",
            f"{_sum(rules.NODE_REMAP_FAILED)} or vector(0)",
        ),
        (
            "GPUs with a row remap pending",
            f"{catalog.GPU_ROW_REMAP_PENDING.help} Now, on the selected nodes.",
            f"{_sum(rules.NODE_REMAP_PENDING)} or vector(0)",
        ),
        (
            "GPUs asking for a recovery action",
            (
                "GPUs whose driver asks for a recovery action (reset, reboot, drain) now, on "
                "the selected nodes; the table below names them."
            ),
            f"{_sum(rules.NODE_RECOVERY_ACTIONS)} or vector(0)",
        ),
        (
            "Recovery-action requests in the range",
            f"{catalog.RECOVERY_ACTION_EVENTS.help} In the dashboard's range.",
            in_range.format(_recorded(rules.NODE_RECOVERY_EVENTS)),
        ),
        (
            "Uncorrected ECC events in the range",
            "Double-bit (uncorrected) ECC error events from the driver in the dashboard's range.",
            in_range.format(_recorded(rules.NODE_ECC_EVENTS, **NODES, error_type="=uncorrected")),
        ),
        (
            "Corrected ECC events in the range",
            "Single-bit (corrected) ECC error events from the driver in the dashboard's range.",
            in_range.format(_recorded(rules.NODE_ECC_EVENTS, **NODES, error_type="=corrected")),
        ),
    ]
    for title, description, expr in stats:
        grid.add(_stat(title, description, expr), 4, 4)


def _fleet_health_row(grid: _Grid) -> None:
    grid.row("Device health")
    _fleet_health_stats(grid)
    up = _series(catalog.GPU_UP, **FLEET)
    went_down = f"{up} and on (instance, gpu_uuid) (min_over_time({up}[$__range] @ end()) == 0)"
    grid.add(
        _up_timeline(
            "GPUs that went down",
            "GPUs whose up series was 0 at some time in the range (lost, hung or failing).",
            _target(went_down, GPU_LEGEND),
        ),
        12,
        6,
    )
    temperature = _series(catalog.GPU_TEMPERATURE, **FLEET)
    grid.add(
        _timeseries(
            f"Hottest {TOP} GPUs",
            f"{catalog.GPU_TEMPERATURE.help} The GPUs with the highest average over the range.",
            [_target(_top(temperature), GPU_LEGEND)],
            UNITS[catalog.GPU_TEMPERATURE.unit],
        ),
        12,
        6,
    )
    throttled = _recorded(rules.GPU_THROTTLED, **NODES)
    grid.add(
        _timeseries(
            f"Most throttled {TOP} GPUs",
            f"{catalog.GPU_THROTTLED.help} As the fraction of time, over 5 minutes, for the "
            "GPUs held down longest on average over the range; GPUs never throttled are not "
            "listed.",
            [_target(_top(throttled), NODE_GPU_LEGEND + " {{cause}}")],
            "percentunit",
        ),
        12,
        6,
    )
    grid.add(
        _timeseries(
            "GPUs held down, by clock-event reason",
            f"GPUs of the selected nodes with each clock-event reason active (GPU idle left "
            f"out), as sampled once a minute: {catalog.GPU_CLOCK_EVENT.help}",
            [_target(_sum(rules.NODE_CLOCK_EVENTS, "reason"), "{{reason}}")],
            "short",
        ),
        12,
        6,
    )
    _fleet_device_events(grid)


def _fleet_device_events(grid: _Grid) -> None:
    """ECC and recovery-action events over time, and tables of the GPUs with a problem."""
    events = _event_bars(
        "ECC and recovery-action events",
        "ECC error events by type, and the driver's recovery-action requests by action, on "
        "the selected nodes in each interval (at least a minute); only intervals with events "
        "have a value.",
        [
            _target(_per_step(rules.NODE_ECC_EVENTS, "error_type"), "ECC {{error_type}}", "A"),
            _target(
                _per_step(rules.NODE_RECOVERY_EVENTS, "action"), "recovery action {{action}}", "B"
            ),
        ],
    )
    grid.add(events, 12)
    attention = _table(
        "GPUs needing action now",
        "GPUs with a failed or pending row remap, a recovery action asked for by the driver, "
        "or not answering, one row per GPU and problem (with the action asked for); GPUs "
        "without one are not listed.",
        [_target(_needing_action(), table=True)],
    )
    attention.transformations[1]["options"]["excludeByName"]["Value"] = True
    grid.add(attention, 12)
    where = "cluster, instance, gpu, gpu_uuid, event, error_type, action"
    table = _table(
        "Device events in the range",
        "ECC error events and recovery-action requests per GPU over the dashboard's range; "
        f"only GPUs with events (top {TOP_TABLE}).",
        [_target(f"topk({TOP_TABLE}, sum by ({where}) ({_device_events()}) > 0)", table=True)],
    )
    table.overrides = [_override("Value", "Events", "short")]
    table.sortBy = [g.TableSortByField(displayName="Events", desc=True)]
    grid.add(table, 12)
    lifetime = _table(
        "GPUs with ECC errors over their lifetime",
        f"{catalog.GPU_ECC_ERRORS.help} Only GPUs with errors (top {TOP_TABLE}).",
        [_target(f"topk({TOP_TABLE}, {_series(catalog.GPU_ECC_ERRORS, **FLEET)} > 0)", table=True)],
    )
    lifetime.overrides = [_override("Value", "Errors", "short")]
    lifetime.sortBy = [g.TableSortByField(displayName="Errors", desc=True)]
    grid.add(lifetime, 12)


def _needing_action() -> str:
    """One series per GPU and problem it has now, from the gauges.

    The ``problem`` label names it, and ``action`` the recovery action the driver asks for (as
    recorded, up to a minute late).
    """
    gpu = "cluster, instance, gpu, gpu_uuid"
    # Recorded: the state set has a series per GPU and action, nearly all of them 0.
    asked = _recorded(rules.GPU_RECOVERY_ASKED, **NODES, gpu_uuid="$gpu")
    problems = [
        (f"{_series(catalog.GPU_ROW_REMAP_FAILED, **FLEET)} == 1", "row remap failed"),
        (f"{_series(catalog.GPU_ROW_REMAP_PENDING, **FLEET)} == 1", "row remap pending"),
        (f"{_series(catalog.GPU_UP, **FLEET)} == 0", "not answering"),
    ]
    branches = [
        f'label_replace(max by ({gpu}) ({expr}), "problem", "{problem}", "", "")'
        for expr, problem in problems
    ]
    recovery = f"max by ({gpu}, action) ({asked})"
    branches.append(f'label_replace({recovery}, "problem", "recovery action", "", "")')
    return f"max by ({gpu}, problem, action) ({' or '.join(branches)})"


def _device_events() -> str:
    """ECC and recovery-action events per series in the range, named by an ``event`` label.

    The kind is a constant: a ``$1`` in a dashboard would read to Grafana as a variable.
    """
    selector = _selector(**FLEET)[1:-1]
    ecc = rules.events(catalog.ECC_EVENTS, selector, "$__range")
    recovery = rules.events(catalog.RECOVERY_ACTION_EVENTS, selector, "$__range")
    return (
        f'label_replace({ecc}, "event", "ECC", "", "")'
        f' or label_replace({recovery}, "event", "recovery action", "", "")'
    )


def _per_instance_row(grid: _Grid) -> None:
    grid.row("Per GPU instance (choose a node or GPU first)", collapsed=True)
    for field_id, metric in catalog.PROFILING[catalog.Scope.GPU_INSTANCE].items():
        if field_id in PIPE_FIELDS:
            continue  # one panel for the three pipes, below
        grid.add(_metric_panel(metric, FIELD_TITLES[field_id], FLEET_GI, GI_LEGEND), 12)
    grid.add(_pipes_panel(catalog.Scope.GPU_INSTANCE, FLEET_GI, GI_LEGEND), 12)
    mem_used = _series(catalog.GI_MEMORY_USED, **FLEET_GI)
    mem_total = _series(catalog.GI_MEMORY_TOTAL, **FLEET_GI)
    grid.add(
        _timeseries(
            "Memory used / instance size",
            "Frame buffer in use as a fraction of the GPU instance's own memory, not the card's.",
            [_target(f"{mem_used} / {mem_total}", GI_LEGEND)],
            "percentunit",
        ),
        12,
    )
    memory_table = _table(
        "Instances by memory use",
        "Every GPU instance with its memory in use, its size and the ratio; sort by any column.",
        [
            _target(f"{mem_used} / {mem_total}", ref="A", table=True),
            _target(mem_used, ref="B", table=True),
            _target(mem_total, ref="C", table=True),
        ],
    )
    memory_table.sortBy = [g.TableSortByField(displayName="Value #A", desc=True)]
    memory_table.overrides = [
        _override("Value #A", "Used / size", "percentunit"),
        _override("Value #B", "Used", "bytes"),
        _override("Value #C", "Size", "bytes"),
    ]
    grid.add(memory_table, 24, 9)


def _per_gpu_row(grid: _Grid) -> None:
    grid.row("Per physical GPU (choose a node or GPU first)", collapsed=True)
    weighted = _recorded(rules.GPU_ACTIVE, **NODES, gpu_uuid="$gpu")
    grid.add(
        _timeseries(
            "Physical GPU activity (slice-weighted)",
            "Each GPU instance's GR-engine activity weighted by its share of the GPU's compute "
            "slices, summed per physical GPU: how busy the whole card is.",
            [_target(weighted, NODE_GPU_LEGEND)],
            "percentunit",
        ),
        12,
    )
    used = _series(catalog.GPU_MIG_SLICES_USED, **FLEET)
    capacity = _series(catalog.GPU_MIG_SLICES_CAPACITY, **FLEET)
    slices = g.BarGauge(
        title="Compute slices used and free per GPU",
        description="Slices held by GPU instances, and slices still free for new instances "
        "(scheduling headroom), per MIG GPU.",
        dataSource=DATASOURCE,
        targets=[
            _target(f"{used} and {capacity} > 0", GPU_LEGEND + " used", "A"),
            _target(f"({capacity} - {used}) and {capacity} > 0", GPU_LEGEND + " free", "B"),
        ],
        orientation="horizontal",
        displayMode="gradient",
        calc="lastNotNull",
        min=0,
        thresholds=[{"color": "green", "value": None}],
    )
    grid.add(slices, 12)
    grid.add(_metric_panel(catalog.GPU_TEMPERATURE, "Temperature", FLEET, GPU_LEGEND), 8)
    grid.add(
        _timeseries(
            "Power draw and limit",
            f"{catalog.GPU_POWER.help} Dashed: {catalog.GPU_POWER_LIMIT.help.lower()}",
            [
                _target(_series(catalog.GPU_POWER, **FLEET), GPU_LEGEND, "A"),
                _target(_series(catalog.GPU_POWER_LIMIT, **FLEET), GPU_LEGEND + " limit", "B"),
            ],
            "watt",
        ),
        8,
    )
    grid.add(_metric_panel(catalog.GPU_SM_CLOCK, "SM clock", FLEET, GPU_LEGEND), 8)
    _per_gpu_device_panels(grid)
    _per_gpu_health_panels(grid)
    grid.add(
        _up_timeline(
            "GPU up", catalog.GPU_UP.help, _target(_series(catalog.GPU_UP, **FLEET), GPU_LEGEND)
        ),
        24,
        6,
    )


def _pipes_panel(scope: catalog.Scope, matchers: dict[str, str], legend: str) -> g.TimeSeries:
    """FP64, FP32 and FP16 pipe activity (DCGM 1006-1008) in one panel."""
    targets = [
        _target(_series(catalog.PROFILING[scope][f], **matchers), f"{legend} {name}", ref)
        for f, name, ref in zip(PIPE_FIELDS, ("FP64", "FP32", "FP16"), "ABC", strict=True)
    ]
    return _timeseries(
        "FP64, FP32 and FP16 pipes active",
        "Fraction of cycles each floating-point pipe was active (DCGM fields 1006-1008).",
        targets,
        "percentunit",
    )


def _per_gpu_device_panels(grid: _Grid) -> None:
    """Device health beyond temperature, power and clock, as dcgm-exporter's defaults show it."""
    direction = GPU_LEGEND + " {{direction}}"
    grid.add(
        _events_timeline(
            "Clock events (throttle reasons)",
            f"{catalog.GPU_CLOCK_EVENT.help} GPU idle is left out.",
            _target(
                _series(catalog.GPU_CLOCK_EVENT, **FLEET, reason="!gpu_idle"),
                GPU_LEGEND + " {{reason}}",
            ),
        ),
        12,
    )
    grid.add(
        _timeseries(
            "Throttled time",
            f"{catalog.GPU_THROTTLED.help} As the fraction of time.",
            [
                _target(
                    f"rate({_series(catalog.GPU_THROTTLED, **FLEET)}[$__rate_interval])",
                    GPU_LEGEND + " {{cause}}",
                )
            ],
            "percentunit",
        ),
        12,
    )
    utilization = _series(catalog.GPU_UTILIZATION, **FLEET)
    copy = _series(catalog.GPU_MEMORY_COPY_UTILIZATION, **FLEET)
    grid.add(
        _timeseries(
            "Utilization and memory-copy utilization (NVML, MIG disabled)",
            f"{catalog.GPU_UTILIZATION.help} {catalog.GPU_MEMORY_COPY_UTILIZATION.help}",
            [
                _target(utilization, GPU_LEGEND + " utilization", "A"),
                _target(copy, GPU_LEGEND + " memory copy", "B"),
            ],
            "percentunit",
        ),
        12,
    )
    grid.add(_pipes_panel(catalog.Scope.GPU, FLEET, GPU_LEGEND), 12)
    for metric, title in (
        (catalog.GPU_PCIE_THROUGHPUT, "PCIe traffic"),
        (catalog.GPU_NVLINK_THROUGHPUT, "NVLink traffic"),
    ):
        grid.add(_metric_panel(metric, title, FLEET, direction), 12)
    grid.add(
        _metric_panel(catalog.GPU_MEMORY_TEMPERATURE, "Memory temperature", FLEET, GPU_LEGEND), 8
    )
    grid.add(
        _timeseries(
            "Encoder and decoder utilization",
            f"{catalog.GPU_ENCODER_UTILIZATION.help} {catalog.GPU_DECODER_UTILIZATION.help}",
            [
                _target(_series(catalog.GPU_ENCODER_UTILIZATION, **FLEET), GPU_LEGEND + " enc"),
                _target(
                    _series(catalog.GPU_DECODER_UTILIZATION, **FLEET), GPU_LEGEND + " dec", "B"
                ),
            ],
            "percentunit",
        ),
        8,
    )
    replays = _series(catalog.GPU_PCIE_REPLAYS, **FLEET)
    grid.add(
        _timeseries(
            "PCIe replays",
            f"{catalog.GPU_PCIE_REPLAYS.help} Per second: a rising rate points at a bad link.",
            [_target(f"rate({replays}[$__rate_interval])", GPU_LEGEND)],
            "short",
        ),
        8,
    )


def _per_gpu_health_panels(grid: _Grid) -> None:
    """ECC, row remapping and recovery actions of the chosen GPUs."""
    selector = _selector(**FLEET)[1:-1]
    ecc = rules.events(catalog.ECC_EVENTS, selector, "$__rate_interval")
    grid.add(
        _timeseries(
            "ECC error events",
            f"{catalog.ECC_EVENTS.help} Per interval.",
            [
                _target(
                    f"sum by (instance, gpu, error_type) ({ecc})", GPU_LEGEND + " {{error_type}}"
                )
            ],
            "short",
        ),
        8,
    )
    grid.add(
        _metric_panel(
            catalog.GPU_ECC_ERRORS, "ECC errors (lifetime)", FLEET, GPU_LEGEND + " {{error_type}}"
        ),
        8,
    )
    pending = _series(catalog.GPU_ROW_REMAP_PENDING, **FLEET)
    failed = _series(catalog.GPU_ROW_REMAP_FAILED, **FLEET)
    grid.add(
        _timeline(
            "Row remap pending and failed",
            f"{catalog.GPU_ROW_REMAP_PENDING.help} {catalog.GPU_ROW_REMAP_FAILED.help}",
            [
                _target(pending, GPU_LEGEND + " pending", "A"),
                _target(f"{failed} * 2", GPU_LEGEND + " failed", "B"),
            ],
            {"0": ("ok", "green"), "1": ("pending", "orange"), "2": ("failed", "red")},
        ),
        8,
    )
    action = catalog.GPU_RECOVERY_ACTION
    none = _series(action, **FLEET, action="=" + rules.NO_ACTION)
    asked = _series(action, **FLEET, action="!" + rules.NO_ACTION)
    grid.add(
        _timeline(
            "Recovery action",
            f"{action.help} One row per GPU and action that was current in the range.",
            [_target(f"({asked} == 1) * 2 or {none} == 1", GPU_LEGEND + " {{action}}")],
            {"1": ("nothing to do", "green"), "2": ("asked", "red")},
        ),
        12,
    )
    requests = rules.events(catalog.RECOVERY_ACTION_EVENTS, selector, "$__rate_interval")
    grid.add(
        _timeseries(
            "Recovery-action requests",
            f"{catalog.RECOVERY_ACTION_EVENTS.help} Per interval.",
            [_target(f"sum by (instance, gpu, action) ({requests})", GPU_LEGEND + " {{action}}")],
            "short",
        ),
        12,
    )


# --- MIG fleet ----------------------------------------------------------------------------------
def fleet() -> g.Dashboard:
    """The MIG fleet at any size: recorded roll-ups first, per-instance views on demand."""
    grid = _Grid()
    _stat_row(grid)
    _activity_row(grid)
    _capacity_row(grid)
    _fleet_xid_row(grid)
    _fleet_health_row(grid)
    # One line per instance or GPU is for a chosen node or GPU, not for the whole fleet.
    _per_instance_row(grid)
    _per_gpu_row(grid)
    return _dashboard(
        FLEET_UID,
        "The MIG fleet: capacity, activity (DCGM fields 1001-1005) and its distribution, "
        "memory, XID errors by severity and by XID, and physical-GPU health (row remapping, "
        "recovery actions, ECC, GPUs down, heat, throttling), from the recording rules; "
        "per-instance views once a node or GPU is chosen. By migexporter.",
        [
            *_node_variables(),
            _variable(
                "gpu",
                "GPU",
                _label_values(catalog.GPU_INFO, "gpu_uuid", instance="$instance"),
            ),
            _variable(
                "profile",
                "Profile",
                _recorded_values(rules.PROFILE_INSTANCES, "profile", **NODES),
            ),
        ],
        grid,
    )


def _override(column: str, name: str, unit: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [{"id": "displayName", "value": name}, {"id": "unit", "value": unit}],
    }


def _xid_panels(grid: _Grid, matchers: dict[str, str], legend: str) -> None:
    """An XID timeline and a table of counts with the catalog's action, for ``matchers``."""
    counters = _series(catalog.XID_ERRORS, **matchers)
    # The catalog of the same targets only: the whole fleet's would be joined at every step.
    info = _series(catalog.XID_INFO, instance=matchers["instance"])
    events = rules.xid_events(_selector(**matchers)[1:-1], "$__rate_interval")
    in_range = rules.xid_events(_selector(**matchers)[1:-1], "$__range")
    keys = "instance, gpu, gpu_instance_id, compute_instance_id, xid"
    # Only the series with an event in the range: a quiet XID series would be an empty row.
    recent = (
        f"(sum by ({keys}) ({events}) and on ({keys}) (sum by ({keys}) ({in_range}) > 0))"
        f" * on (instance, xid) group_left (mnemonic, action, severity) {info}"
    )
    grid.add(
        g.StateTimeline(
            title="XID events over time",
            description="XID errors per GPU instance and XID in each interval (0: none), for the "
            "XIDs seen in the range, labelled with the XID's mnemonic and our severity.",
            dataSource=DATASOURCE,
            targets=[_target(recent, legend)],
            mappings=[
                {"type": "value", "options": {"0": {"text": "none", "color": "transparent"}}}
            ],
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
            mergeValues=True,
        ),
        24,
        8,
    )
    where = "instance, gpu, gpu_uuid, gpu_instance_id, compute_instance_id, xid"
    totals = f"(sum by ({where}) ({counters}) > 0)"
    table = _table(
        "XID errors with NVIDIA's action",
        "Every XID counted since the exporter started, per GPU instance, with its mnemonic, "
        "NVIDIA's immediate action and our severity (page, ticket, info).",
        [
            _target(
                f"{totals} * on (instance, xid)"
                f" group_left (mnemonic, description, action, severity) {info}",
                table=True,
            )
        ],
    )
    table.overrides = [_override("Value", "Events", "short")]
    table.sortBy = [g.TableSortByField(displayName="Events", desc=True)]
    grid.add(table, 24, 8)


# --- one MIG instance ---------------------------------------------------------------------------
def instance() -> g.Dashboard:
    """One GPU instance in depth: its fields, compute instances and XID history."""
    grid = _Grid()
    gi = _series(catalog.GPU_INSTANCE_INFO, **ONE_GI)
    grid.row("GPU instance")
    grid.add(
        _table(
            "Instance",
            "Profile, slices, SMs, placement and MIG device UUID of the GPU instance; on "
            "Kubernetes also the namespace, pod and container that hold it.",
            [_target(gi, table=True)],
        ),
        24,
        5,
    )
    ratios = catalog.PROFILING[catalog.Scope.GPU_INSTANCE]
    activity = [
        _target(_series(ratios[field_id], **ONE_GI), FIELD_TITLES[field_id], chr(ord("A") + i))
        for i, field_id in enumerate(catalog.ACTIVITY_FIELDS)
    ]
    grid.add(
        _timeseries(
            "Activity (DCGM fields 1001-1005)",
            "The five profiling ratios of the GPU instance.",
            activity,
            "percentunit",
        ),
        16,
    )
    used = _series(catalog.GI_MEMORY_USED, **ONE_GI)
    total = _series(catalog.GI_MEMORY_TOTAL, **ONE_GI)
    grid.add(
        g.GaugePanel(
            title="Memory used / instance size",
            description="Frame buffer in use as a fraction of the instance's own memory.",
            dataSource=DATASOURCE,
            targets=[_target(f"{used} / {total}")],
            format="percentunit",
            min=0,
            max=1,
            calc="lastNotNull",
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.85},
                {"color": "red", "value": 0.95},
            ],
        ),
        8,
    )
    grid.add(
        _timeseries(
            "Memory used, free, reserved and size",
            f"{catalog.GI_MEMORY_USED.help} {catalog.GI_MEMORY_FREE.help} "
            f"{catalog.GI_MEMORY_RESERVED.help} {catalog.GI_MEMORY_TOTAL.help}",
            [
                _target(used, "used", "A"),
                _target(_series(catalog.GI_MEMORY_FREE, **ONE_GI), "free", "B"),
                _target(_series(catalog.GI_MEMORY_RESERVED, **ONE_GI), "reserved", "C"),
                _target(total, "size", "D"),
            ],
            "bytes",
        ),
        12,
    )
    grid.add(_pipes_panel(catalog.Scope.GPU_INSTANCE, ONE_GI, "GI"), 12)
    grid.row("Compute instances")
    grid.add(
        _table(
            "Compute instances",
            "The MIG devices (compute instances) inside the GPU instance; per-CI activity is "
            "reported when the GPU instance holds more than one.",
            [_target(_series(catalog.COMPUTE_INSTANCE_INFO, **ONE_GI), table=True)],
        ),
        24,
        6,
    )
    for field_id, metric in catalog.PROFILING[catalog.Scope.COMPUTE_INSTANCE].items():
        grid.add(_metric_panel(metric, FIELD_TITLES[field_id], ONE_GI, CI_LEGEND), 12)
    grid.row("XID errors")
    _xid_panels(grid, ONE_GI, "CI {{compute_instance_id}} XID {{xid}} {{mnemonic}} ({{severity}})")
    return _dashboard(
        INSTANCE_UID,
        "One MIG GPU instance in depth: its activity, memory, compute instances and XID history. "
        "By migexporter.",
        [
            *_node_variables(multi=False),
            _variable(
                "gpu",
                "GPU",
                _label_values(
                    catalog.GPU_INFO, "gpu_uuid", instance="$instance", mig_mode="=enabled"
                ),
                multi=False,
            ),
            _variable(
                "gpu_instance",
                "GPU instance",
                _label_values(
                    catalog.GPU_INSTANCE_INFO,
                    "gpu_instance_id",
                    instance="$instance",
                    gpu_uuid="$gpu",
                ),
                multi=False,
            ),
        ],
        grid,
    )


# --- the exporter itself ------------------------------------------------------------------------
def exporter() -> g.Dashboard:
    """The exporter's own health: up, durations, errors, backend, supported fields, build."""
    grid = _Grid()
    node = {"instance": "$instance"}
    grid.row("Exporter")
    grid.add(
        _up_timeline(
            "Target up",
            "Whether Prometheus could scrape the exporter (its up series).",
            _target(f"up{_selector(**node)}", "{{instance}}"),
        ),
        12,
        6,
    )
    grid.add(
        _up_timeline(
            "Backend up",
            catalog.BACKEND_UP.help,
            _target(_series(catalog.BACKEND_UP, **node), "{{instance}} {{backend}}"),
        ),
        12,
        6,
    )
    grid.add(
        _timeseries(
            "Scrape duration",
            "How long Prometheus took to scrape the exporter (scrape_duration_seconds).",
            [_target(f"scrape_duration_seconds{_selector(**node)}", "{{instance}}")],
            "s",
        ),
        8,
    )
    grid.add(
        _metric_panel(
            catalog.COLLECT_DURATION, "Collection duration", node, "{{instance}} {{backend}}"
        ),
        8,
    )
    grid.add(
        _timeseries(
            "Collection errors",
            catalog.COLLECT_ERRORS.help + " Per second.",
            [
                _target(
                    "sum by (instance, gpu_uuid) "
                    f"(rate({_series(catalog.COLLECT_ERRORS, **node)}[$__rate_interval]))"
                    " or on () vector(0)",
                    "{{instance}} {{gpu_uuid}}",
                )
            ],
            "short",
        ),
        8,
    )
    grid.add(
        _stat(
            "Seconds since the last collection",
            catalog.LAST_COLLECT.help,
            f"time() - {_series(catalog.LAST_COLLECT, **node)}",
            "s",
        ),
        6,
        6,
    )
    grid.add(
        _table(
            "Profiling fields supported",
            catalog.FIELD_SUPPORTED.help,
            [_target(_series(catalog.FIELD_SUPPORTED, **node), table=True)],
        ),
        9,
        6,
    )
    grid.add(
        _table(
            "Build",
            catalog.BUILD_INFO.help,
            [_target(_series(catalog.BUILD_INFO, **node), table=True)],
        ),
        9,
        6,
    )
    return _dashboard(
        EXPORTER_UID,
        "The exporter's own health: scrapes, collections, errors, backend, fields, build.",
        _node_variables(multi=False),
        grid,
    )


DASHBOARDS = {"mig-fleet": fleet, "mig-instance": instance, "migexporter": exporter}


def as_json(dashboard: g.Dashboard) -> str:
    """The dashboard as Grafana imports it, with stable key order."""
    data = dashboard.to_json_data()
    del data["__inputs"]  # grafanalib always writes it; the datasource variable replaces it
    return json.dumps(data, cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def files() -> dict[str, str]:
    """``NAME.json`` -> text of every dashboard."""
    return {f"{name}.json": as_json(build()) for name, build in DASHBOARDS.items()}


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of dashboard JSON, rows' children included."""
    for panel in data.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of dashboard JSON."""
    found = [
        (f"panel {panel['title']!r} {target.get('refId', '')}", target["expr"])
        for panel in panels(data)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    found += [
        (f"variable {variable['name']!r}", variable["query"])
        for variable in data["templating"]["list"]
        if variable.get("type") == "query"
    ]
    return found


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")
