"""NVIDIA's own dcgm-exporter dashboard works, unchanged, on migexporter ``--compat dcgm-exporter``.

Two simulated nodes, one per backend (NVML and DCGM), each with a MIG GPU and whole GPUs, serve
the compat families; a real Prometheus scrapes both (in OpenMetrics, its first choice). Every
variable and panel query of ``tests/data/dcgm-exporter-dashboard.json`` (NVIDIA/dcgm-exporter
``grafana/dcgm-exporter-dashboard.json`` at d5e5f51, dashboard 12239) then runs as Grafana runs
it on opening the page, and must come back with data.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from harness import Prometheus, Service, start_exporter, start_prometheus, wait_for

from migexporter.mixin import dashboards, preview

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[1] / "data" / "dcgm-exporter-dashboard.json"
FLEET = "h100-80gb:3g.40gb+1g.10gb*4,h100-80gb,a100-40gb"
# The NVML node serves the 4.9 names too, as an operator moving dashboards over would.
COMPAT = {"nvml": "dcgm-exporter,dcgm-exporter-4.9", "dcgm": "dcgm-exporter"}
WINDOW_S = 30.0
STEP_S = 2.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    started: dict[str, Service] = {}
    try:
        for backend, profiles in COMPAT.items():
            started[backend] = start_exporter(
                tmp_path_factory.mktemp(backend), FLEET,
                "--backend", backend, "--compat", profiles,
            )  # fmt: skip
        yield started
    finally:
        for service in started.values():
            service.stop()


@pytest.fixture(scope="module")
def scraped(
    nodes: dict[str, Service], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    targets = [urllib.parse.urlsplit(s.url).netloc for s in nodes.values()]
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), targets)
    wait_for(
        lambda: server.query(
            "count(count by (instance) (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE)) == 2"
            " and on () count(count_over_time(DCGM_FI_DEV_GPU_TEMP[1m]) >= 10) > 0"
        ),
        timeout=90.0,
        interval=1.0,
        what="compat series of both nodes in Prometheus",
    )
    yield server
    server.service.stop()


def test_every_query_of_nvidias_dashboard_returns_data(scraped: Prometheus) -> None:
    api = preview.Prometheus(scraped.service.url)
    data = json.loads(DASHBOARD.read_text())
    values = preview.resolve(api, data, WINDOW_S)  # as the page opens: "All" of each variable
    failures = []
    found = dashboards.queries(data)
    for where, expr in found:
        query = preview.substitute(expr, values)
        if query.startswith("label_values("):
            continue  # resolved above; resolve fails on a variable without values
        series = api.range(query, WINDOW_S, STEP_S)
        if not series:
            failures.append(f"{where}: no data\n    {query}")
    assert len(found) == 10
    assert not failures, "\n".join(failures)


def test_each_backend_serves_the_mig_shape(scraped: Prometheus, nodes: dict[str, Service]) -> None:
    """Both backends give every GPU instance its own series, with GPU_I_ID and GPU_I_PROFILE,
    and whole GPUs none; device values repeat the GPU's on each instance."""
    for backend, service in nodes.items():
        instance = urllib.parse.urlsplit(service.url).netloc
        temps = scraped.query(f'DCGM_FI_DEV_GPU_TEMP{{instance="{instance}"}}')
        by_gpu: dict[str, list[dict[str, str]]] = {}
        for sample in temps:
            by_gpu.setdefault(sample.labels["gpu"], []).append(sample.labels)
        mig = by_gpu["0"]
        assert sorted(s["GPU_I_PROFILE"] for s in mig) == ["1g.10gb"] * 4 + ["3g.40gb"], backend
        assert len({s["GPU_I_ID"] for s in mig}) == 5, backend
        assert len({s.value for s in temps if s.labels["gpu"] == "0"}) == 1, backend
        assert all("GPU_I_ID" not in s for s in by_gpu["1"] + by_gpu["2"]), backend
        used = scraped.query(f'DCGM_FI_DEV_FB_USED{{instance="{instance}",gpu="0"}}')
        native = scraped.query(f'nvidia_gpu_instance_memory_used_bytes{{instance="{instance}"}}')
        mib = {s.labels["GPU_I_ID"]: s.value for s in used}
        # The same scrape holds both: the compat value is the native one converted.
        assert mib == {s.labels["gpu_instance_id"]: s.value // 2**20 for s in native}, backend


def test_counters_keep_their_names_through_openmetrics(
    scraped: Prometheus, nodes: dict[str, Service]
) -> None:
    """Prometheus scrapes OpenMetrics first; the energy counter arrives under dcgm-exporter's
    name, in mJ, equal to the native joules of the same scrape."""
    for backend, service in nodes.items():
        instance = urllib.parse.urlsplit(service.url).netloc
        where = f'instance="{instance}",gpu="1"'
        compat = scraped.query(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{where}}}")
        native = scraped.query(f"nvidia_gpu_energy_joules_total{{{where}}}")
        assert len(compat) == 1, backend
        assert compat[0].value == round(native[0].value * 1000), backend


def test_the_4_9_names_carry_base_units(scraped: Prometheus, nodes: dict[str, Service]) -> None:
    """Next to the 4.8 names, the 4.9 ones: Hz for MHz, a 0-1 ratio for percent, joules for mJ,
    and DCGM_FI_SYSTEM_DRIVER_VERSION for DCGM_FI_DRIVER_VERSION."""
    instance = urllib.parse.urlsplit(nodes["nvml"].url).netloc

    def by_entity(name: str) -> dict[tuple[str, str], float]:
        found = scraped.query(f'{name}{{instance="{instance}"}}')
        return {(s.labels["gpu"], s.labels.get("GPU_I_ID", "")): s.value for s in found}

    mhz = by_entity("DCGM_FI_DEV_SM_CLOCK")
    assert mhz
    assert by_entity("DCGM_FI_DEV_SM_CLOCK_HERTZ") == {k: v * 1e6 for k, v in mhz.items()}
    percent = by_entity("DCGM_FI_DEV_GPU_UTIL")
    assert percent
    ratio = by_entity("DCGM_FI_DEV_GPU_UTIL_RATIO")
    assert ratio.keys() == percent.keys()
    assert all(abs(ratio[k] * 100 - percent[k]) <= 0.5 for k in percent)
    labels = scraped.query(f'DCGM_FI_DEV_GPU_TEMP_CELSIUS{{instance="{instance}"}}')[0].labels
    assert "DCGM_FI_SYSTEM_DRIVER_VERSION" in labels
    assert "DCGM_FI_DRIVER_VERSION" not in labels
