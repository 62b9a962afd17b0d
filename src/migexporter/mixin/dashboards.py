"""Grafana dashboards, built with grafanalib from the metric catalog.

Three dashboards: the MIG fleet, one MIG instance in depth, and the exporter's own health. Every
metric name comes from ``catalog``; every panel queries the ``datasource`` variable; panels are
Grafana 11 types only. ``write`` puts the JSON in a directory (``migexporter dashboards``), and
``queries`` lists every PromQL expression a dashboard runs, for the tests that run them all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from migexporter import catalog
from migexporter.mixin import alerts

if TYPE_CHECKING:
    from collections.abc import Iterator

DATASOURCE = "${datasource}"
WIDTH = 24  # Grafana's grid is 24 columns wide
REFRESH_ON_TIME_RANGE_CHANGE = 2  # so that instances created since the page loaded appear
SCHEMA_VERSION = 39  # Grafana 11's schema; nothing in these dashboards needs a migration
TAGS = ["migexporter", "gpu", "mig"]
FLEET_UID, INSTANCE_UID, EXPORTER_UID = "migexporter-fleet", "migexporter-instance", "migexporter"
# Compute slices a GPU instance can hold (A30 up to 4, A100/H100/H200 up to 7): the weights of
# the slice-weighted roll-up, since the slice count is a label of the instance's info series.
SLICE_COUNTS = (1, 2, 3, 4, 7)
TITLES = {FLEET_UID: "MIG fleet", INSTANCE_UID: "MIG instance", EXPORTER_UID: "migexporter"}
# Short panel titles of the profiling fields, by DCGM field id.
FIELD_TITLES = {
    1001: "GR engine active",
    1002: "SM active",
    1003: "SM occupancy",
    1004: "Tensor pipes active",
    1005: "DRAM active",
}

GI_LEGEND = "{{instance}} GPU {{gpu}} GI {{gpu_instance_id}} ({{profile}})"
GPU_LEGEND = "{{instance}} GPU {{gpu}}"
CI_LEGEND = "GI {{gpu_instance_id}} CI {{compute_instance_id}} ({{profile}})"

# Grafana units per catalog unit; ratios are 0-1, shown as percent.
UNITS = {
    "ratio": "percentunit",
    "bytes": "bytes",
    "celsius": "celsius",
    "watts": "watt",
    "hertz": "hertz",
    "joules": "joule",
    "seconds": "s",
    "": "short",
}


def _selector(**matchers: str) -> str:
    """``{k=~"v", ...}`` from keyword matchers; a value starting with ``=`` is an exact match."""
    parts = []
    for label, value in matchers.items():
        op, text = ("=", value[1:]) if value.startswith("=") else ("=~", value)
        parts.append(f'{label}{op}"{text}"')
    return "{" + ", ".join(parts) + "}"


def _series(metric: catalog.Metric, **matchers: str) -> str:
    return metric.name + (_selector(**matchers) if matchers else "")


# The filters of each dashboard's variables, as matchers.
FLEET = {"instance": "$node", "gpu_uuid": "$gpu"}
FLEET_GI = {**FLEET, "profile": "$profile"}
ONE_GI = {"instance": "$node", "gpu_uuid": "$gpu", "gpu_instance_id": "$gpu_instance"}


@dataclass
class _Grid:
    """Places panels left to right, wrapping at the grid's width; rows span the width."""

    panels: list[g.Panel] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def row(self, title: str) -> None:
        self._wrap()
        self.panels.append(g.RowPanel(title=title, gridPos=g.GridPos(1, WIDTH, 0, self.y)))
        self.y += 1

    def add(self, panel: g.Panel, width: int, height: int = 8) -> None:
        if self.x + width > WIDTH:
            self._wrap()
        panel.gridPos = g.GridPos(height, width, self.x, self.y)
        self.panels.append(panel)
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


