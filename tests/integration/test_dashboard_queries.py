"""Every query of every dashboard returns data from a real Prometheus scraping the exporter.

One exporter runs the demo scenario (dashboards/demo.yaml: MIG GPUs of two models, a GPU
instance split into compute instances, XIDs of each severity, a reconfiguration, ECC errors, a
recovery action, an overheating GPU), a second one
the default fleet, as another node on Kubernetes (a fake kubelet gives one MIG device to a pod);
Prometheus scrapes both every second and evaluates the generated rules (the recording rules
the fleet dashboard reads) every second. Variables are
resolved as Grafana resolves them, in order, from the series Prometheus holds, and each is
replaced by all of its values (Grafana's "All"); then each panel and variable query runs as a
range query over the last minute and must neither fail nor come back empty.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.image
import pytest
import yaml
from harness import (
    Prometheus,
    Service,
    exporter_env,
    free_port,
    sim_fleet,
    start_exporter,
    start_prometheus,
    wait_for,
)

from cli_run import run_cli
from migexporter import catalog, xids
from migexporter.mixin import alerts, dashboards, preview, rules
from migexporter.sim.kubelet import FakeKubelet, pod_resources

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "dashboards" / "demo.yaml"
WINDOW_S = 60.0
STEP_S = 2.0
DATA_TIMEOUT_S = 90.0
PREVIEW_TIMEOUT_S = 120.0
POD = {"namespace": "tenant-a", "pod": "llm-serve-0", "container": "server"}


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The exporter on the demo scenario (overrides the default-fleet fixture)."""
    service = start_exporter(tmp_path_factory.mktemp("exporter"), str(DEMO))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def second_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second exporter on the default fleet: every join must hold with several nodes. Its
    kubelet gives GPU 0's first MIG device to POD."""
    socket_path = str(tmp_path_factory.mktemp("kubelet") / "kubelet.sock")
    kubelet = FakeKubelet(socket_path).start()
    service = start_exporter(
        tmp_path_factory.mktemp("second"),
        "--pod-resources-socket", socket_path, "--pod-refresh", "200ms",
    )  # fmt: skip
    mig_uuid = sim_fleet(service)[0]["gpu_instances"][0]["compute_instances"][0]["mig_uuid"]
    devices = {POD["container"]: {"nvidia.com/gpu": [mig_uuid]}}
    kubelet.set_pods([pod_resources(POD["namespace"], POD["pod"], devices)])
    yield service
    service.stop()
    kubelet.stop()


