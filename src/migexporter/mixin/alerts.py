"""Prometheus alert rules, built from the metric catalog and the XID catalog.

``migexporter alerts --out DIR`` writes them as a plain rule file and as a Kubernetes
``PrometheusRule`` wrapping the same groups. Severity labels: ``critical`` pages, ``warning``
opens a ticket, ``info`` is for dashboards and reports. Every alert names its runbook section in
``alerts/README.md``.

XID counters need care (facts: dashboards-alerts-conventions §3.4): a page-severity XID series
starts at 0, so its first event is an increase; any other series is born at 1, which
``increase`` cannot see, so a series that did not exist one window ago and is above 0 fires too.
An exporter restart resets counters to 0, which ``increase`` treats as a reset, not an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from migexporter import catalog, xids

JOB = "migexporter"  # the scrape job the exporter-down rules watch
XID_WINDOW = "5m"  # an XID alert fires for this long after the event, then resolves
XID43_BURST, XID43_BURST_WINDOW = 3, "10m"
MEMORY_FULL_RATIO = 0.95
# Below this GR-engine activity an allocated instance counts as idle (the idle alert and the
# fleet dashboard's idle count); idle in every 30 m window for 3 h to alert.
IDLE_RATIO, IDLE_WINDOW, IDLE_FOR = 0.05, "30m", "3h"
RUNBOOK = "https://github.com/migexporter/migexporter/blob/main/alerts/README.md"
RULE_FILE, PROMETHEUS_RULE = "migexporter.rules.yml", "prometheusrule.yaml"

_GI_KEY = "instance, gpu_uuid, gpu_instance_id"
_WHERE = "{{ $labels.instance }} GPU {{ $labels.gpu }} ({{ $labels.gpu_uuid }})"
_INSTANCE = (
    "{{ with $labels.gpu_instance_id }} GPU instance {{ . }}{{ end }}"
    "{{ with $labels.profile }} ({{ . }}){{ end }}"
)


def _events(selector: str, window: str) -> str:
    """XID events of ``selector`` within ``window``, per series.

    A series that existed before the window counts its increase; one born within it, its whole
    value ("* 1" drops the metric name, so that both branches carry the same label sets).
    """
    counter = f"{catalog.XID_ERRORS.name}{{{selector}}}"
    return f"({counter} unless {counter} offset {window}) * 1 or increase({counter}[{window}])"


def _with_profile(expr: str) -> str:
    """``expr`` with its GPU instance's profile joined in.

    A series the driver did not attribute to an instance (or of an instance since destroyed)
    keeps no profile label.
    """
    info = catalog.GPU_INSTANCE_INFO.name
    joined = f"({expr}) * on ({_GI_KEY}) group_left (profile) {info}"
    return f"({joined} or ({expr}) unless on ({_GI_KEY}) {info})"


def _xid_events(selector: str, window: str) -> str:
    """The XID series of ``selector`` with an event within ``window``, profile and catalog row."""
    return (
        f"{_with_profile(f'({_events(selector, window)}) > 0')} * on (instance, xid)"
        f" group_left (mnemonic, description, action) {catalog.XID_INFO.name}"
    )


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``name`` is also its runbook section in alerts/README.md."""

    name: str
    expr: str
    severity: str  # critical (pages), warning (tickets) or info
    summary: str
    description: str
    wait: str = "0m"  # the rule's ``for``

    def rule(self) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.wait != "0m":
            rule["for"] = self.wait
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{RUNBOOK}#{self.name.lower()}",
        }
        return rule


def _codes(severity: xids.Severity, *, leave_out: tuple[int, ...] = ()) -> str:
    codes = [
        str(code)
        for code, row in sorted(xids.CATALOG.items())
        if row.severity is severity and code not in leave_out
    ]
    return "|".join(codes)


def _xid_alerts(window: str, burst_window: str) -> list[Alert]:
    action = "NVIDIA's action: {{ $labels.action }} ({{ $labels.mnemonic }})."
    attributed_43 = _events('xid="43", gpu_instance_id!=""', burst_window)
    burst = f"sum by ({_GI_KEY}, gpu, xid) ({attributed_43}) >= {XID43_BURST}"
    return [
        Alert(
            "MigXid48DoubleBitEcc",
            _xid_events('xid="48"', window),
            "critical",
            f"XID 48 (double-bit ECC) on {_WHERE}{_INSTANCE}",
            "Uncorrectable memory error. Cordon the node, drain the instance's workloads, reset "
            "the GPU (or reboot). If it repeats, check row remapping "
            f"({catalog.GPU_ROW_REMAP_FAILED.name}) and the RMA thresholds. {action}",
        ),
        Alert(
            "MigXid43Burst",
            _with_profile(burst),
            "critical",
            f"{XID43_BURST}+ XID 43 in {burst_window} on {_WHERE}{_INSTANCE}",
            "The GPU instance keeps stopping: it is a bad neighbour, not one crashed "
            "application. Drain its workloads and recreate the GPU instance; reset the GPU if "
            "it comes back.",
        ),
        Alert(
            "MigXid43GpuStoppedProcessing",
            _xid_events('xid="43"', window),
            "warning",
            f"XID 43 (GPU stopped processing) on {_WHERE}{_INSTANCE}",
            "One application's work was stopped; the GPU stays healthy (NVIDIA: no action on "
            f"the GPU). Tell the workload's owner. {action}",
        ),
        Alert(
            "MigXidCritical",
            _xid_events(f'xid=~"{_codes(xids.Severity.PAGE, leave_out=(43, 48))}"', window),
            "critical",
            f"XID {{{{ $labels.xid }}}} ({{{{ $labels.mnemonic }}}}) on {_WHERE}{_INSTANCE}",
            f"{{{{ $labels.description }}}}. {action} Act on the GPU now.",
        ),
        Alert(
            "MigXidWarning",
            _xid_events(f'xid=~"{_codes(xids.Severity.TICKET)}"', window),
            "warning",
            f"XID {{{{ $labels.xid }}}} ({{{{ $labels.mnemonic }}}}) on {_WHERE}{_INSTANCE}",
            f"{{{{ $labels.description }}}}. {action} Open a ticket; watch for repeats.",
        ),
    ]