def _up_timeline(title: str, description: str, target: g.Target) -> g.StateTimeline:
    """A 0/1 series over time, shown as up (green) and down (red)."""
    return g.StateTimeline(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=[target],
        mappings=[
            {"type": "value", "options": {"1": {"text": "up", "color": "green"}}},
            {"type": "value", "options": {"0": {"text": "down", "color": "red"}}},
        ],
    )


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


def _variable(name: str, label: str, query: str, *, multi: bool = True) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=DATASOURCE,
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
        includeAll=multi,
        multi=multi,
        allValue=".*" if multi else None,
        sort=3,  # numerically ascending: GPU 2 before GPU 10
    )


def _label_values(metric: catalog.Metric, label: str, **matchers: str) -> str:
    return f"label_values({_series(metric, **matchers)}, {label})"


def _node_variable() -> g.Template:
    # The scrape target: every migexporter announces itself with its build info.
    return _variable("node", "Node", _label_values(catalog.BUILD_INFO, "instance"))


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


def _weights(matchers: dict[str, str]) -> str:
    """Each GPU instance's compute slices as its value: one branch per possible slice count."""
    info = catalog.GPU_INSTANCE_INFO
    return " or ".join(f"({_series(info, **matchers, slices=f'={n}')} * {n})" for n in SLICE_COUNTS)


