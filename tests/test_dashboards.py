"""Dashboards: the committed JSON is what the generator writes, and it is well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_run import run_cli
from migexporter import catalog
from migexporter.mixin import dashboards

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "dashboards"
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "gauge", "state-timeline", "heatmap"}
CATALOG_UNITS = {metric.name: dashboards.UNITS[metric.unit] for metric in catalog.METRICS}


def _load(name: str) -> dict:
    return json.loads((COMMITTED / f"{name}.json").read_text())


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_committed_json_is_what_the_generator_writes(name):
    """Regenerate with `migexporter dashboards` when this fails."""
    generated = dashboards.as_json(dashboards.DASHBOARDS[name]())
    assert (COMMITTED / f"{name}.json").read_text() == generated


def test_cli_writes_the_three_dashboards(tmp_path):
    done = run_cli("dashboards", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in dashboards.DASHBOARDS:
        assert (tmp_path / f"{name}.json").read_text() == (COMMITTED / f"{name}.json").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--bogus"], "unrecognized arguments"), (["--out", "/proc/no/such"], "cannot write")],
)
def test_cli_bad_input_is_one_line_and_status_2(args, message):
    done = run_cli("dashboards", *args)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("migexporter dashboards: error:")
    assert message in lines[0]


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_panels_are_well_formed(name):
    """Unique ids, Grafana 11 types, the datasource variable, a description, a target each."""
    data = _load(name)
    panels = list(dashboards.panels(data))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"] == "${datasource}", panel["title"]
        assert panel.get("description"), panel["title"]
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_panels_do_not_overlap(name):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboards.panels(_load(name)):
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= dashboards.WIDTH, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_variables_use_the_datasource_variable_and_refresh_on_time_change(name):
    data = _load(name)
    assert "__inputs" not in data
    assert data["uid"] in dashboards.TITLES
    variables = data["templating"]["list"]
    assert variables[0]["type"] == "datasource"
    for variable in variables[1:]:
        assert variable["datasource"] == "${datasource}", variable["name"]
        assert variable["refresh"] == dashboards.REFRESH_ON_TIME_RANGE_CHANGE, variable["name"]


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_a_panel_showing_one_catalog_metric_uses_its_unit(name):
    """Ratios as percent units, bytes as bytes, and so on, wherever a panel plots a metric."""
    checked = 0
    for panel in dashboards.panels(_load(name)):
        if panel["type"] not in {"timeseries", "stat", "gauge"}:
            continue
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit") or panel.get("format")
        for target in panel["targets"]:
            metric = target["expr"].split("{", 1)[0]
            if metric in CATALOG_UNITS and re.fullmatch(r"[a-z_]+\{[^}]*\}", target["expr"]):
                assert unit == CATALOG_UNITS[metric], (panel["title"], metric, unit)
                checked += 1
    assert checked > 0


def test_ratio_panels_are_bounded_0_to_1():
    for name in dashboards.DASHBOARDS:
        for panel in dashboards.panels(_load(name)):
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if defaults.get("unit") == "percentunit" and panel["type"] == "timeseries":
                assert (defaults.get("min"), defaults.get("max")) == (0, 1), panel["title"]