@pytest.fixture(scope="module")
def scraped(
    exporter: Service, second_node: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping both nodes, once it holds the scenario's XIDs and reconfiguration
    and half a minute of samples."""
    targets = [urllib.parse.urlsplit(s.url).netloc for s in (exporter, second_node)]
    workdir = tmp_path_factory.mktemp("prometheus")
    rule_file = workdir / "rules.yml"  # the recording rules the fleet dashboard reads
    rule_file.write_text(yaml.safe_dump({"groups": alerts.groups(interval="1s")}))
    server = start_prometheus(workdir, targets, rule_files=(rule_file,))
    counter = catalog.XID_ERRORS.name
    wait_for(
        lambda: server.query(
            f'sum({counter}{{xid="31"}}) > 0 and on () sum({counter}{{xid="43"}}) > 1'
            f" and on () count_over_time({catalog.BUILD_INFO.name}[1m]) >= 30"
            f" and on () count_over_time({rules.NODE_XIDS}[1m]) > 0"
        ),
        timeout=DATA_TIMEOUT_S,
        interval=1.0,
        what="the scenario's XIDs and 30 s of samples in Prometheus",
    )
    yield server
    server.service.stop()


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_every_query_returns_data(scraped: Prometheus, name: str) -> None:
    """Variables resolve to values; then no panel query fails or comes back empty."""
    api = preview.Prometheus(scraped.service.url)
    data = json.loads(dashboards.as_json(dashboards.DASHBOARDS[name]()))
    # Every value of every variable: the panels must have data for what exists, whichever
    # single GPU instance a user then picks. Fails on a variable without values.
    values = preview.resolve(api, data, WINDOW_S, every_value=True)
    failures = []
    found = dashboards.queries(data)
    for where, expr in found:
        query = preview.substitute(expr, values)
        if query.startswith("label_values("):
            continue  # resolved above, with values
        assert "$" not in query, f"{where}: unresolved variable in {query}"
        try:
            series = api.range(query, WINDOW_S, STEP_S)
        except preview.PreviewError as error:
            failures.append(f"{where}: {error}\n    {query}")
            continue
        if not series:
            failures.append(f"{where}: no data\n    {query}")
    assert len(found) > 5
    assert not failures, "\n".join(failures)


def test_previews_are_drawn_from_prometheus(scraped: Prometheus, tmp_path: Path) -> None:
    """`migexporter dashboards --preview` draws one non-blank PNG per dashboard."""
    done = run_cli(
        "dashboards", "--out", str(tmp_path / "json"),
        "--preview", str(tmp_path / "png"), "--prometheus", scraped.service.url,
        timeout=PREVIEW_TIMEOUT_S, env=exporter_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in dashboards.DASHBOARDS:
        image = matplotlib.image.imread(tmp_path / "png" / f"{name}.png")
        height, width = image.shape[:2]
        assert width > 1000, name
        assert height > 500, name
        assert float(image[..., :3].std()) > 0.05, f"{name}.png looks blank"


def test_previews_need_a_prometheus(tmp_path: Path) -> None:
    """No Prometheus at the URL: one line and status 2."""
    done = run_cli(
        "dashboards", "--out", str(tmp_path),
        "--preview", str(tmp_path), "--prometheus", f"http://127.0.0.1:{free_port()}",
        timeout=PREVIEW_TIMEOUT_S, env=exporter_env(),
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot query Prometheus" in lines[0]


def test_the_instance_table_names_the_pod(scraped: Prometheus) -> None:
    """The Instance table of the instance dashboard shows who holds the GPU instance."""
    api = preview.Prometheus(scraped.service.url)
    data = json.loads(dashboards.as_json(dashboards.DASHBOARDS["mig-instance"]()))
    values = preview.resolve(api, data, WINDOW_S, every_value=True)
    table = next(p for p in dashboards.panels(data) if p["title"] == "Instance")
    query = preview.substitute(table["targets"][0]["expr"], values)
    series = wait_for(
        lambda: api.range(query, WINDOW_S, STEP_S),
        until=lambda found: any(s["metric"].get("pod") for s in found),
        what="a GPU instance with pod labels in the Instance table",
    )
    held = [s["metric"] for s in series if s["metric"].get("pod")]
    assert [{k: m[k] for k in POD} for m in held] == [POD]
    assert held[0]["gpu"] == "0"


def _fleet_panel(
    api: preview.Prometheus, title: str, node: Service, range_: str = "2m"
) -> tuple[str, str]:
    """The fleet dashboard's panel ``title``: its first query, with the variables set to
    ``node`` alone and the dashboard's range to ``range_``, and its legend."""
    data = json.loads(dashboards.as_json(dashboards.DASHBOARDS["mig-fleet"]()))
    values = preview.resolve(api, data, WINDOW_S, every_value=True)
    target = urllib.parse.urlsplit(node.url).netloc
    named = api.get("query", query=f'{rules.BUILD}{{instance="{target}"}}')["result"]
    values |= {"node": named[0]["metric"]["node"], "instance": target}
    panel = next(p for p in dashboards.panels(data) if p["title"] == title)
    first = panel["targets"][0]
    expr = first["expr"].replace("$__range", range_)
    return preview.substitute(expr, values), first.get("legendFormat", "")


def test_the_fleet_xid_timeline_shows_the_one_xid_with_its_name(
    scraped: Prometheus, second_node: Service
) -> None:
    """One XID 48 on a node without XIDs: the fleet's XID timeline and table for that node show
    that XID alone (none of the others at 0), named with its mnemonic and our severity."""
    api = preview.Prometheus(scraped.service.url)
    gpu_instance_id = sim_fleet(second_node)[0]["gpu_instances"][0]["id"]
    reply = second_node.post(
        "/api/sim/xid", {"gpu": 0, "gpu_instance_id": gpu_instance_id, "xid": 48}
    )
    assert 200 <= reply.status < 300, reply.body[:500]
    query, legend = _fleet_panel(api, "XID events over time", second_node)
    series = wait_for(
        lambda: api.range(query, WINDOW_S, STEP_S),
        DATA_TIMEOUT_S,
        until=bool,
        interval=1.0,
        what="the XID 48 in the fleet's XID timeline",
    )
    row = xids.CATALOG[48]
    assert [s["metric"] for s in series] == [
        {"xid": "48", "mnemonic": row.mnemonic, "severity": row.severity.value}
    ]
    assert max(float(value) for _, value in series[0]["values"]) >= 1
    shown = legend.replace("{{xid}}", "48").replace("{{mnemonic}}", row.mnemonic)
    assert shown.replace("{{severity}}", "page") == f"XID 48 {row.mnemonic} (page)"
    table, _ = _fleet_panel(api, "XID errors in the range", second_node)
    rows = api.get("query", query=table)["result"]
    assert [(r["metric"]["xid"], r["metric"]["gpu_instance_id"]) for r in rows] == [
        ("48", str(gpu_instance_id))
    ]
    assert float(rows[0]["value"][1]) >= 1


def test_the_fleet_device_tables_name_the_demo_gpus(scraped: Prometheus, exporter: Service) -> None:
    """The demo's GPU 1 asks for a GPU reset after its double-bit ECC error; GPU 0 counts
    corrected ECC errors: the fleet's device tables name them, and no GPU without one."""
    api = preview.Prometheus(scraped.service.url)
    uuid = {gpu["index"]: gpu["uuid"] for gpu in sim_fleet(exporter)}
    query, _ = _fleet_panel(api, "GPUs needing action now", exporter)
    problems = {
        (r["metric"]["gpu_uuid"], r["metric"]["problem"], r["metric"].get("action"))
        for r in api.get("query", query=query)["result"]
    }
    assert problems == {(uuid[1], "recovery action", "gpu_reset")}
    query, _ = _fleet_panel(api, "Device events in the range", exporter, "1h")
    events = {
        (m["gpu_uuid"], m["event"], m.get("error_type") or m.get("action")): float(value)
        for m, (_, value) in (
            (r["metric"], r["value"]) for r in api.get("query", query=query)["result"]
        )
    }
    assert events.keys() == {
        (uuid[0], "ECC", "corrected"),
        (uuid[1], "ECC", "uncorrected"),
        (uuid[1], "recovery action", "gpu_reset"),
    }
    assert min(events.values()) >= 1