# --- MIG fleet ----------------------------------------------------------------------------------
def fleet() -> g.Dashboard:
    """Every MIG instance of the chosen nodes and GPUs: capacity, compute, memory, XIDs, health."""
    grid = _Grid()
    gi_info = _series(catalog.GPU_INSTANCE_INFO, **FLEET_GI)
    grid.row("Capacity")
    grid.add(
        _stat(
            "GPUs in MIG mode",
            "Physical GPUs with MIG enabled.",
            f"count({_series(catalog.GPU_INFO, **FLEET, mig_mode='=enabled')}) or vector(0)",
        ),
        4,
        6,
    )
    grid.add(
        _stat(
            "GPU instances",
            "MIG GPU instances of the selected profiles.",
            f"count({gi_info}) or vector(0)",
        ),
        4,
        6,
    )
    grid.add(
        _stat(
            "Idle instances",
            f"GPU instances whose GR engine was active less than {alerts.IDLE_RATIO:.0%} of the "
            "time over the dashboard's range: capacity held but unused.",
            f"count(avg_over_time({_series(catalog.GI_GR_ENGINE_ACTIVE, **FLEET_GI)}[$__range])"
            f" < {alerts.IDLE_RATIO}) or vector(0)",
        ),
        4,
        6,
    )
    by_profile = g.BarGauge(
        title="Instances by profile",
        description="How many GPU instances of each MIG profile exist.",
        dataSource=DATASOURCE,
        targets=[_target(f"count by (profile) ({gi_info})", "{{profile}}")],
        orientation="horizontal",
        displayMode="basic",
        calc="lastNotNull",
        min=0,
        thresholds=[{"color": "blue", "value": None}],
    )
    grid.add(by_profile, 12, 6)
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
    grid.add(slices, 24, 8)

    grid.row("Compute per GPU instance (DCGM fields 1001-1005)")
    for field_id, metric in catalog.PROFILING[catalog.Scope.GPU_INSTANCE].items():
        grid.add(_metric_panel(metric, FIELD_TITLES[field_id], FLEET_GI, GI_LEGEND), 12)
    weighted = (
        f"sum by (instance, gpu, gpu_uuid) ({_series(catalog.GI_GR_ENGINE_ACTIVE, **FLEET)}"
        f" * on (instance, gpu_uuid, gpu_instance_id) group_left () ({_weights(FLEET)}))"
        f" / on (instance, gpu_uuid) group_left () ({capacity} > 0)"
    )
    grid.add(
        _timeseries(
            "Physical GPU activity (slice-weighted)",
            "Each GPU instance's GR-engine activity weighted by its share of the GPU's compute "
            "slices, summed per physical GPU: how busy the whole card is.",
            [_target(weighted, GPU_LEGEND)],
            "percentunit",
        ),
        12,
    )

    grid.row("Memory per GPU instance")
    mem_used = _series(catalog.GI_MEMORY_USED, **FLEET_GI)
    mem_total = _series(catalog.GI_MEMORY_TOTAL, **FLEET_GI)
    grid.add(_metric_panel(catalog.GI_MEMORY_USED, "Memory used", FLEET_GI, GI_LEGEND), 8)
    grid.add(_metric_panel(catalog.GI_MEMORY_TOTAL, "Memory size", FLEET_GI, GI_LEGEND), 8)
    grid.add(
        _timeseries(
            "Memory used / instance size",
            "Frame buffer in use as a fraction of the GPU instance's own memory, not the card's.",
            [_target(f"{mem_used} / {mem_total}", GI_LEGEND)],
            "percentunit",
        ),
        8,
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

    grid.row("XID errors")
    _xid_panels(
        grid, FLEET, "{{instance}} GPU {{gpu}} GI {{gpu_instance_id}} XID {{xid}} {{action}}"
    )

    grid.row("Device health (once per physical GPU)")
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
    grid.add(
        _up_timeline(
            "GPU up", catalog.GPU_UP.help, _target(_series(catalog.GPU_UP, **FLEET), GPU_LEGEND)
        ),
        24,
        6,
    )
    return _dashboard(
        FLEET_UID,
        "Every MIG GPU instance of the fleet: capacity, activity (DCGM fields 1001-1005), memory, "
        "XID errors with NVIDIA's recommended action, and physical-GPU health. By migexporter.",
        [
            _node_variable(),
            _variable(
                "gpu",
                "GPU",
                _label_values(catalog.GPU_INFO, "gpu_uuid", instance="$node"),
            ),
            _variable(
                "profile",
                "Profile",
                _label_values(catalog.GPU_INSTANCE_INFO, "profile", **FLEET),
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
    xids = _series(catalog.XID_ERRORS, **matchers)
    info = catalog.XID_INFO.name
    recent = (
        f"sum by (instance, gpu, gpu_instance_id, compute_instance_id, xid)"
        f" (increase({xids}[$__rate_interval]))"
        f" * on (instance, xid) group_left (mnemonic, action, severity) {info}"
    )
    grid.add(
        g.StateTimeline(
            title="XID events over time",
            description="XID errors per GPU instance and XID in each interval (0: none), labelled "
            "with NVIDIA's immediate action from the XID catalog.",
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
    totals = f"(sum by ({where}) ({xids}) > 0)"
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
    activity = [
        _target(_series(metric, **ONE_GI), FIELD_TITLES[field_id], chr(ord("A") + i))
        for i, (field_id, metric) in enumerate(
            catalog.PROFILING[catalog.Scope.GPU_INSTANCE].items()
        )
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
            "Memory used and size",
            f"{catalog.GI_MEMORY_USED.help} Dashed: {catalog.GI_MEMORY_TOTAL.help.lower()}",
            [_target(used, "used", "A"), _target(total, "size", "B")],
            "bytes",
        ),
        24,
    )
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
    _xid_panels(grid, ONE_GI, "CI {{compute_instance_id}} XID {{xid}} {{action}}")
    return _dashboard(
        INSTANCE_UID,
        "One MIG GPU instance in depth: its activity, memory, compute instances and XID history. "
        "By migexporter.",
        [
            _node_variable(),
            _variable(
                "gpu",
                "GPU",
                _label_values(catalog.GPU_INFO, "gpu_uuid", instance="$node", mig_mode="=enabled"),
                multi=False,
            ),
            _variable(
                "gpu_instance",
                "GPU instance",
                _label_values(
                    catalog.GPU_INSTANCE_INFO, "gpu_instance_id", instance="$node", gpu_uuid="$gpu"
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
    node = {"instance": "$node"}
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
        [_node_variable()],
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
