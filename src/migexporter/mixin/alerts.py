"""The rule file: the recording rules of ``rules`` and the alert rules, from the catalogs.

``migexporter alerts --out DIR`` writes them as a plain rule file and as a Kubernetes
``PrometheusRule`` wrapping the same groups. Severity labels: ``critical`` pages, ``warning``
opens a ticket, ``info`` is for dashboards and reports. Every alert names its runbook section in
``alerts/README.md``.

Every alert costs little at any fleet size (facts: dashboards-alerts-conventions §3.4 on why
XID counters need care). An XID alert compares the time of the latest event of each series
(``catalog.XID_LAST``), which changes only when an event arrives, with the evaluation time: one
instant selector over the series that ever had an event, no range and no ``offset``. So the
first event pages, a series born with its event pages, and an exporter restart pages nothing
(its series come back only with a new event). The profile and pod labels are on the event
series themselves, and each XID code has its own rule with its catalog row as static labels, so
no alert joins the instance-info or XID-catalog series of the whole fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import yaml

from migexporter import catalog, config, xids
from migexporter.mixin import rules

JOB = "migexporter"  # the scrape job the exporter-down rules watch
XID_WINDOW = "5m"  # an XID alert fires for this long after the event, then resolves
XID43_BURST, XID43_BURST_WINDOW = 3, "10m"
MEMORY_FULL_RATIO = rules.MEMORY_FULL_RATIO
# Below this GR-engine activity an allocated instance counts as idle (the idle alert and the
# fleet dashboard's idle count); idle in every 30 m window for 3 h to alert.
IDLE_RATIO, IDLE_WINDOW, IDLE_FOR = rules.IDLE_RATIO, "30m", "3h"
# Throttling: the fraction of time the clocks were held down, over THROTTLE_WINDOW, above which
# a GPU tickets after THROTTLE_FOR. Thermal slowdown is a cooling fault at any sustained level;
# power capping is what a GPU under full load does (an H200 under bf16 matrix products sat at
# its 700 W cap), so only a GPU held down most of an hour tickets.
THROTTLE_WINDOW = "10m"
THROTTLE = {"thermal": (0.1, "15m"), "power": (0.5, "1h")}
# A pending row remap tickets once it has stood this long (a reset may already be under way).
ROW_REMAP_PENDING_FOR = "10m"
# The recovery actions that page (catalog.RECOVERY_ACTIONS_THAT_PAGE), with NVIDIA's
# instructions for each (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/
# error-recovery-and-response-flags.html, nvml.h); a test keeps the two in step.
RECOVERY_PAGE: dict[str, str] = {
    "gpu_reset": "Cordon the node and drain the GPU's workloads; with no process left on the "
    "GPU, reset it (nvidia-smi -r -i {{ $labels.gpu }}) and restore its MIG layout.",
    "node_reboot": "The fault may have left the OS inconsistent: cordon and drain the node, "
    "then reboot it.",
    "drain_and_reset": "Stop the GPU's peer-to-peer traffic (its P2P processes, UVM "
    "persistence mode), then drain and reset the GPU (nvidia-smi -r -i {{ $labels.gpu }}) "
    "and restore its MIG layout.",
    "bus_reset": "Cordon the node, drain the GPU's workloads and reset the GPU's PCIe bus "
    "(a reboot of the node does it too).",
    "system_reboot": "Cordon and drain the node, then reboot the system.",
}
# Any other action but none tickets. drain_p2p is a step before another action (stop the GPU's
# peer-to-peer traffic, then the driver names the next one), and work without P2P keeps
# running meanwhile: MIG instances have no GPU-to-GPU P2P. recover_imex_domain concerns the
# multi-node NVLink domain. An action these bindings do not name shows as its number.
RECOVERY_TICKET: dict[str, str] = {
    "drain_p2p": "Stop the processes that use peer-to-peer traffic on the GPU and disable UVM "
    "persistence mode; the driver then names the next action (none, or a reset).",
    "recover_imex_domain": "Recover the IMEX (multi-node NVLink) domain the GPU belongs to.",
}
# How long an action must stand before it alerts: a remediation that resets the GPU at once
# pages nobody.
RECOVERY_ACTION_FOR = "1m"
# Evaluation intervals: XIDs and lost GPUs at scrape speed; capacity findings that wait minutes
# or hours before firing, once a minute.
FAST_INTERVAL, SLOW_INTERVAL = "15s", "1m"
RUNBOOK = "https://github.com/migexporter/migexporter/blob/main/alerts/README.md"
RULE_FILE, PROMETHEUS_RULE = "migexporter.rules.yml", "prometheusrule.yaml"

_GI_KEY = "instance, gpu_uuid, gpu_instance_id"
# The node where the ServiceMonitor sets it (a pod IP means nothing to whoever is paged), else
# the scrape address.
_NODE = "{{ with $labels.node }}{{ . }}{{ else }}{{ $labels.instance }}{{ end }}"
_WHERE = _NODE + " GPU {{ $labels.gpu }} ({{ $labels.gpu_uuid }})"
_INSTANCE = (
    "{{ with $labels.gpu_instance_id }} GPU instance {{ . }}{{ end }}"
    "{{ with $labels.profile }} ({{ . }}){{ end }}"
)


def _seconds(window: str) -> str:
    return f"{config.parse_duration(window):g}"


def _recent(selector: str, window: str) -> str:
    """The XID series of ``selector`` whose latest event is less than ``window`` old."""
    return f"time() - {catalog.XID_LAST.name}{{{selector}}} < {_seconds(window)}"


def _catalog_labels(code: int) -> dict[str, str]:
    """The XID catalog's row for ``code``, as an alert's labels."""
    row = xids.CATALOG[code]
    return {"mnemonic": row.mnemonic, "description": row.description, "action": row.action}


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``name`` is also its runbook section in alerts/README.md."""

    name: str
    expr: str
    severity: str  # critical (pages), warning (tickets) or info
    summary: str
    description: str
    wait: str = "0m"  # the rule's ``for``
    labels: tuple[tuple[str, str], ...] = ()  # beside severity

    def rule(self) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.wait != "0m":
            rule["for"] = self.wait
        rule["labels"] = {"severity": self.severity, **dict(self.labels)}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{RUNBOOK}#{self.name.lower()}",
        }
        return rule


