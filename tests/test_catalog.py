"""The metric catalog follows Prometheus naming rules and is the only place names are typed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migexporter import catalog, xids
from migexporter.catalog import METRICS, Kind, Scope

ROOT = Path(__file__).resolve().parents[1]
SCOPE_PREFIX = {
    Scope.GPU: "nvidia_gpu_",
    Scope.GPU_INSTANCE: "nvidia_gpu_instance_",
    Scope.COMPUTE_INSTANCE: "nvidia_compute_instance_",
    Scope.EVENT: "nvidia_gpu_",
    Scope.EXPORTER: "migexporter_",
}


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_names_follow_conventions(metric):
    """snake_case, a scope prefix, _total on counters, _info on infos, the unit as suffix."""
    assert re.fullmatch(r"[a-z][a-z0-9_]*", metric.name)
    assert metric.name.startswith(SCOPE_PREFIX[metric.scope])
    if metric.scope is Scope.GPU:
        assert not metric.name.startswith(("nvidia_gpu_instance_", "nvidia_gpu_xid_"))
        assert not metric.name.endswith("_events_total")
    if metric.scope is Scope.EVENT:  # says that it counts events, not a device state
        assert metric.name.startswith("nvidia_gpu_xid_") or metric.name.endswith("_events_total")
    assert metric.name.endswith("_total") == (metric.kind is Kind.COUNTER)
    assert metric.name.endswith("_info") == (metric.kind is Kind.INFO)
    if metric.unit:
        assert metric.name.removesuffix("_total").endswith("_" + metric.unit)
    assert "instance" not in metric.labels
    assert len(set(metric.labels)) == len(metric.labels)


def test_names_and_help_are_unique():
    """No family is defined twice and no help text is copied."""
    assert len({m.name for m in METRICS}) == len(METRICS)
    assert len({m.help for m in METRICS}) == len(METRICS)


def test_profiling_ratios_cover_dcgm_fields_per_scope():
    """GPU and GPU-instance scopes have all five fields 1001-1005; compute instances 1001-1004."""
    assert set(catalog.PROFILING[Scope.GPU]) == set(catalog.PROFILING_FIELDS)
    assert set(catalog.PROFILING[Scope.GPU_INSTANCE]) == set(catalog.PROFILING_FIELDS)
    assert set(catalog.PROFILING[Scope.COMPUTE_INSTANCE]) == {1001, 1002, 1003, 1004}


def test_metric_names_live_only_in_the_catalog():
    """No source module outside catalog.py types a metric name."""
    offenders = []
    for path in (ROOT / "src" / "migexporter").rglob("*.py"):
        if path.name == "catalog.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {m.name}" for m in METRICS if m.name in text]
    assert offenders == []


@pytest.mark.parametrize(
    ("marker", "table"), [("metrics", catalog.markdown_table), ("xids", xids.markdown_table)]
)
def test_readme_tables_are_generated_from_the_catalogs(marker, table):
    """The README's metric and XID tables match the code (run `make readme`)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"<!-- {marker}:start -->\n") + len(f"<!-- {marker}:start -->\n")
    end = readme.index(f"<!-- {marker}:end -->")
    assert readme[start:end] == table()
