"""The mixin on VictoriaMetrics: its rules in vmalert, a page through Alertmanager, its dashboards.

Many large GPU fleets store their metrics in VictoriaMetrics rather than Prometheus, so the rules
and dashboards must hold there too. Two simulated exporters stand for two nodes: one on the demo
scenario (dashboards/demo.yaml: XIDs of every severity, a reconfiguration), so that every panel
has data, and one on the paging test's fleet, with a fake kubelet giving a MIG device to a pod,
where an XID 48 is injected. vmagent scrapes both every second into a single-node VictoriaMetrics;
vmalert evaluates the generated rule groups every second (XID windows shortened as in
test_paging.py, every group's interval set to 1 s), writes recording rules and alert state back
to VictoriaMetrics and sends alerts to Alertmanager, which notifies a webhook receiver on loopback.

A query or rule that fails here but works on Prometheus is a difference to report, not to work
around: nothing here is skipped or loosened for VictoriaMetrics.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from harness import (
    LOOPBACK,
    Prometheus,
    Receiver,
    Service,
    free_port,
    sim_fleet,
    start_alertmanager,
    start_exporter,
    start_service,
    victoriametrics_binary,
    wait_for,
    webhook_receiver,
)

from migexporter import xids
from migexporter.mixin import alerts, dashboards, preview
from migexporter.sim.kubelet import FakeKubelet, pod_resources

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "dashboards" / "demo.yaml"
FLEET = "h100-80gb:3g.40gb+2g.20gb+1g.10gb*2,h100-80gb:3g.40gb+3g.40gb"  # test_paging.py's
XID_WINDOW, BURST_WINDOW = "20s", "30s"
INTERVAL = "1s"  # every group's evaluation interval, whatever the mixin gives it
POD = {"namespace": "tenant-a", "pod": "llm-serve-0", "container": "server"}
WINDOW_S, STEP_S = 60.0, 2.0  # the dashboards' range queries: the last minute
SAMPLES = 15  # seconds of samples of both nodes before the rules and dashboards are judged
SCRAPE_TIMEOUT_S = 30.0
DATA_TIMEOUT_S = 60.0
EVALUATION_TIMEOUT_S = 20.0
RECORD_TIMEOUT_S = 30.0
PANEL_TIMEOUT_S = 30.0
PAGE_TIMEOUT_S = 45.0
DRY_RUN_TIMEOUT_S = 30.0
ZERO_TIME = "0001-01-01T00:00:00Z"  # vmalert's lastEvaluation of a rule never evaluated


def _netloc(service: Service) -> str:
    return urllib.parse.urlsplit(service.url).netloc


def _flag(name: str, value: object) -> str:
    return f"-{name}={value}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as sink:
        yield sink


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The exporter on the demo scenario: the dashboards' data."""
    service = start_exporter(tmp_path_factory.mktemp("demo"), str(DEMO))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The exporter on the paging fleet (NVML backend, as test_paging.py); its kubelet gives
    GPU 0's first MIG device to POD."""
    socket_path = str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")
    kubelet = FakeKubelet(socket_path).start()
    service = start_exporter(
        tmp_path_factory.mktemp("node"), FLEET, "--backend", "nvml",
        "--pod-resources-socket", socket_path, "--pod-refresh", "200ms",
    )  # fmt: skip
    mig_uuid = sim_fleet(service)[0]["gpu_instances"][0]["compute_instances"][0]["mig_uuid"]
    devices = {POD["container"]: {"nvidia.com/gpu": [mig_uuid]}}
    kubelet.set_pods([pod_resources(POD["namespace"], POD["pod"], devices)])
    yield service
    service.stop()
    kubelet.stop()


@pytest.fixture(scope="module")
def victoriametrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Single-node VictoriaMetrics: samples queryable as soon as they arrive, answers never
    served from its response cache."""
    binary = victoriametrics_binary("victoria-metrics")
    workdir = tmp_path_factory.mktemp("victoriametrics")
    port = free_port()
    argv = [
        binary,
        _flag("storageDataPath", workdir / "data"),
        _flag("httpListenAddr", f"{LOOPBACK}:{port}"),
        _flag("retentionPeriod", "1d"),
        # The default 30 s hides the freshest samples; releases before 1.88 raise 0 to 1 s.
        _flag("search.latencyOffset", "0s"),
        "-search.disableCache",  # each answer computed from the samples stored when asked
    ]
    service = start_service(
        "victoria-metrics",
        argv,
        port=port,
        log_path=workdir / "victoria-metrics.log",
        ready_path="/health",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def vm(victoriametrics: Service) -> Prometheus:
    """VictoriaMetrics's Prometheus query API (/api/v1/query)."""
    return Prometheus(victoriametrics)


