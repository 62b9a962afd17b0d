"""Dashboard previews: each dashboard's panels drawn from a Prometheus's data into a PNG.

No Grafana needed: variables are resolved as Grafana resolves them (in order, each set to all of
its values), every panel's queries run through Prometheus's HTTP API, and matplotlib draws the
panels where their grid positions put them. The same resolution serves the test that proves
every query returns data.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migexporter.mixin import dashboards

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

# Grafana's built-in variables, as a dashboard open on the last minutes would set them.
BUILTINS = {"$__rate_interval": "10s", "$__range": "2m", "$__interval": "2s"}
_VARIABLE = re.compile(r"\$(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
GRID_ROW_INCHES = 0.3  # one Grafana grid unit of height
WIDTH_INCHES = 20.0
MAX_SERIES = 12  # per panel: a preview, not an archive
MAX_TABLE_ROWS = 8
TITLE_ROWS = 2
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PreviewError(Exception):
    """A preview cannot be drawn; the message is one line for the user."""


@dataclass(frozen=True)
class Prometheus:
    """The part of Prometheus's HTTP API the previews and their tests use."""

    url: str
    timeout_s: float = 10.0

    def get(self, path: str, **params: str) -> Any:
        """``data`` of a successful API answer; PreviewError with Prometheus's error otherwise."""
        url = f"{self.url.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with _OPENER.open(url, timeout=self.timeout_s) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            with error:
                body = json.loads(error.read() or b"{}")
        except (OSError, ValueError) as error:
            raise PreviewError(f"cannot query Prometheus at {self.url}: {error}") from error
        if body.get("status") != "success":
            raise PreviewError(f"{params.get('query', path)}: {body.get('error', body)}")
        return body["data"]

    def range(self, expr: str, window_s: float, step_s: float) -> list[dict[str, Any]]:
        """The series of a range query over the last ``window_s`` seconds."""
        now = time.time()
        data = self.get(
            "query_range", query=expr, start=str(now - window_s), end=str(now), step=str(step_s)
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, selector: str, label: str, window_s: float) -> list[str]:
        """The values ``label`` takes on the series of ``selector`` seen in the window."""
        now = time.time()
        series = self.get("series", **{"match[]": selector}, start=str(now - window_s))
        return sorted({s[label] for s in series if label in s})


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's built-ins and the dashboard's variables replaced."""
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), expr)


def resolve(
    prometheus: Prometheus, data: dict[str, Any], window_s: float, *, every_value: bool = False
) -> dict[str, str]:
    """Each query variable of dashboard JSON, set as Grafana sets it when the page opens.

    A multi-value variable takes all its values (a regex alternation), a single-value one its
    first value; with ``every_value``, every variable takes all its values. An optional variable
    without values (no cluster label in the data) matches everything, as Grafana's "All" does.

    Raises:
        PreviewError: a variable is not a label_values query or has no values.
    """
    values: dict[str, str] = {}
    for variable in data["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = substitute(variable["query"], values)
        match = dashboards.LABEL_VALUES.match(query)
        if match is None or not match["selector"]:
            raise PreviewError(f"variable {variable['name']}: not label_values(selector, label)")
        found = prometheus.label_values(match["selector"], match["label"], window_s)
        if not found and variable["name"] in dashboards.OPTIONAL_VARIABLES:
            values[variable["name"]] = variable.get("allValue") or ".*"  # Grafana's "All"
            continue
        if not found:
            raise PreviewError(f"variable {variable['name']} has no values: {query}")
        chosen = found if every_value or variable.get("multi") else found[:1]
        values[variable["name"]] = "(" + "|".join(chosen) + ")"
    return values


def _legend(template: str, labels: dict[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__")


def _scaled(unit: str) -> tuple[float, str]:
    """A factor and a suffix that put values of a Grafana unit in readable numbers."""
    return {
        "percentunit": (100.0, "%"),
        "bytes": (1 / 2**30, " GiB"),
        "hertz": (1e-6, " MHz"),
        "watt": (1.0, " W"),
        "celsius": (1.0, " °C"),
        "s": (1.0, " s"),
    }.get(unit, (1.0, ""))


def _state_color(defaults: dict[str, Any], value: float) -> str:
    """The colour Grafana gives ``value``: its value mapping, else its threshold step."""
    for mapping in defaults.get("mappings", []):
        for key, shown in mapping.get("options", {}).items():
            if float(key) == value:
                return "none" if shown["color"] == "transparent" else str(shown["color"])
    color = "gray"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return color


def _unit(panel: dict[str, Any]) -> str:
    unit: str = panel.get("fieldConfig", {}).get("defaults", {}).get("unit") or ""
    return unit or str(panel.get("format") or panel.get("options", {}).get("unit") or "")


@dataclass
class _Panel:
    """One panel being drawn: its JSON, its axes, and the queries' answers."""

    panel: dict[str, Any]
    axes: Axes
    results: list[tuple[dict[str, Any], list[dict[str, Any]]]]  # (target, series)
    step_s: float

    def draw(self) -> None:
        kind = self.panel["type"]
        self.axes.set_title(self.panel["title"], fontsize=9, loc="left")
        if not any(series for _, series in self.results):
            self._text("no data", 12)
        elif kind == "timeseries":
            self._lines()
        elif kind == "state-timeline":
            self._states()
        elif kind == "bargauge":
            self._bars()
        elif kind == "table":
            self._table()
        else:  # stat, gauge
            self._number()

    def _latest(self) -> list[tuple[str, float]]:
        return [
            (_legend(target.get("legendFormat", ""), s["metric"]), float(s["values"][-1][1]))
            for target, series in self.results
            for s in series[:MAX_SERIES]
        ]

    def _text(self, text: str, size: int) -> None:
        self.axes.text(0.5, 0.45, text, ha="center", va="center", fontsize=size)
        self.axes.set_axis_off()

    def _number(self) -> None:
        factor, suffix = _scaled(_unit(self.panel))
        value = sum(v for _, v in self._latest()) * factor
        self._text(f"{value:.3g}{suffix}", 26)

    def _lines(self) -> None:
        factor, suffix = _scaled(_unit(self.panel))
        for target, series in self.results:
            for s in series[:MAX_SERIES]:
                times = [float(t) - time.time() for t, _ in s["values"]]
                values = [float(v) * factor for _, v in s["values"]]
                label = _legend(target.get("legendFormat", ""), s["metric"])
                self.axes.plot(times, values, linewidth=1, label=label)
        self.axes.set_xlabel("seconds ago", fontsize=7)
        self.axes.set_ylabel(suffix.strip(), fontsize=7)
        self.axes.tick_params(labelsize=7)
        self.axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

    def _states(self) -> None:
        rows = [
            (_legend(target.get("legendFormat", ""), s["metric"]), s["values"])
            for target, series in self.results
            for s in series[:MAX_SERIES]
        ]
        defaults = self.panel.get("fieldConfig", {}).get("defaults", {})
        for y, (_, values) in enumerate(rows):
            for t, v in values:
                color = _state_color(defaults, float(v))
                self.axes.barh(y, self.step_s, left=float(t) - time.time(), color=color)
        self.axes.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=6)
        self.axes.tick_params(labelsize=7)

    def _bars(self) -> None:
        latest = self._latest()
        self.axes.barh([label for label, _ in latest], [v for _, v in latest], color="#47a")
        self.axes.tick_params(labelsize=7)

    def _table(self) -> None:
        rows = [s for _, series in self.results for s in series][:MAX_TABLE_ROWS]
        skip = {"__name__", "instance", "job"}
        columns = sorted({k for s in rows for k in s["metric"] if k not in skip})
        cells = [
            [s["metric"].get(c, "")[:24] for c in columns] + [f"{float(s['values'][-1][1]):.4g}"]
            for s in rows
        ]
        self.axes.set_axis_off()
        table = self.axes.table(cellText=cells, colLabels=[*columns, "value"], loc="upper center")
        table.auto_set_font_size(False)  # noqa: FBT003 (matplotlib's API)
        table.set_fontsize(6)


