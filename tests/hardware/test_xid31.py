"""XID 31 on a real GPU (MIG disabled): counted for the GPU and listed with its action.

xid_fault.py, a child process, stores through an invalid pointer on GPU 0, and the driver raises
XID 31 for that process alone: an application error, which needs no reset and changes nothing
about the GPU. The test measures how long after the faulting call returned the count showed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu, fault_report, start_fault

if TYPE_CHECKING:
    from types import ModuleType

pytestmark = pytest.mark.gpu

XID = 31
ACTION = "RESTART_APP"
VISIBLE_TIMEOUT_S = 10.0
POLL_S = 0.002
SETTLE_S = 0.6  # over two exporter cycles: a second count of the same fault would show by then


def test_xid31_from_an_invalid_write_is_counted_once_and_listed_with_its_action(
    exporter: Exporter, nvml: ModuleType, gpu0: Gpu, figures: dict[str, Any]
) -> None:
    """One fault: the whole-GPU XID-31 counter rises by exactly 1; /api/events says what to do."""
    try:
        mig_mode = int(nvml.nvmlDeviceGetMigMode(gpu0.handle)[0])
    except nvml.NVMLError_NotSupported:
        mig_mode = 0
    assert mig_mode == 0, "this test needs MIG disabled on GPU 0; it never changes MIG mode"
    before = exporter.xid_count(gpu0.uuid, XID)
    figures["count_before"] = before
    child = start_fault(gpu0.uuid)
    seen = exporter.wait_for_xid(gpu0.uuid, XID, before, VISIBLE_TIMEOUT_S, POLL_S)
    fault = fault_report(child)  # first: a fault that went wrong explains a count that did not
    figures["fault"] = {"error": fault.error, "pid": fault.pid}
    assert seen is not None, f"XID {XID} not counted within {VISIBLE_TIMEOUT_S:g}s"
    seen_at, count = seen
    figures["latency_ms"] = round((seen_at - fault.time) * 1000, 3)
    time.sleep(SETTLE_S)
    after = exporter.xid_count(gpu0.uuid, XID)
    figures["count_after"] = after
    assert count == before + 1
    assert after == before + 1

    events = exporter.json("/api/events")
    newest = next((e for e in events if e.get("xid") == XID), None)  # newest first
    figures["event"] = newest
    assert newest is not None, f"no XID {XID} in /api/events: {events}"
    assert newest["kind"] == "xid"
    assert newest["gpu"] == str(gpu0.index)
    assert newest["gpu_uuid"] == gpu0.uuid
    assert newest["gpu_instance_id"] is None
    assert newest["compute_instance_id"] is None
    assert newest.get("action") == ACTION