@pytest.fixture(scope="module")
def vmagent(
    demo: Service, node: Service, victoriametrics: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """vmagent scraping both nodes every second into VictoriaMetrics."""
    binary = victoriametrics_binary("vmagent")
    workdir = tmp_path_factory.mktemp("vmagent")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": alerts.JOB,
                "static_configs": [{"targets": [_netloc(demo), _netloc(node)]}],
            }
        ],
    }
    config_path = workdir / "scrape.yml"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    port = free_port()
    argv = [
        binary,
        _flag("promscrape.config", config_path),
        _flag("remoteWrite.url", f"{victoriametrics.url}/api/v1/write"),
        _flag("remoteWrite.tmpDataPath", workdir / "remotewrite"),
        _flag("remoteWrite.flushInterval", "1s"),
        _flag("httpListenAddr", f"{LOOPBACK}:{port}"),
    ]
    service = start_service(
        "vmagent", argv, port=port, log_path=workdir / "vmagent.log", ready_path="/health"
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Service]:
    service = start_alertmanager(tmp_path_factory.mktemp("alertmanager"), receiver)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def rule_groups() -> list[dict[str, Any]]:
    """The mixin's groups, with the XID windows shortened and each group evaluated every 1 s."""
    groups = alerts.groups(xid_window=XID_WINDOW, burst_window=BURST_WINDOW)
    return [{**group, "interval": INTERVAL} for group in groups]


@pytest.fixture(scope="module")
def vmalert(
    rule_groups: list[dict[str, Any]],
    victoriametrics: Service,
    alertmanager: Service,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """vmalert on the rule file: reading VictoriaMetrics, writing recording rules and alert state
    back to it, and notifying Alertmanager. Fails with vmalert's words if it refuses the file."""
    binary = victoriametrics_binary("vmalert")
    workdir = tmp_path_factory.mktemp("vmalert")
    rules = workdir / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False), encoding="utf-8")
    checked = subprocess.run(
        [binary, "-dryRun", _flag("rule", rules), _flag("loggerLevel", "ERROR")],
        capture_output=True,
        text=True,
        timeout=DRY_RUN_TIMEOUT_S,
        check=False,
    )
    if checked.returncode != 0:
        pytest.fail(
            f"vmalert refuses the generated rules (status {checked.returncode}):\n"
            f"{checked.stdout}{checked.stderr}",
            pytrace=False,
        )
    port = free_port()
    argv = [
        binary,
        _flag("rule", rules),
        _flag("datasource.url", victoriametrics.url),
        _flag("remoteWrite.url", victoriametrics.url),
        _flag("remoteWrite.flushInterval", "1s"),  # recorded series reach VictoriaMetrics in 1 s
        _flag("remoteRead.url", victoriametrics.url),
        _flag("notifier.url", alertmanager.url),
        _flag("evaluationInterval", INTERVAL),
        _flag("httpListenAddr", f"{LOOPBACK}:{port}"),
    ]
    service = start_service(
        "vmalert", argv, port=port, log_path=workdir / "vmalert.log", ready_path="/health"
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def scraping(vm: Prometheus, vmagent: Service, vmalert: Service) -> Prometheus:
    """VictoriaMetrics once it holds five samples of both targets, vmalert evaluating."""
    assert vmagent.process.poll() is None
    assert vmalert.process.poll() is None
    wait_for(
        lambda: vm.query(f'count_over_time(up{{job="{alerts.JOB}"}}[1m])'),
        SCRAPE_TIMEOUT_S,
        until=lambda found: len(found) == 2 and min(s.value for s in found) >= 5,
        interval=0.5,
        what="five samples of both targets in VictoriaMetrics",
    )
    return vm


@pytest.fixture(scope="module")
def data(scraping: Prometheus, node: Service) -> Prometheus:
    """VictoriaMetrics once it holds the demo scenario's XIDs, an XID of every severity on the
    other node (the demo has no ticket one), and SAMPLES s of samples of both nodes."""
    gi = sim_fleet(node)[1]["gpu_instances"][0]["id"]
    for severity in xids.Severity:
        code = min(c for c, row in xids.CATALOG.items() if row.severity is severity)
        reply = node.post("/api/sim/xid", {"gpu": 1, "gpu_instance_id": gi, "xid": code})
        assert 200 <= reply.status < 300, reply.body[:500]
    counter = "nvidia_gpu_xid_errors_total"
    wait_for(
        lambda: scraping.query(
            f'sum({counter}{{xid="31"}}) > 0 and on () sum({counter}{{xid="43"}}) > 1'
            f' and on () count({counter}{{instance="{_netloc(node)}", gpu="1"}}) >= 3'
            f" and on () count(count_over_time(migexporter_build_info[1m]) >= {SAMPLES}) == 2"
        ),
        DATA_TIMEOUT_S,
        interval=1.0,
        what=f"the scenario's XIDs and {SAMPLES} s of samples of both nodes in VictoriaMetrics",
    )
    return scraping


def _loaded(vmalert: Service) -> list[dict[str, Any]]:
    reply = vmalert.get("/api/v1/rules")
    assert reply.status == 200, reply.body[:500]
    groups: list[dict[str, Any]] = reply.json()["data"]["groups"]
    return groups


def _rules(vmalert: Service) -> list[tuple[str, dict[str, Any]]]:
    """(group name, rule) of every rule vmalert runs, as /api/v1/rules shows them."""
    return [(group["name"], rule) for group in _loaded(vmalert) for rule in group["rules"]]


def _counter(service: Service, name: str) -> float:
    """The sum of a counter's series in a VictoriaMetrics component's own /metrics."""
    reply = service.get("/metrics")
    assert reply.status == 200, reply.body[:500]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in reply.body.decode().splitlines()
        if line.partition("{")[0].partition(" ")[0] == name
    )


