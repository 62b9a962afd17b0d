"""HTTP: negotiated formats from pre-rendered bytes, health, events, landing page, 404/405."""

from __future__ import annotations

import gzip
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from migexporter import httpguard
from migexporter.backends.base import DeviceEvent, EventKind
from migexporter.collector import Collector
from migexporter.exposition import BuildInfo
from migexporter.server import create_app, start_server
from migexporter.sim import Fleet, add_routes
from migexporter.topology import Gpu
from stub_backend import StubBackend, gpu_instance

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
async def client():
    gpus = [
        Gpu(
            0,
            "GPU-0",
            "NVIDIA H100 80GB HBM3",
            mig_enabled=True,
            mig_slices_total=7,
            gpu_instances=(gpu_instance(1, "3g.40gb"),),
        )
    ]
    # One cycle only, so that two reads of /metrics see the same body.
    collector = Collector(StubBackend(gpus=gpus), BuildInfo("test"), interval=3600.0)
    await collector.start()
    async with TestClient(TestServer(create_app(collector))) as test_client:
        test_client.collector = collector  # type: ignore[attr-defined]
        yield test_client
    await collector.stop()


async def test_metrics_plain_text_by_default(client):
    """Without Accept, /metrics is Prometheus text 0.0.4."""
    response = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "nvidia_gpu_instance_sm_active_ratio{" in await response.text()


async def test_metrics_openmetrics_for_prometheus(client):
    """Prometheus's Accept header gets OpenMetrics, ending with EOF."""
    response = await client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    assert (await response.read()).endswith(b"# EOF\n")


async def test_metrics_gzip_when_asked(client):
    """Accept-Encoding: gzip returns the latest exposition, compressed."""
    before = client.collector.exposition.text
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(await response.read())
    # A collection cycle may end while the request is in flight.
    assert body in {before, client.collector.exposition.text}


async def test_health_and_readiness(client):
    """Healthy always; ready after the first collection."""
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200


async def test_unknown_path_and_wrong_method(client):
    """Unknown paths are 404 and writes to read endpoints are 405."""
    assert (await client.get("/nope")).status == 404
    assert (await client.post("/metrics")).status == 405
    assert (await client.head("/metrics")).status == 200


async def test_events_newest_first_and_limit_validated(client):
    """/api/events lists XIDs newest first; a bad limit is a 400, not a traceback."""
    client.collector.handle_events(
        [
            DeviceEvent("GPU-0", EventKind.XID, time.time(), 13, 1, 0),
            DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 1, None),
        ]
    )
    events = await (await client.get("/api/events")).json()
    assert [e["xid"] for e in events] == [48, 13]
    assert events[0]["profile"] == "3g.40gb"
    assert events[0]["mig_uuid"] == "MIG-0001"
    assert (events[0]["mnemonic"], events[0]["action"], events[0]["severity"]) == (
        "ROBUST_CHANNEL_GPU_ECC_DBE",
        "WORKFLOW_XID_48",
        "page",
    )
    assert events[0]["description"] == "Double Bit ECC Error"
    assert len(await (await client.get("/api/events?limit=1")).json()) == 1
    for bad in ("0", "x", "-1", "100000"):
        response = await client.get(f"/api/events?limit={bad}")
        assert response.status == 400


async def test_events_beside_xid_and_unknown_xids_in_the_api(client):
    """ECC and recovery events say what they are; an XID the catalog lacks says unknown."""
    now = time.time()
    client.collector.handle_events(
        [
            DeviceEvent("GPU-0", EventKind.XID, now, 4242),
            DeviceEvent("GPU-0", EventKind.ECC_DOUBLE_BIT, now),
            DeviceEvent("GPU-0", EventKind.RECOVERY_ACTION, now, recovery_action="node_reboot"),
        ]
    )
    recovery, ecc, unknown = await (await client.get("/api/events?limit=3")).json()
    assert (recovery["kind"], recovery["recovery_action"], recovery["xid"]) == (
        "recovery_action",
        "node_reboot",
        None,
    )
    assert (ecc["kind"], ecc["error_type"], ecc["action"]) == (
        "ecc_double_bit",
        "uncorrected",
        None,
    )
    assert (unknown["xid"], unknown["action"], unknown["severity"]) == (4242, "unknown", "ticket")


async def test_landing_page_lists_instances(client):
    """The landing page shows the GPU, its instance's profile and links to /metrics."""
    page = await (await client.get("/")).text()
    assert "NVIDIA H100 80GB HBM3" in page
    assert "3g.40gb" in page
    assert 'href="/metrics"' in page


async def test_start_server_reports_its_url():
    """start_server on port 0 returns the bound URL and closes cleanly."""
    collector = Collector(StubBackend(), BuildInfo("test"))
    server = await start_server(create_app(collector), "127.0.0.1", 0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert not server.url.endswith(":0")
    finally:
        await server.close()


async def test_aiohttps_own_4xx_answers_have_a_json_error_body(client):
    """No route, a wrong method and a body too large answer JSON, as the simulation routes do."""
    missing = await client.get("/nothing")
    assert (missing.status, await missing.json()) == (404, {"error": "no such path: /nothing"})
    wrong = await client.post("/metrics")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET,HEAD"
    assert (await wrong.json())["error"].startswith("POST is not allowed here")


async def test_a_body_over_the_limit_is_a_413_with_a_json_error():
    collector = Collector(StubBackend(gpus=[]), BuildInfo("test"), interval=3600.0)
    app = create_app(collector)
    add_routes(app, Fleet.default())
    async with TestClient(TestServer(app)) as test_client:
        response = await test_client.post(
            "/api/sim/xid", data=b"x" * (httpguard.MAX_BODY_BYTES + 1)
        )
        assert response.status == 413
        assert list(await response.json()) == ["error"]
