"""Collector: cycles, topology changes, XID counting, and GPUs that fail or hang."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migexporter.backends.base import BackendUnavailableError, DeviceEvent, EventKind
from migexporter.collector import Collector, XidLog
from migexporter.exposition import BuildInfo
from migexporter.topology import Gpu
from stub_backend import StubBackend, gpu_instance


def _gpus() -> list[Gpu]:
    return [
        Gpu(
            0,
            "GPU-0",
            "H100",
            mig_enabled=True,
            mig_slices_total=7,
            gpu_instances=(gpu_instance(1), gpu_instance(2)),
        ),
        Gpu(1, "GPU-1", "H100"),
    ]


def _values(collector: Collector, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = collector.exposition.text.decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def _eventually(check, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def running():
    backend = StubBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.1, topology_refresh=0.2)
    await collector.start()
    yield backend, collector
    backend.release.set()
    await collector.stop()


async def test_first_cycle_makes_it_ready_with_every_instance(running):
    """After start() the exposition already holds every GPU instance."""
    _backend, collector = running
    assert collector.ready
    ids = {
        dict(k)["gpu_instance_id"]
        for k in _values(collector, "nvidia_gpu_instance_sm_active_ratio")
    }
    assert ids == {"1", "2"}


async def test_destroyed_instance_loses_its_series_without_restart(running):
    """Removing a GI from the backend removes its series at the next topology refresh."""
    backend, collector = running
    backend.gpus[0] = Gpu(
        0,
        "GPU-0",
        "H100",
        mig_enabled=True,
        mig_slices_total=7,
        gpu_instances=(gpu_instance(3, "3g.40gb"),),
    )
    await _eventually(
        lambda: (
            {
                dict(k)["gpu_instance_id"]
                for k in _values(collector, "nvidia_gpu_instance_sm_active_ratio")
            }
            == {"3"}
        )
    )


async def test_xid_is_counted_per_event_and_visible_at_once(running):
    """Two identical XIDs count two, rendered without waiting for the next cycle."""
    backend, collector = running
    for _ in range(2):
        backend.events.put(DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 2, 0))
    backend.events.put(DeviceEvent("GPU-1", EventKind.XID, time.time(), 31))
    await _eventually(lambda: len(_counted(collector, "nvidia_gpu_xid_errors_total")) == 2, 2)
    values = {
        dict(k)["xid"]: (dict(k), v)
        for k, v in _counted(collector, "nvidia_gpu_xid_errors_total").items()
    }
    labels, count = values["48"]
    assert count == 2
    assert (labels["gpu"], labels["gpu_instance_id"], labels["compute_instance_id"]) == (
        "0",
        "2",
        "0",
    )
    assert values["31"][0]["gpu_instance_id"] == ""
    recent = list(collector.events)
    assert recent[0].event.xid == 31  # newest first
    assert recent[1].mig_uuid == "MIG-0002"


def _counted(collector: Collector, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v for k, v in _values(collector, name).items() if v > 0}


async def test_the_next_render_gzips_what_scrapers_asked_for():
    """A format asked for gzipped is compressed by the next render, not by the next scrape."""
    collector = Collector(StubBackend(gpus=_gpus()), BuildInfo("test"))  # not started: no renders
    assert collector.exposition.gzipped_formats() == frozenset()
    collector.exposition.body(openmetrics=True, gzipped=True)
    await collector._render()
    assert collector.exposition.gzipped_formats() == {True}


async def test_event_series_appear_with_their_first_event(running):
    """No event series before an event (none pre-created at 0); an attributed XID carries the
    profile its GPU instance had when it arrived, an unattributed one has none."""
    backend, collector = running
    assert _values(collector, "nvidia_gpu_xid_errors_total") == {}
    assert _values(collector, "nvidia_gpu_ecc_error_events_total") == {}
    assert _values(collector, "nvidia_gpu_unavailable_events_total") == {}
    now = time.time()
    backend.events.put(DeviceEvent("GPU-0", EventKind.XID, now, xid=48, gpu_instance_id=2))
    backend.events.put(DeviceEvent("GPU-1", EventKind.XID, now, xid=79))
    await _eventually(lambda: len(collector.events) == 2, 2)
    profiles = {
        dict(k)["gpu_uuid"]: dict(k).get("profile")
        for k in _values(collector, "nvidia_gpu_xid_errors_total")
    }
    assert profiles == {"GPU-0": "1g.10gb", "GPU-1": None}
    last = _values(collector, "nvidia_gpu_xid_last_seconds")
    assert sorted(last.values()) == [now, now]


async def test_events_beside_xid_are_counted_in_their_own_families(running):
    """ECC, unavailable and recovery-action events: one each, in /api/events too."""
    backend, collector = running
    now = time.time()
    for kind in (EventKind.ECC_SINGLE_BIT, EventKind.ECC_DOUBLE_BIT, EventKind.ECC_DOUBLE_BIT):
        backend.events.put(DeviceEvent("GPU-1", kind, now))
    backend.events.put(DeviceEvent("GPU-1", EventKind.GPU_UNAVAILABLE, now))
    backend.events.put(
        DeviceEvent("GPU-1", EventKind.RECOVERY_ACTION, now, recovery_action="gpu_reset")
    )
    await _eventually(lambda: len(collector.events) == 5, 2)
    ecc = {
        dict(k)["error_type"]: v
        for k, v in _counted(collector, "nvidia_gpu_ecc_error_events_total").items()
    }
    assert ecc == {"corrected": 1, "uncorrected": 2}
    unavailable = _counted(collector, "nvidia_gpu_unavailable_events_total")
    assert [dict(k)["gpu_uuid"] for k in unavailable] == ["GPU-1"]
    actions = _counted(collector, "nvidia_gpu_recovery_action_events_total")
    assert [(dict(k)["action"], v) for k, v in actions.items()] == [("gpu_reset", 1)]
    assert _counted(collector, "nvidia_gpu_xid_errors_total") == {}


async def test_lost_gpu_goes_down_and_others_keep_reporting(running):
    """A GPU raising GpuUnavailableError has up 0 and no readings; the other GPU is unaffected."""
    backend, collector = running
    backend.lost.add(0)
    await _eventually(
        lambda: _values(collector, "nvidia_gpu_up").get((("gpu", "0"), ("gpu_uuid", "GPU-0"))) == 0
    )
    temps = _values(collector, "nvidia_gpu_temperature_celsius")
    assert [dict(k)["gpu"] for k in temps] == ["1"]
    assert collector.ready  # one lost GPU does not make the exporter unready
    backend.lost.clear()
    await _eventually(lambda: len(_values(collector, "nvidia_gpu_temperature_celsius")) == 2)


async def test_hung_gpu_times_out_alone():
    """A GPU whose driver calls block is marked down; the other GPU keeps updating."""
    backend = StubBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.1, topology_refresh=60)
    collector._gpu_timeout = 0.3
    await collector.start()
    try:
        backend.hung.add(0)
        await _eventually(
            lambda: (
                _values(collector, "nvidia_gpu_up").get((("gpu", "0"), ("gpu_uuid", "GPU-0"))) == 0
            )
        )
        before = collector._last_collect
        await _eventually(lambda: collector._last_collect != before)
        assert _values(collector, "nvidia_gpu_up")[(("gpu", "1"), ("gpu_uuid", "GPU-1"))] == 1
    finally:
        backend.hung.clear()
        backend.release.set()
        await collector.stop()
    assert backend.closed


async def test_a_backend_that_hangs_listing_gpus_goes_down_instead_of_stalling():
    """gpu_count blocks (a host engine stuck behind a hung GPU): after the GPU timeout the
    backend is down and no stale value is shown; one stuck call is never joined by more; when
    it returns, the backend comes back."""
    backend = StubBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.05, topology_refresh=0.1)
    collector._gpu_timeout = 0.3
    await collector.start()
    calls = 0
    listing = threading.Event()
    original = backend.gpu_count

    def stuck() -> int:
        nonlocal calls
        calls += 1
        listing.wait(30)
        return original()

    backend.gpu_count = stuck  # type: ignore[method-assign]
    backend_up = (("backend", "stub"),)
    try:
        await _eventually(lambda: _values(collector, "migexporter_backend_up")[backend_up] == 0)
        assert not _values(collector, "nvidia_gpu_instance_sm_active_ratio")
        await asyncio.sleep(0.5)  # several cycles while the call is stuck
        assert calls == 1
        listing.set()
        await _eventually(lambda: _values(collector, "migexporter_backend_up")[backend_up] == 1)
        await _eventually(lambda: bool(_values(collector, "nvidia_gpu_instance_sm_active_ratio")))
    finally:
        listing.set()
        backend.release.set()
        await collector.stop()


async def test_other_gpus_keep_their_cadence_while_one_hangs():
    """A cycle waits half an interval for a hung GPU, not the GPU timeout: the other GPU is sampled
    every cycle until the hung one is declared down (a cycle that waited for the timeout would
    sample it once in that time)."""
    backend = StubBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.1, topology_refresh=60)
    collector._gpu_timeout = 1.5
    await collector.start()
    up = (("gpu", "0"), ("gpu_uuid", "GPU-0"))
    try:
        backend.hung.add(0)
        before = backend.sampled[1]
        await _eventually(lambda: _values(collector, "nvidia_gpu_up").get(up) == 0)
        assert backend.sampled[1] - before >= 4
    finally:
        backend.hung.clear()
        backend.release.set()
        await collector.stop()


async def test_a_slow_gpu_stays_up_and_its_late_samples_are_shown():
    """A GPU slower than the interval but within the timeout is never declared down, and what
    its late calls return replaces its values."""
    backend = StubBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.1, topology_refresh=60)
    collector._gpu_timeout = 2.0
    await collector.start()
    temperature = (("gpu", "0"), ("gpu_uuid", "GPU-0"))
    try:
        backend.slow[0] = 0.25
        taken = backend.sampled[0]
        await _eventually(lambda: backend.sampled[0] >= taken + 4)
        assert collector._errors["GPU-0"] == 0
        assert _values(collector, "nvidia_gpu_up")[temperature] == 1
        late = collector.samples["GPU-0"]
        await _eventually(lambda: collector.samples["GPU-0"] is not late)
    finally:
        backend.slow.clear()
        backend.release.set()
        await collector.stop()


async def test_backend_that_cannot_open_raises():
    """start() reports a backend that cannot be opened, so the CLI can exit with a message."""
    collector = Collector(StubBackend(down=True), BuildInfo("test"))
    with pytest.raises(BackendUnavailableError):
        await collector.start()


async def test_backend_loss_drops_gpu_series_and_readiness(running):
    """When the backend goes away the GPU series go and /-/ready would say 503."""
    backend, collector = running
    backend.down = True
    await _eventually(lambda: not collector.ready)
    await _eventually(lambda: not _values(collector, "nvidia_gpu_info"))
    assert _values(collector, "migexporter_backend_up")[(("backend", "stub"),)] == 0


class CountingBackend(StubBackend):
    """Counts the sampling attempts that failed, to compare with the error counter."""

    failed_samples: int = 0

    def sample(self, gpu):
        try:
            return super().sample(gpu)
        except Exception:
            self.failed_samples += 1
            raise


async def test_a_lost_gpu_counts_one_error_per_failed_collection():
    """Re-enumeration keeps a lost GPU without counting it again: errors equal failed samples."""
    backend = CountingBackend(gpus=_gpus())
    collector = Collector(backend, BuildInfo("test"), interval=0.1, topology_refresh=0.1)
    await collector.start()
    try:
        backend.lost.add(0)
        await _eventually(lambda: backend.failed_samples >= 5)
        collector._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector._loop_task
        # A sample failing in its worker thread while the loop was cancelled is not counted;
        # counting refreshes too would put the errors well above the failed samples.
        assert backend.failed_samples - 1 <= collector._errors["GPU-0"] <= backend.failed_samples
    finally:
        await collector.stop()


class RecordingBackend(StubBackend):
    """Keeps when each sample call started and ended, by GPU index."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[int, float, float]] = []

    def sample(self, gpu: Gpu):
        started = time.monotonic()
        try:
            return super().sample(gpu)
        finally:
            self.calls.append((gpu.index, started, time.monotonic()))


