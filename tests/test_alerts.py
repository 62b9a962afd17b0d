"""Alert rules: current with the generator, valid for promtool, and every alert unit-tested."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli_run import run_cli
from migexporter import catalog
from migexporter.mixin import alerts

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "alerts"
UNIT_TESTS = sorted((COMMITTED / "tests").glob("*.test.yml"))


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("needs promtool: apt-get install prometheus", pytrace=False)
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def test_committed_rules_are_what_the_generator_writes():
    """Regenerate with `migexporter alerts` when this fails."""
    assert (COMMITTED / alerts.RULE_FILE).read_text() == alerts.rule_file()
    assert (COMMITTED / alerts.PROMETHEUS_RULE).read_text() == alerts.prometheus_rule()


def test_prometheus_rule_wraps_the_same_groups():
    manifest = yaml.safe_load((COMMITTED / alerts.PROMETHEUS_RULE).read_text())
    rules = yaml.safe_load((COMMITTED / alerts.RULE_FILE).read_text())
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == rules["groups"]


def test_promtool_accepts_the_rules(tmp_path):
    done = _run(_promtool(), "check", "rules", str(COMMITTED / alerts.RULE_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    spec = yaml.safe_load((COMMITTED / alerts.PROMETHEUS_RULE).read_text())["spec"]
    unwrapped = tmp_path / "spec.yml"
    unwrapped.write_text(yaml.safe_dump(spec))
    done = _run(_promtool(), "check", "rules", str(unwrapped))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass():
    done = _run(_promtool(), "test", "rules", *map(str, UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def _rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of ``kind`` ("alert" or "record") in the generated groups."""
    return [rule for group in alerts.groups() for rule in group["rules"] if kind in rule]


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_silent():
    fired, silent = set(), set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules("alert")}
    assert names - fired == set()
    assert names - silent == set()


def test_every_recorded_series_has_its_values_checked():
    checked = {
        check["expr"]
        for path in UNIT_TESTS
        for case in yaml.safe_load(path.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
        if check.get("exp_samples")
    }
    assert {rule["record"] for rule in _rules("record")} - checked == set()


def test_recorded_names_follow_level_metric_operations():
    """``level:metric:operations``, the metric a catalog family without ``_ratio``/``_total``."""
    families = {m.name.removesuffix("_ratio").removesuffix("_total") for m in catalog.METRICS}
    for rule in _rules("record"):
        level, metric, operations = rule["record"].split(":")
        assert level, rule["record"]
        assert operations, rule["record"]
        assert metric in families, rule["record"]


def test_every_alert_has_a_runbook_section():
    runbook = (COMMITTED / "README.md").read_text().lower()
    for rule in _rules("alert"):
        assert f"### {rule['alert'].lower()}" in runbook, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_every_paging_recovery_action_has_its_instructions_and_exists_in_nvml():
    """The page's description has a step for each action that pages, and each is one NVML
    names: a renamed action would otherwise silently stop paging."""
    assert set(alerts.RECOVERY_PAGE) == set(catalog.RECOVERY_ACTIONS_THAT_PAGE)
    assert set(catalog.RECOVERY_ACTIONS_THAT_PAGE) <= set(catalog.RECOVERY_ACTIONS.values())


def test_every_group_has_its_interval():
    """Each group sets its own interval, so none depends on the server's global setting."""
    for group in alerts.groups():
        assert group["interval"] in {"15s", "1m"}, group["name"]
    shortened = alerts.groups(interval="1s")
    assert {group["interval"] for group in shortened} == {"1s"}


def test_cli_writes_the_rules(tmp_path):
    done = run_cli("alerts", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / alerts.RULE_FILE).read_text() == (COMMITTED / alerts.RULE_FILE).read_text()


def test_cli_bad_flag_is_one_line_and_status_2():
    done = run_cli("alerts", "--nope")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["migexporter alerts: error: unrecognized arguments: --nope"]


def _amtool() -> str:
    found = shutil.which("amtool")
    if found is None:
        pytest.fail("needs amtool: apt-get install prometheus-alertmanager", pytrace=False)
    return found


def test_amtool_accepts_the_alertmanager_example():
    done = _run(_amtool(), "check-config", str(COMMITTED / "alertmanager.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=MigXid48DoubleBitEcc"], "pager"),
        (["severity=critical", "alertname=MigGpuLost"], "pager"),
        (["severity=critical", "alertname=MigGpuRecoveryActionRequired"], "pager"),
        (["severity=warning", "alertname=MigGpuRecoveryActionRequested"], "ticket"),
        (["severity=warning", "alertname=MigXid43GpuStoppedProcessing"], "ticket"),
        (["severity=info", "alertname=MigInstanceIdle"], "blackhole"),
        (["alertname=SomethingElse"], "ticket"),
    ],
)
def test_alertmanager_routes(labels, receiver):
    done = _run(
        _amtool(),
        "config",
        "routes",
        "test",
        f"--config.file={COMMITTED / 'alertmanager.yml'}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert done.returncode == 0, done.stdout + done.stderr
