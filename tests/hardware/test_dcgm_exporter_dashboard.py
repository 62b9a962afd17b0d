"""``--compat dcgm-exporter`` on a real GPU: NVIDIA's own dashboard 12239 reads data from it.

The exporter runs on the real driver with the compat families; a real Prometheus (the binary
that $MIGEXPORTER_PROMETHEUS names, or `prometheus` on PATH) scrapes it every second. Every
variable and panel query of ``tests/data/dcgm-exporter-dashboard.json`` then runs as Grafana runs
it when the page opens, and each must return a series of GPU 0.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu, PrometheusServer

from migexporter.mixin import dashboards, preview

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.gpu

DASHBOARD = Path(__file__).resolve().parents[1] / "data" / "dcgm-exporter-dashboard.json"
WINDOW_S = 30.0
STEP_S = 2.0
FILL_TIMEOUT_S = 90.0
READY_QUERY = "count_over_time(DCGM_FI_DEV_GPU_TEMP[1m]) >= 10"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[preview.Prometheus]:
    """Prometheus with ten scrapes of the compat exporter on the real driver."""
    workdir = tmp_path_factory.mktemp("compat")
    exporter = Exporter.start(workdir / "exporter.log", 1.0, "--compat", "dcgm-exporter")
    server = PrometheusServer.start(workdir, urllib.parse.urlsplit(exporter.url).netloc)
    api = preview.Prometheus(server.url)
    try:
        deadline = time.monotonic() + FILL_TIMEOUT_S
        while not api.get("query", query=READY_QUERY)["result"]:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no ten scrapes of DCGM_FI_DEV_GPU_TEMP within {FILL_TIMEOUT_S:g}s\n"
                    f"--- exporter ---\n{exporter.log_tail()}\n--- prometheus ---\n"
                    f"{server.log_tail()}"
                )
            time.sleep(1.0)
        yield api
    finally:
        server.stop()
        exporter.stop()


def test_every_query_of_nvidias_dashboard_returns_data_of_the_gpu(
    prometheus: preview.Prometheus, gpu0: Gpu, figures: dict[str, Any]
) -> None:
    data = json.loads(DASHBOARD.read_text())
    values = preview.resolve(prometheus, data, WINDOW_S)  # as the page opens: "All" of each
    figures["variables"] = values
    found = dashboards.queries(data)
    answered: dict[str, Any] = {}
    figures["queries"] = answered
    failures = []
    for where, expr in found:
        query = preview.substitute(expr, values)
        if query.startswith("label_values("):
            continue  # resolved above
        series = prometheus.range(query, WINDOW_S, STEP_S)
        of_gpu = [s for s in series if s["metric"].get("UUID", gpu0.uuid) == gpu0.uuid]
        answered[where] = {
            "query": query,
            "series": len(series),
            "last": of_gpu[0]["values"][-1][1] if of_gpu else None,
        }
        if not of_gpu:
            failures.append(f"{where}: no data of GPU 0\n    {query}")
    assert len(found) == 10
    assert not failures, "\n".join(failures)
