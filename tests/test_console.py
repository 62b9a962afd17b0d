"""The landing page's content (console.build) and markup, from a collector on a stub backend.

The states an operator meets most are checked in a real browser in
tests/integration/test_console_browser.py; these are the edges around them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from migexporter import catalog, console
from migexporter.backends.base import DeviceEvent, EventKind
from migexporter.collector import Collector
from migexporter.exposition import BuildInfo
from migexporter.topology import Gpu, GpuInstance, Placement
from stub_backend import StubBackend, gpu_instance


def _placed(gi_id: int, start: int, size: int, profile: str = "1g.10gb") -> GpuInstance:
    plain = gpu_instance(gi_id, profile)
    return GpuInstance(
        plain.id,
        plain.profile,
        size if size < 8 else 7,
        plain.memory_bytes,
        plain.sms,
        placement=Placement(start, size),
        compute_instances=plain.compute_instances,
    )


def _mig_gpu(index: int, *instances: GpuInstance, name: str = "H100") -> Gpu:
    return Gpu(
        index,
        f"GPU-{index}",
        name,
        mig_enabled=True,
        mig_slices_total=7,
        gpu_instances=instances,
    )


async def _started(backend: StubBackend, **settings: float) -> Collector:
    collector = Collector(backend, BuildInfo("9.9.9"), interval=0.1, topology_refresh=60)
    for name, value in settings.items():
        setattr(collector, name, value)
    await collector.start()
    return collector


async def _until(check, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _build(collector: Collector, now: float | None = None) -> console.Console:
    return console.build(
        collector, node="node-a", simulated=False, links=(), now=now or time.time()
    )


@pytest.fixture
async def stopped_after():
    made: list[tuple[StubBackend, Collector]] = []
    yield made
    for backend, collector in made:
        backend.release.set()
        await collector.stop()


async def test_the_strip_draws_placements_in_order_and_the_free_slices_between_them(
    stopped_after,
) -> None:
    gpu = _mig_gpu(0, _placed(2, 4, 4, "3g.40gb"), _placed(1, 0, 1))
    backend = StubBackend(gpus=[gpu])
    collector = await _started(backend)
    stopped_after.append((backend, collector))
    [view] = _build(collector).gpus
    assert view.columns == 8
    assert view.placed
    blocks = [(c.start, c.span, c.instance.id if c.instance else None) for c in view.cells]
    assert blocks == [(1, 1, 1), (2, 3, None), (5, 4, 2)]
    assert [i.id for i in view.instances] == [1, 2]  # the table in placement order too
    # NVML cannot read row remapping while MIG instances exist: said so, not left blank.
    assert console.Fact("row remap", "not readable with MIG instances") in view.facts


async def test_without_placements_instances_sit_side_by_side_by_compute_slices(
    stopped_after,
) -> None:
    backend = StubBackend(gpus=[_mig_gpu(0, gpu_instance(3), gpu_instance(1))])
    collector = await _started(backend)
    stopped_after.append((backend, collector))
    [view] = _build(collector).gpus
    assert not view.placed
    assert view.columns == 7
    blocks = [(c.start, c.span, c.instance.id if c.instance else None) for c in view.cells]
    assert blocks == [(1, 1, 1), (2, 1, 3), (3, 5, None)]
    assert "Placements unknown" in console.page(collector, node="n", simulated=False, links=())


async def test_a_hung_gpu_is_hung_with_its_reason_and_the_other_stays_ok(stopped_after) -> None:
    backend = StubBackend(gpus=[_mig_gpu(0, gpu_instance(1)), Gpu(1, "GPU-1", "H100")])
    collector = await _started(backend, _gpu_timeout=0.3)
    stopped_after.append((backend, collector))
    backend.hung.add(0)
    await _until(lambda: _build(collector).gpus[0].state == "hung")
    hung, other = _build(collector).gpus
    assert hung.word == "HUNG"
    assert "answer" in hung.reason
    assert hung.since.endswith("UTC")
    assert other.state == "ok"
    backend.hung.clear()
    backend.release.set()
    await _until(lambda: _build(collector).gpus[0].state == "ok")


async def test_badges_come_from_page_and_ticket_xids_of_the_last_hour_only(stopped_after) -> None:
    backend = StubBackend(gpus=[_mig_gpu(0, gpu_instance(1), gpu_instance(2), gpu_instance(3))])
    collector = await _started(backend)
    stopped_after.append((backend, collector))
    now = time.time()
    collector.handle_events(
        [
            DeviceEvent("GPU-0", EventKind.XID, now - 2 * 3600, xid=48, gpu_instance_id=1),
            DeviceEvent("GPU-0", EventKind.XID, now - 60, xid=13, gpu_instance_id=2),  # info
            DeviceEvent("GPU-0", EventKind.XID, now - 60, xid=43, gpu_instance_id=3),
            DeviceEvent("GPU-0", EventKind.XID, now - 30, xid=48, gpu_instance_id=3),
            DeviceEvent("GPU-0", EventKind.XID, now - 10, xid=79),  # the GPU itself
        ]
    )
    [view] = _build(collector, now).gpus
    badges = {i.id: i.badge for i in view.instances}
    assert badges[1] is None  # two hours old
    assert badges[2] is None  # info severity
    assert badges[3] == console.Badge("page", "XID 48 ROBUST_CHANNEL_GPU_ECC_DBE")
    assert view.badge is not None
    assert view.badge.text.startswith("XID 79")
    assert view.attention == "page"


async def test_recovery_action_and_row_remap_facts_say_what_the_gpu_needs(stopped_after) -> None:
    backend = StubBackend(gpus=[Gpu(0, "GPU-0", "H100"), Gpu(1, "GPU-1", "H100")])
    backend.readings[0] = [
        (catalog.GPU_RECOVERY_ACTION, 0.0, ("none",)),
        (catalog.GPU_RECOVERY_ACTION, 1.0, ("node_reboot",)),
        (catalog.GPU_ROW_REMAP_FAILED, 1.0, ()),
        (catalog.GPU_ROW_REMAP_PENDING, 0.0, ()),
    ]
    backend.readings[1] = [
        (catalog.GPU_RECOVERY_ACTION, 1.0, ("drain_p2p",)),
        (catalog.GPU_ROW_REMAP_FAILED, 0.0, ()),
        (catalog.GPU_ROW_REMAP_PENDING, 1.0, ()),
        (catalog.GPU_REMAPPED_ROWS, 2.0, ("uncorrected",)),
    ]
    collector = await _started(backend)
    stopped_after.append((backend, collector))
    first, second = _build(collector).gpus
    facts = {f.label: f for f in first.facts}
    assert facts["recovery"] == console.Fact("recovery", "needs node reboot", "page")
    assert facts["row remap"] == console.Fact("row remap", "FAILED: replace the GPU", "page")
    assert first.attention == "page"
    facts = {f.label: f for f in second.facts}
    assert facts["recovery"].level == "ticket"
    assert facts["row remap"] == console.Fact("row remap", "pending: needs GPU reset", "ticket")
    assert second.attention == "ticket"


async def test_backend_down_shows_a_banner_and_unknown_gpus(stopped_after) -> None:
    backend = StubBackend(gpus=[_mig_gpu(0, gpu_instance(1))])
    collector = await _started(backend, _topology_refresh=0.2)  # asks the backend again soon
    stopped_after.append((backend, collector))
    backend.down = True
    await _until(lambda: not collector.backend_up)
    content = _build(collector)
    assert content.backend_down is not None
    assert content.backend_down.reason == "stub: driver gone"
    assert "ago" in content.backend_down_since
    assert [g.state for g in content.gpus] == ["unknown"]
    html = console.page(collector, node="n", simulated=False, links=())
    assert "Backend stub is down" in html
    backend.down = False
    await _until(lambda: collector.backend_up)
    assert _build(collector).backend_down is None


async def test_names_from_the_driver_are_escaped(stopped_after) -> None:
    backend = StubBackend(gpus=[Gpu(0, "GPU-0", "<script>alert(1)</script>")])
    collector = await _started(backend)
    stopped_after.append((backend, collector))
    html = console.page(collector, node="<b>n</b>", simulated=True, links=("/metrics",))
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;n&lt;/b&gt;" in html
    assert 'data-simulated="true"' in html
