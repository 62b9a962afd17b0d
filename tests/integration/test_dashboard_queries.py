"""Every query of every dashboard returns data from a real Prometheus scraping the exporter.

The exporter runs the demo scenario (dashboards/demo.yaml: MIG GPUs of two models, a GPU
instance split into compute instances, XIDs of each severity, a reconfiguration); Prometheus
scrapes it every second. Variables are resolved as Grafana resolves them, in order, from the
series Prometheus holds, and each is replaced by all of its values (Grafana's "All"); then each
panel and variable query runs as a range query over the last minute and must neither fail nor
come back empty.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from harness import Prometheus, Service, http, start_exporter, start_prometheus, wait_for

from migexporter import catalog, dashboards

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "dashboards" / "demo.yaml"
# Grafana's built-in variables, as a dashboard open on the last few minutes would set them.
BUILTINS = {"$__rate_interval": "10s", "$__range": "2m", "$__interval": "2s"}
WINDOW_S = 60.0
STEP_S = 2.0
DATA_TIMEOUT_S = 90.0
VARIABLE = re.compile(r"\$(\w+)")


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The exporter on the demo scenario (overrides the default-fleet fixture)."""
    service = start_exporter(tmp_path_factory.mktemp("exporter"), str(DEMO))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def scraped(exporter: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus, once it holds the scenario's XIDs and reconfiguration and half a minute of
    samples."""
    target = urllib.parse.urlsplit(exporter.url).netloc
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), [target])
    xids = catalog.XID_ERRORS.name
    wait_for(
        lambda: server.query(
            f'sum({xids}{{xid="31"}}) > 0 and on () sum({xids}{{xid="43"}}) > 1'
            f" and on () count_over_time({catalog.BUILD_INFO.name}[1m]) >= 30"
        ),
        timeout=DATA_TIMEOUT_S,
        interval=1.0,
        what="the scenario's XIDs and 30 s of samples in Prometheus",
    )
    yield server
    server.service.stop()


def _api(prometheus: Prometheus, path: str, **params: str) -> dict[str, Any]:
    reply = http("GET", f"{prometheus.service.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    body = reply.json()
    if reply.status != 200 or body.get("status") != "success":
        return {"error": f"HTTP {reply.status}: {body.get('error', reply.body[:300])}"}
    data = body["data"]
    return data if isinstance(data, dict) else {"list": data}


def _substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), expr)


def _resolve(prometheus: Prometheus, variables: list[dict[str, Any]]) -> dict[str, str]:
    """Each query variable's values, as a regex alternation, resolving them in order."""
    values: dict[str, str] = {}
    now = time.time()
    for variable in variables:
        if variable["type"] != "query":
            continue
        match = dashboards.LABEL_VALUES.match(_substitute(variable["query"], values))
        assert match, f"variable {variable['name']}: not a label_values query"
        series = _api(
            prometheus,
            "series",
            **{"match[]": match["selector"]},
            start=str(now - WINDOW_S),
            end=str(now),
        )
        found = sorted({s[match["label"]] for s in series.get("list", []) if match["label"] in s})
        assert found, f"variable {variable['name']} has no values: {series}"
        values[variable["name"]] = "(" + "|".join(found) + ")"
    return values


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_every_query_returns_data(scraped: Prometheus, name: str) -> None:
    data = json.loads(dashboards.as_json(dashboards.DASHBOARDS[name]()))
    values = _resolve(scraped, data["templating"]["list"])
    now = time.time()
    failures = []
    found = dashboards.queries(data)
    for where, expr in found:
        query = _substitute(expr, values)
        if query.startswith("label_values("):
            continue  # resolved above, with values
        assert "$" not in query, f"{where}: unresolved variable in {query}"
        result = _api(
            scraped,
            "query_range",
            query=query,
            start=str(now - WINDOW_S),
            end=str(now),
            step=str(STEP_S),
        )
        if "error" in result:
            failures.append(f"{where}: {result['error']}\n    {query}")
        elif not result["result"]:
            failures.append(f"{where}: no data\n    {query}")
    assert len(found) > 5
    assert not failures, "\n".join(failures)
