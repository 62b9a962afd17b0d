"""The DCGM backend behind a standalone (simulated) nv-hostengine, scraped by a real Prometheus.

The host engine goes away and comes back: the exporter keeps serving, says the backend is down,
drops instance series instead of freezing them, reconnects with backoff and keeps its counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from harness import Query, Service, free_port, start_exporter, wait_for

from migexporter import catalog

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

TIMEOUT_S = 20.0
XID_SELECTOR = 'nvidia_gpu_xid_errors_total{gpu="1",gpu_instance_id="7",xid="48"}'
INSTANCE_MEMORY = "nvidia_gpu_instance_memory_used_bytes"


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The DCGM backend connected over TCP to the simulated node's nv-hostengine."""
    address = f"127.0.0.1:{free_port()}"
    service = start_exporter(
        tmp_path_factory.mktemp("exporter"), "--backend", "dcgm", "--dcgm-address", address
    )
    yield service
    service.stop()


def backend_up(query: Query) -> list[tuple[str, float]]:
    return [(s.labels["backend"], s.value) for s in query("migexporter_backend_up")]


def test_host_engine_loss_and_recovery(exporter: Service, query: Query) -> None:
    """Down: backend_up 0, instance series gone, not ready. Up again: all back, counts kept."""
    reply = exporter.post("/api/sim/xid", {"gpu": 1, "gpu_instance_id": 7, "xid": 48})
    assert 200 <= reply.status < 300, reply.body[:500]
    wait_for(lambda: query(XID_SELECTOR), TIMEOUT_S, what=XID_SELECTOR)
    instances = wait_for(lambda: query(INSTANCE_MEMORY), TIMEOUT_S, what=INSTANCE_MEMORY)

    reply = exporter.post("/api/sim/fault", {"kind": "hostengine_down"})
    assert 200 <= reply.status < 300, reply.body[:500]
    try:
        wait_for(
            lambda: backend_up(query),
            TIMEOUT_S,
            until=lambda up: up == [("dcgm", 0.0)],
            what='migexporter_backend_up{backend="dcgm"} == 0',
        )
        assert exporter.get("/-/ready").status == 503
        assert exporter.get("/metrics").status == 200
        # Removed, not frozen: Prometheus marks them stale once a scrape lacks them.
        wait_for(lambda: query(INSTANCE_MEMORY), TIMEOUT_S, until=lambda r: r == [])
        assert [s.value for s in query(XID_SELECTOR)] == [1.0]
    finally:  # leave the exporter healthy whatever happened
        reply = exporter.post("/api/sim/fault", {"kind": "hostengine_up"})
    assert 200 <= reply.status < 300, reply.body[:500]

    # Backoff is 1 s doubling to 30 s: a few seconds of outage reconnect within seconds.
    wait_for(
        lambda: backend_up(query),
        TIMEOUT_S,
        until=lambda up: up == [("dcgm", 1.0)],
        what="the backend back up",
    )
    wait_for(
        lambda: query(INSTANCE_MEMORY),
        TIMEOUT_S,
        until=lambda r: len(r) == len(instances),
        what="every instance series back",
    )
    assert exporter.get("/-/ready").status == 200
    assert [s.value for s in query(XID_SELECTOR)] == [1.0]
    reply = exporter.post("/api/sim/xid", {"gpu": 1, "gpu_instance_id": 7, "xid": 48})
    assert 200 <= reply.status < 300, reply.body[:500]
    wait_for(
        lambda: query(XID_SELECTOR),
        TIMEOUT_S,
        until=lambda r: [s.value for s in r] == [2.0],
        what="the counter going on from 1 to 2",
    )


def restart_host_engine(exporter: Service, query: Query) -> None:
    """Stop and start the node's nv-hostengine, and wait for the exporter to reconnect."""
    for kind, up in (("hostengine_down", 0.0), ("hostengine_up", 1.0)):
        reply = exporter.post("/api/sim/fault", {"kind": kind})
        assert 200 <= reply.status < 300, reply.body[:500]
        wait_for(
            lambda: backend_up(query),
            TIMEOUT_S,
            until=lambda seen, up=up: seen == [("dcgm", up)],
            what=f"backend_up {up} after {kind}",
        )


def test_profiling_limit_leaves_out_what_cannot_be_watched(exporter: Service, query: Query) -> None:
    """A GPU that cannot watch SM occupancy with the rest: 1003 is 0 there, all else reports."""
    fleet = exporter.get("/api/sim/fleet").json()
    uuids = [gpu["uuid"] for gpu in fleet["gpus"]]
    reply = exporter.post("/api/sim/fault", {"gpu": 0, "kind": "profiling_multipass"})
    assert 200 <= reply.status < 300, reply.body[:500]
    try:
        restart_host_engine(exporter, query)  # the exporter reads metric groups on connecting
        supported = wait_for(
            lambda: {
                (s.labels["gpu_uuid"], s.labels["field"]): s.value
                for s in query("migexporter_field_supported")
            },
            TIMEOUT_S,
            until=lambda seen: seen.get((uuids[0], "1003")) == 0.0,
            what='migexporter_field_supported{field="1003"} == 0 on GPU 0',
        )
        # NVLink (1011, 1012) is not reported in MIG mode: GPUs 0 and 1 have MIG enabled.
        mig = {gpu["uuid"] for gpu in fleet["gpus"] if gpu["mig_enabled"]}
        assert supported == {
            (uuid, str(field)): 0.0
            if (uuid, field) == (uuids[0], 1003) or (uuid in mig and field in (1011, 1012))
            else 1.0
            for uuid in uuids
            for field in catalog.PROFILING_FIELDS
        }
        # Profiling ratios need two samples after a new watch, on every GPU: wait for them.
        for back in (
            'nvidia_gpu_instance_sm_active_ratio{gpu="0"}',
            'nvidia_gpu_instance_tensor_active_ratio{gpu="0"}',
            'nvidia_gpu_instance_sm_occupancy_ratio{gpu="1"}',
        ):
            wait_for(lambda back=back: query(back), TIMEOUT_S, what=back)
        assert query('nvidia_gpu_instance_sm_occupancy_ratio{gpu="0"}') == []
    finally:  # leave the node as the other tests expect it
        exporter.post("/api/sim/fault", {"gpu": 0, "kind": "recover"})
        restart_host_engine(exporter, query)