def draw(prometheus: Prometheus, name: str, out: Path, window_s: float = 600.0) -> Path:
    """Draw dashboard ``name`` from ``prometheus``'s last ``window_s`` seconds into out/NAME.png.

    Raises:
        PreviewError: matplotlib is missing, Prometheus cannot answer, or a variable is empty.
    """
    try:
        import matplotlib as mpl  # noqa: PLC0415 (optional: pip install 'migexporter[preview]')

        mpl.use("Agg")
        from matplotlib import pyplot as plt  # noqa: PLC0415
    except ImportError as error:
        raise PreviewError(
            "previews need matplotlib: pip install 'migexporter[preview]'"
        ) from error
    data = json.loads(dashboards.as_json(dashboards.DASHBOARDS[name]()))
    values = resolve(prometheus, data, window_s)
    panels = list(dashboards.panels(data))
    # Two grid units on top for the dashboard's title.
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + TITLE_ROWS
    figure = plt.figure(figsize=(WIDTH_INCHES, bottom * GRID_ROW_INCHES))
    figure.text(0.005, 1 - 1 / bottom, data["title"], fontsize=16, weight="bold", va="center")
    step = max(window_s / 150, 1.0)
    for panel in panels:
        pos = panel["gridPos"]
        left, width = pos["x"] / dashboards.WIDTH, pos["w"] / dashboards.WIDTH
        top = 1 - (pos["y"] + TITLE_ROWS) / bottom
        if panel["type"] == "row":
            figure.text(left + 0.005, top - 0.5 / bottom, panel["title"], fontsize=12, va="center")
            continue
        # Leave room for titles, tick labels and legends inside the panel's cell.
        height = pos["h"] / bottom
        axes = figure.add_axes(
            (left + width * 0.06, top - height * 0.85, width * 0.6, height * 0.68)
            if panel["type"] == "timeseries"
            else (left + width * 0.16, top - height * 0.85, width * 0.8, height * 0.7)
            if panel["type"] in {"bargauge", "state-timeline"}
            else (left + width * 0.03, top - height * 0.85, width * 0.9, height * 0.7)
        )
        results = [
            (target, prometheus.range(substitute(target["expr"], values), window_s, step))
            for target in panel["targets"]
        ]
        _Panel(panel, axes, results, step).draw()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def draw_all(prometheus: Prometheus, out: Path) -> list[Path]:
    """Every dashboard's preview; the paths written."""
    return [draw(prometheus, name, out) for name in dashboards.DASHBOARDS]