def _errors_logged(service: Service) -> str:
    lines = service.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(line for line in lines if "\terror\t" in line)[-4000:] or "<none logged>"


def test_vmalert_runs_every_group_and_rule(
    vmalert: Service, rule_groups: list[dict[str, Any]]
) -> None:
    """vmalert took the file (the fixture checked -dryRun and start-up) and runs all of it."""

    def kind(rule: dict[str, Any]) -> str:
        return "recording" if "record" in rule else "alerting"

    expected = {
        group["name"]: [
            (rule.get("record") or rule["alert"], kind(rule)) for rule in group["rules"]
        ]
        for group in rule_groups
    }
    groups = _loaded(vmalert)
    loaded = {g["name"]: [(r["name"], r["type"]) for r in g["rules"]] for g in groups}
    assert loaded == expected
    assert {g["name"]: g["interval"] for g in groups} == dict.fromkeys(expected, 1)


def test_xid_48_pages_through_alertmanager(
    node: Service, scraping: Prometheus, receiver: Receiver, vmalert: Service
) -> None:
    """An XID 48 on a GPU instance pages, with its labels, and vmalert writes the alert's state
    back to VictoriaMetrics (the way recorded series go)."""
    gpus = sim_fleet(node)
    gpu, gpu_instance_id = 0, 2  # the 3g.40gb
    profile = next(
        gi["profile"] for gi in gpus[gpu]["gpu_instances"] if gi["id"] == gpu_instance_id
    )
    instance = _netloc(node)
    injected = time.monotonic()
    reply = node.post("/api/sim/xid", {"gpu": gpu, "gpu_instance_id": gpu_instance_id, "xid": 48})
    assert 200 <= reply.status < 300, reply.body[:500]

    pages = wait_for(
        lambda: [
            alert
            for _, alert in receiver.alerts("pager")
            if alert["status"] == "firing"
            and alert["labels"]["alertname"] == "MigXid48DoubleBitEcc"
            and alert["labels"].get("instance") == instance
        ],
        PAGE_TIMEOUT_S,
        interval=0.1,
        what=f"a firing MigXid48DoubleBitEcc for {instance} at the pager",
    )
    for alert in pages:
        labels = alert["labels"]
        assert labels["gpu_uuid"] == gpus[gpu]["uuid"], labels
        assert (labels["gpu"], labels["gpu_instance_id"]) == (str(gpu), str(gpu_instance_id))
        assert labels["xid"] == "48", labels
        assert labels["severity"] == "critical", labels
        assert labels["profile"] == profile, labels
    assert _counter(vmalert, "vmalert_alerts_send_errors_total") == 0, _errors_logged(vmalert)
    print(f"injection to page via vmalert: {time.monotonic() - injected:.3f} s")  # noqa: T201

    written = wait_for(
        lambda: scraping.query(
            'ALERTS{alertname="MigXid48DoubleBitEcc", alertstate="firing"'
            f', instance="{instance}"}}'
        ),
        PAGE_TIMEOUT_S,
        what="vmalert's ALERTS series of the page in VictoriaMetrics",
    )
    assert {s.labels["gpu_uuid"] for s in written} == {gpus[gpu]["uuid"]}