async def test_a_cycle_starts_each_gpus_call_when_the_one_before_has_answered():
    """GPU calls started all at once fight over the interpreter lock: within a cycle, each
    GPU's call starts once the call of the GPU before it has returned."""
    gpus = [Gpu(i, f"GPU-{i}", "H100") for i in range(4)]
    backend = RecordingBackend(gpus=gpus, slow=dict.fromkeys(range(4), 0.02))
    collector = Collector(backend, BuildInfo("test"), interval=1.0, topology_refresh=60)
    await collector.start()
    try:
        first_cycle = backend.calls[:4]
        assert [index for index, _, _ in first_cycle] == [0, 1, 2, 3]
        for (_, _, ended), (_, started, _) in itertools.pairwise(first_cycle):
            assert started >= ended
    finally:
        await collector.stop()


async def test_a_paging_xid_is_one_warning_line_naming_where_it_happened(running, caplog):
    backend, collector = running
    caplog.set_level(logging.INFO, logger="migexporter.collector")
    backend.events.put(DeviceEvent("GPU-0", EventKind.XID, time.time(), 48, 2, 0))
    backend.events.put(DeviceEvent("GPU-1", EventKind.XID, time.time(), 63))  # a ticket
    backend.events.put(DeviceEvent("GPU-1", EventKind.XID, time.time(), 31))  # info: no line
    await _eventually(lambda: len(_counted(collector, "nvidia_gpu_xid_errors_total")) == 3, 2)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "XID" in r.getMessage()]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    page = lines[0][1]
    assert page.startswith(
        "XID 48 ROBUST_CHANNEL_GPU_ECC_DBE (page) on GPU 0 (GPU-0) GPU instance 2"
    )
    assert "compute instance 0" in page
    assert lines[1][1].startswith("XID 63 INFOROM_DRAM_RETIREMENT_EVENT (ticket) on GPU 1")


def test_an_xid_storm_logs_a_burst_then_one_summary_per_window(caplog):
    now = [0.0]
    xid_log = XidLog(burst=3, window=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="migexporter.collector")
    for _ in range(1000):
        xid_log.event(63, "GPU 0")
    xid_log.event(31, "GPU 0")  # info severity: counted elsewhere, never logged
    xid_log.event(48, "GPU 1")
    xid_log.flush()  # the window is still open: nothing more yet
    assert len(caplog.records) == 3
    now[0] = 10.0
    xid_log.flush()
    summary = caplog.records[-1]
    assert summary.levelno == logging.WARNING  # a page was among those held back
    assert summary.getMessage() == (
        "998 more XID events in the last 10s, not logged one by one: XID 63 x997, XID 48 x1"
    )
    xid_log.event(43, "GPU 2")  # a new window logs again
    assert caplog.records[-1].getMessage().startswith("XID 43 ")
    assert len(caplog.records) == 5