def _per_code(alert: Alert, codes: list[int], window: str) -> list[Alert]:
    """``alert`` as one rule per XID code, each with the code's catalog row as labels.

    A rule per code selects one XID's series and needs no join with the XID-catalog series,
    which holds 32 series per node (32,000 on 1,000 nodes) for a handful of events.
    """
    found = []
    for code in codes:
        labels = _catalog_labels(code)
        summary, description = alert.summary, alert.description
        # Templates see the series' labels, not the rule's: put the row's text in directly.
        for name, value in labels.items():
            summary = summary.replace(f"{{{{ $labels.{name} }}}}", value)
            description = description.replace(f"{{{{ $labels.{name} }}}}", value)
        found.append(
            replace(
                alert,
                expr=_recent(f'xid="{code}"', window),
                summary=summary,
                description=description,
                labels=tuple(labels.items()),
            )
        )
    return found


def _xid_alerts(window: str, burst_window: str) -> list[Alert]:
    action = "NVIDIA's action: {{ $labels.action }} ({{ $labels.mnemonic }})."
    attributed_43 = 'xid="43", gpu_instance_id!=""'
    # The time check keeps XIDs that a driver replays with old timestamps out of a burst.
    events = rules.xid_events(attributed_43, burst_window)
    burst = (
        f"sum by (cluster, {_GI_KEY}, node, gpu, profile, xid) ({events}) >= {XID43_BURST}"
        f" and on (cluster, {_GI_KEY}, xid) ({_recent(attributed_43, burst_window)})"
    )
    other = f"XID {{{{ $labels.xid }}}} ({{{{ $labels.mnemonic }}}}) on {_WHERE}{_INSTANCE}"
    return [
        *_per_code(
            Alert(
                "MigXid48DoubleBitEcc",
                "",
                "critical",
                f"XID 48 (double-bit ECC) on {_WHERE}{_INSTANCE}",
                "Uncorrectable memory error. Cordon the node, drain the instance's workloads, "
                "reset the GPU (or reboot). If it repeats, check row remapping "
                f"({catalog.GPU_ROW_REMAP_FAILED.name}) and the RMA thresholds. {action}",
            ),
            [48],
            window,
        ),
        Alert(
            "MigXid43Burst",
            burst,
            "critical",
            f"{XID43_BURST}+ XID 43 in {burst_window} on {_WHERE}{_INSTANCE}",
            "The GPU instance keeps stopping: it is a bad neighbour, not one crashed "
            "application. Drain its workloads and recreate the GPU instance; reset the GPU if "
            "it comes back.",
        ),
        *_per_code(
            Alert(
                "MigXid43GpuStoppedProcessing",
                "",
                "warning",
                f"XID 43 (GPU stopped processing) on {_WHERE}{_INSTANCE}",
                "One application's work was stopped; the GPU stays healthy (NVIDIA: no action on "
                f"the GPU). Tell the workload's owner. {action}",
            ),
            [43],
            window,
        ),
        *_per_code(
            Alert(
                "MigXidCritical",
                "",
                "critical",
                other,
                f"{{{{ $labels.description }}}}. {action} Act on the GPU now.",
            ),
            rules.codes(xids.Severity.PAGE, leave_out=(43, 48)),
            window,
        ),
        *_per_code(
            Alert(
                "MigXidWarning",
                "",
                "warning",
                other,
                f"{{{{ $labels.description }}}}. {action} Open a ticket; watch for repeats.",
            ),
            rules.codes(xids.Severity.TICKET),
            window,
        ),
    ]