def test_every_rule_evaluates_without_error(data: Prometheus, vmalert: Service) -> None:
    """Once the data is there, every rule is evaluated again and none reports an error."""
    before = [rule["lastEvaluation"] for _, rule in _rules(vmalert)]
    rules = wait_for(
        lambda: _rules(vmalert),
        EVALUATION_TIMEOUT_S,
        until=lambda now: all(
            rule["lastEvaluation"] not in (then, ZERO_TIME)
            for (_, rule), then in zip(now, before, strict=True)
        ),
        what="every rule evaluated again",
    )
    failures = [
        f"{group}/{rule['name']} ({rule['type']}): health {rule['health']}: {rule['lastError']}"
        f"\n    {rule['query']}"
        for group, rule in rules
        if rule["lastError"] or rule["health"] != "ok"
    ]
    assert not failures, "\n".join(failures)
    # Nor did any evaluation fail before, while the scenario ran (events, a reconfiguration).
    failed = _counter(vmalert, "vmalert_execution_errors_total")
    assert failed == 0, f"{failed:g} rule evaluations failed; vmalert logged:\n" + _errors_logged(
        vmalert
    )


def _selector(rule: dict[str, Any]) -> str:
    """The series a recording rule writes: its name and its own labels."""
    matchers = {"__name__": rule["record"], **rule.get("labels", {})}
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in matchers.items()) + "}"


def test_every_recording_rule_has_series(
    data: Prometheus, vmalert: Service, rule_groups: list[dict[str, Any]]
) -> None:
    """What each recording rule records is written back to VictoriaMetrics and queryable."""
    records = {
        (group["name"], position): _selector(rule)
        for group in rule_groups
        for position, rule in enumerate(group["rules"])
        if "record" in rule
    }
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    missing = list(records)
    for name in ("vmalert_remotewrite_errors_total", "vmalert_remotewrite_dropped_rows_total"):
        assert _counter(vmalert, name) == 0, f"{name}; vmalert logged:\n{_errors_logged(vmalert)}"
    while missing and time.monotonic() < deadline:
        missing = [key for key in missing if not data.query(records[key])]
        if missing:
            time.sleep(0.5)
    shown = {
        (group["name"], position): rule
        for group in _loaded(vmalert)
        for position, rule in enumerate(group["rules"])
    }
    assert not missing, f"no series in VictoriaMetrics after {RECORD_TIMEOUT_S:g} s:\n" + "\n".join(
        f"{records[key]} (group {key[0]}): vmalert's last evaluation gave "
        f"{shown[key]['lastSamples']} samples, error {shown[key]['lastError']!r}"
        f"\n    {shown[key]['query']}"
        for key in missing
    )


def _judge(api: preview.Prometheus, board: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(failed, empty): the dashboard's queries that VictoriaMetrics refuses, and those that
    come back without data, with every variable set to all of its values."""
    try:
        values = preview.resolve(api, board, WINDOW_S, every_value=True)
    except preview.PreviewError as error:  # a variable without values yet
        return [], [str(error)]
    failed, empty = [], []
    for where, expr in dashboards.queries(board):
        query = preview.substitute(expr, values)
        if query.startswith("label_values("):
            continue  # resolved above, with values
        assert "$" not in query, f"{where}: unresolved variable in {query}"
        try:
            series = api.range(query, WINDOW_S, STEP_S)
        except preview.PreviewError as error:
            failed.append(f"{where}: {error}\n    {query}")
            continue
        if not series:
            empty.append(f"{where}: no data\n    {query}")
    return failed, empty


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_every_dashboard_query_returns_data(data: Prometheus, name: str) -> None:
    """Variables resolve to values from VictoriaMetrics; then no panel query fails or comes
    back empty (as tests/integration/test_dashboard_queries.py proves on Prometheus). A panel
    of events (the scenario's GPU falling off the bus, recorded series) is given until
    PANEL_TIMEOUT_S for its data; a query VictoriaMetrics refuses fails at once."""
    api = preview.Prometheus(data.service.url)
    board = json.loads(dashboards.as_json(dashboards.DASHBOARDS[name]()))
    assert len(dashboards.queries(board)) > 5
    deadline = time.monotonic() + PANEL_TIMEOUT_S
    failed, empty = _judge(api, board)
    while not failed and empty and time.monotonic() < deadline:
        time.sleep(1.0)
        failed, empty = _judge(api, board)
    assert not failed, "VictoriaMetrics refuses:\n" + "\n".join(failed)
    assert not empty, f"still without data after {PANEL_TIMEOUT_S:g} s:\n" + "\n".join(empty)
