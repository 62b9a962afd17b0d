"""The metric catalog follows Prometheus naming rules and is the only place names are typed."""

from __future__ import annotations

import re
from pathlib import Path

import pynvml
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
    """GPU and GPU-instance scopes have ratios 1001-1008; compute instances 1001-1004."""
    ratios = set(range(1001, 1009))
    assert set(catalog.PROFILING[Scope.GPU]) == ratios
    assert set(catalog.PROFILING[Scope.GPU_INSTANCE]) == ratios
    assert set(catalog.PROFILING[Scope.COMPUTE_INSTANCE]) == {1001, 1002, 1003, 1004}
    assert set(catalog.ACTIVITY_FIELDS) <= set(catalog.PROFILING[Scope.COMPUTE_INSTANCE]) | {1005}


# dcgm-exporter 4.8's etc/default-counters.csv (NVIDIA/dcgm-exporter d5e5f51, near 4.5.3-4.8.2):
# every uncommented field but the driver-version label, vGPU licence status (vGPU guests only)
# and the last-XID gauge (our XID counters replace it), by DCGM field id.
DCGM_EXPORTER_DEFAULTS = {
    100: "DCGM_FI_DEV_SM_CLOCK",
    101: "DCGM_FI_DEV_MEM_CLOCK",
    140: "DCGM_FI_DEV_MEMORY_TEMP",
    150: "DCGM_FI_DEV_GPU_TEMP",
    155: "DCGM_FI_DEV_POWER_USAGE",
    156: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    202: "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    203: "DCGM_FI_DEV_GPU_UTIL",
    204: "DCGM_FI_DEV_MEM_COPY_UTIL",
    206: "DCGM_FI_DEV_ENC_UTIL",
    207: "DCGM_FI_DEV_DEC_UTIL",
    251: "DCGM_FI_DEV_FB_FREE",
    252: "DCGM_FI_DEV_FB_USED",
    253: "DCGM_FI_DEV_FB_RESERVED",
    449: "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    393: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    394: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    395: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    1001: "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    1004: "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    1005: "DCGM_FI_PROF_DRAM_ACTIVE",
    1009: "DCGM_FI_PROF_PCIE_TX_BYTES",
    1010: "DCGM_FI_PROF_PCIE_RX_BYTES",
}


def test_every_dcgm_exporter_default_counter_has_a_gpu_family():
    """A superset of dcgm-exporter's defaults: each field is a family of the physical GPU."""
    gpu = [m for m in METRICS if m.scope is Scope.GPU]
    # A family may hold a pair of fields as a label's values: 1010 is 1009's rx.
    fields = {m.dcgm_field for m in gpu} | {f for m in gpu for _, f in m.dcgm_fields}
    assert [name for f, name in DCGM_EXPORTER_DEFAULTS.items() if f not in fields] == []
    assert {1006, 1007, 1008, 1011, 1012, 112, 240, 241} <= fields  # beyond the defaults


def test_paired_fields_name_values_of_the_first_extra_label():
    """Each value a dcgm_fields pair names is a value of the family's first extra label."""
    for metric in METRICS:
        if metric.dcgm_fields:
            assert metric.extra_labels
            assert metric.dcgm_field == metric.dcgm_fields[0][1]
            assert len({value for value, _ in metric.dcgm_fields}) == len(metric.dcgm_fields)


def test_recovery_actions_are_the_bindings_names_in_lower_case():
    """Every NVML_GPU_RECOVERY_ACTION_* of the installed pynvml, by its value."""
    prefix = "NVML_GPU_RECOVERY_ACTION_"
    named = {
        v: n.removeprefix(prefix).lower() for n, v in vars(pynvml).items() if n.startswith(prefix)
    }
    actions = catalog.RECOVERY_ACTIONS
    assert actions == named
    assert actions[0] == "none"
    assert actions[pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET] == "drain_and_reset"


def test_the_recovery_action_state_set_marks_the_current_action_only():
    """One state per named action, true for the current one; an unnamed code adds its number."""
    named = list(catalog.RECOVERY_ACTIONS.values())
    reset = catalog.recovery_action_states(pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET)
    assert list(reset) == named
    assert [action for action, current in reset.items() if current] == ["gpu_reset"]
    unnamed = catalog.recovery_action_states(99)
    assert list(unnamed) == [*named, "99"]
    assert [action for action, current in unnamed.items() if current] == ["99"]
    assert catalog.recovery_action_name(99) == "99"


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