def _health_alerts() -> list[Alert]:
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
            f"migexporter on {_NODE} is down",
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
            f"migexporter on {_NODE}: backend {{{{ $labels.backend }}}} is down",
            "The exporter answers but cannot read the GPUs (driver or DCGM host engine gone): "
            "no XID reaches a pager. Check the driver, nv-hostengine and the exporter's log.",
            "2m",
        ),
        Alert(
            "MigExporterPodResourcesDown",
            f"{catalog.POD_RESOURCES_UP.name} == 0",
            "warning",
            f"migexporter on {_NODE} cannot ask the kubelet which pods hold GPUs",
            "The kubelet's pod-resources socket does not answer: namespace, pod and container "
            "labels go once the last answer is older than --pod-max-age, and new XIDs are "
            "counted without them. Check the kubelet and the socket mount.",
            "10m",
        ),
    ]


def _per_action(steps: dict[str, str], otherwise: str) -> str:
    """A description template with the instructions for the alert's action label."""
    branches = "{{ else if".join(
        f' eq $labels.action "{action}" }}}}{text}' for action, text in steps.items()
    )
    return f"{{{{ if{branches}{{{{ else }}}}{otherwise}{{{{ end }}}}"


def _recovery_alerts(wait: str) -> list[Alert]:
    action = catalog.GPU_RECOVERY_ACTION.name
    paging = "|".join(catalog.RECOVERY_ACTIONS_THAT_PAGE)
    return [
        Alert(
            "MigGpuRecoveryActionRequired",
            f'{action}{{action=~"{paging}"}} == 1',
            "critical",
            f"GPU needs {{{{ $labels.action }}}}: {_WHERE}",
            "The driver asks for {{ $labels.action }} after a fault: the GPU and every GPU "
            "instance on it are out of service until then. "
            + _per_action(RECOVERY_PAGE, "Follow NVIDIA's instructions for the action."),
            wait,
        ),
        Alert(
            "MigGpuRecoveryActionRequested",
            f'{action}{{action!~"none|{paging}"}} == 1',
            "warning",
            f"GPU recovery action {{{{ $labels.action }}}} requested: {_WHERE}",
            "The driver asks for {{ $labels.action }} after a fault. "
            + _per_action(
                RECOVERY_TICKET,
                "An action these bindings do not name: look its number up in the driver's "
                "nvml.h (nvmlDeviceGpuRecoveryAction_t) and upgrade nvidia-ml-py.",
            ),
            wait,
        ),
    ]