def _health_alerts() -> list[Alert]:
    used, total = catalog.GI_MEMORY_USED.name, catalog.GI_MEMORY_TOTAL.name
    gr, gi_info = catalog.GI_GR_ENGINE_ACTIVE.name, catalog.GPU_INSTANCE_INFO.name
    return [
        Alert(
            "MigGpuLost",
            f"{catalog.GPU_UP.name} == 0",
            "critical",
            f"GPU lost: {_WHERE}",
            "The GPU does not answer (fallen off the bus, hung, or failing). Its other alerts "
            "are inhibited. Drain the node and reset the GPU or reboot.",
            "1m",
        ),
        Alert(
            "MigExporterDown",
            f'up{{job="{JOB}"}} == 0',
            "critical",
            "migexporter on {{ $labels.instance }} is down",
            "Prometheus cannot scrape the exporter: the node's GPUs are not watched and no XID "
            "reaches a pager. Check the exporter's pod or service and its logs.",
            "2m",
        ),
        Alert(
            "MigExporterAbsent",
            f'absent(up{{job="{JOB}"}})',
            "warning",
            f"No migexporter target in job {JOB}",
            "Prometheus has no migexporter target at all: service discovery or the scrape "
            "configuration lost it.",
            "10m",
        ),
        Alert(
            "MigExporterBackendDown",
            f"{catalog.BACKEND_UP.name} == 0",
            "critical",
            "migexporter on {{ $labels.instance }}: backend {{ $labels.backend }} is down",
            "The exporter answers but cannot read the GPUs (driver or DCGM host engine gone): "
            "no XID reaches a pager. Check the driver, nv-hostengine and the exporter's log.",
            "2m",
        ),
        Alert(
            "MigExporterPodResourcesDown",
            f"{catalog.POD_RESOURCES_UP.name} == 0",
            "warning",
            "migexporter on {{ $labels.instance }} cannot ask the kubelet which pods hold GPUs",
            "The kubelet's pod-resources socket does not answer: namespace, pod and container "
            "labels go once the last answer is older than --pod-max-age, and new XIDs are "
            "counted without them. Check the kubelet and the socket mount.",
            "10m",
        ),
        Alert(
            "MigInstanceMemoryFull",
            f"{used} / {total} > {MEMORY_FULL_RATIO}",
            "warning",
            f"Memory of {_WHERE}{_INSTANCE} above {MEMORY_FULL_RATIO:.0%}",
            "The workload fills its GPU instance's own memory: a model too large for its "
            "slice. Move it to a larger profile or shrink its batch.",
            "5m",
        ),
        Alert(
            "MigProfilingMissing",
            f"max by ({_GI_KEY}, gpu, profile) ({gi_info}) unless on ({_GI_KEY}) {gr}",
            "warning",
            f"No profiling data for {_WHERE}{_INSTANCE}",
            "The GPU instance exists but its DCGM/GPM activity is not reported: check "
            f"{catalog.FIELD_SUPPORTED.name}, the DCGM host engine, and whether another "
            "profiler holds the counters.",
            "15m",
        ),
        Alert(
            "MigInstanceIdle",
            f"(avg_over_time({gr}[{IDLE_WINDOW}]) < {IDLE_RATIO})"
            f' * on ({_GI_KEY}) group_left (namespace, pod, container) {gi_info}{{pod!=""}}',
            "info",
            f"Idle for {IDLE_FOR}: {_WHERE}{_INSTANCE}, allocated to "
            "{{ $labels.namespace }}/{{ $labels.pod }}",
            f"The GPU instance is allocated to a pod but its GR engine was active less than "
            f"{IDLE_RATIO:.0%} of the time for {IDLE_FOR}: capacity held but unused.",
            IDLE_FOR,
        ),
    ]


def groups(
    xid_window: str = XID_WINDOW, burst_window: str = XID43_BURST_WINDOW
) -> list[dict[str, Any]]:
    """The rule groups; the windows are parameters so that an end-to-end test can shorten them."""
    xid_rules = [alert.rule() for alert in _xid_alerts(xid_window, burst_window)]
    return [
        {"name": "migexporter-xid", "rules": xid_rules},
        {"name": "migexporter-health", "rules": [alert.rule() for alert in _health_alerts()]},
    ]


def rule_file() -> str:
    """The plain Prometheus rule file."""
    return _dump({"groups": groups()})


def prometheus_rule() -> str:
    """The same groups as a prometheus-operator ``PrometheusRule``."""
    return _dump(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": JOB, "labels": {"app.kubernetes.io/name": JOB}},
            "spec": {"groups": groups()},
        }
    )


def _dump(data: dict[str, Any]) -> str:
    header = "# Generated by `migexporter alerts`; edit src/migexporter/mixin/alerts.py instead.\n"
    return header + yaml.safe_dump(data, sort_keys=False, width=1 << 16, allow_unicode=True)


def files() -> dict[str, str]:
    """File name -> text of the rule file and the PrometheusRule."""
    return {RULE_FILE: rule_file(), PROMETHEUS_RULE: prometheus_rule()}