def _device_alerts(recovery_for: str) -> list[Alert]:
    throttled = catalog.GPU_THROTTLED.name
    thermal, thermal_for = THROTTLE["thermal"]
    power, power_for = THROTTLE["power"]
    return [
        Alert(
            "MigGpuThermalThrottling",
            f'rate({throttled}{{cause="thermal"}}[{THROTTLE_WINDOW}]) > {thermal}',
            "warning",
            f"GPU held down by its thermal limit: {_WHERE}",
            f"The driver slowed the GPU's clocks for heat more than {thermal:.0%} of the time "
            f"for {thermal_for}: every tenant of the GPU runs slower. Check the node's "
            "cooling (fans, airflow, inlet temperature) and the GPU's temperatures.",
            thermal_for,
        ),
        Alert(
            "MigGpuPowerThrottling",
            f'rate({throttled}{{cause="power"}}[{THROTTLE_WINDOW}]) > {power}',
            "warning",
            f"GPU held at its power limit: {_WHERE}",
            f"The driver held the GPU's clocks at its power limit more than {power:.0%} of the "
            f"time for {power_for}. Under full load this is expected; otherwise check that the "
            f"enforced limit ({catalog.GPU_POWER_LIMIT.name}) is the board's default and the "
            "node's power supply.",
            power_for,
        ),
        Alert(
            "MigGpuRowRemapFailed",
            f"{catalog.GPU_ROW_REMAP_FAILED.name} == 1",
            "critical",
            f"Memory row remapping failed: {_WHERE}",
            "The GPU could not remap a memory row after an uncorrectable error, so the bad row "
            "may stay in use: every tenant of the GPU is at risk of corrupt data. Drain the GPU "
            "and replace it (NVIDIA's RMA criterion).",
        ),
        Alert(
            "MigGpuRowRemapPending",
            f"{catalog.GPU_ROW_REMAP_PENDING.name} == 1",
            "warning",
            f"Memory row remap pending, the GPU needs a reset: {_WHERE}",
            "The GPU remapped a memory row after an error; the remap takes effect at the next "
            "GPU reset. Drain the GPU's instances and reset it in a maintenance window.",
            ROW_REMAP_PENDING_FOR,
        ),
        *_recovery_alerts(recovery_for),
    ]


def _capacity_alerts() -> list[Alert]:
    used, total = catalog.GI_MEMORY_USED.name, catalog.GI_MEMORY_TOTAL.name
    gr, gi_info = catalog.GI_GR_ENGINE_ACTIVE.name, catalog.GPU_INSTANCE_INFO.name
    return [
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
            f"max by ({_GI_KEY}, node, gpu, profile) ({gi_info}) unless on ({_GI_KEY}) {gr}",
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
    xid_window: str = XID_WINDOW,
    burst_window: str = XID43_BURST_WINDOW,
    interval: str | None = None,
    recovery_for: str = RECOVERY_ACTION_FOR,
) -> list[dict[str, Any]]:
    """Every rule group: recording rules first, then the alerts.

    The windows, ``recovery_for`` and ``interval`` (which replaces every group's own) are
    parameters so that an end-to-end test can shorten them.
    """
    alerting = [
        ("migexporter-xid", FAST_INTERVAL, _xid_alerts(xid_window, burst_window)),
        ("migexporter-health", FAST_INTERVAL, _health_alerts()),
        ("migexporter-device", SLOW_INTERVAL, _device_alerts(recovery_for)),
        ("migexporter-capacity", SLOW_INTERVAL, _capacity_alerts()),
    ]
    found = [
        *rules.groups(),
        *(
            {"name": name, "interval": every, "rules": [alert.rule() for alert in group]}
            for name, every, group in alerting
        ),
    ]
    if interval is not None:
        found = [{**group, "interval": interval} for group in found]
    return found


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
