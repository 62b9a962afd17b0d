"""NVML events from the simulator: registration, attribution, timeouts and volume."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet, SimError

ANY = 0xFFFFFFFF
XID = pynvml.nvmlEventTypeXidCriticalError


def listen(nv: FakeNvml, gpu: int, mask: int = XID) -> object:
    """A new event set registered for ``mask`` on GPU ``gpu``."""
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(gpu), mask, event_set)
    return event_set


def drain(nv: FakeNvml, event_set: object) -> list[object]:
    """Every event waiting in a set, one per wait, as an NVML consumer takes them."""
    events = []
    while True:
        try:
            events.append(nv.nvmlEventSetWait_v2(event_set, 0))
        except pynvml.NVMLError_Timeout:
            return events


def test_an_attributed_xid_carries_its_instance_and_parent(nv, fleet):
    """XID data holds the XID, GI and CI ids, and the parent GPU's handle."""
    event_set = listen(nv, 1)
    fleet.inject_xid(1, 48, gpu_instance_id=2, compute_instance_id=0)
    data = nv.nvmlEventSetWait_v2(event_set, 1000)
    assert isinstance(data, pynvml.c_nvmlEventData_t)
    assert (data.eventType, data.eventData) == (XID, 48)
    assert (data.gpuInstanceId, data.computeInstanceId) == (2, 0)
    assert nv.nvmlDeviceGetUUID(data.device) == fleet.gpus[1].uuid


def test_an_unattributed_xid_has_the_any_ids(nv, fleet):
    """Without instance ids the event says 0xFFFFFFFF for both; a GI alone keeps CI ANY."""
    event_set = listen(nv, 2)
    fleet.inject_xid(2, 79)
    data = nv.nvmlEventSetWait(event_set, 1000)
    assert (data.eventData, data.gpuInstanceId, data.computeInstanceId) == (79, ANY, ANY)
    gi_only = listen(nv, 0)
    fleet.inject_xid(0, 31, gpu_instance_id=3)
    data = nv.nvmlEventSetWait(gi_only, 1000)
    assert (data.gpuInstanceId, data.computeInstanceId) == (3, ANY)


def test_events_before_registration_are_not_delivered(nv, fleet):
    """NVML records only what happens after nvmlDeviceRegisterEvents."""
    event_set = nv.nvmlEventSetCreate()
    fleet.inject_xid(0, 13)
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(0), XID, event_set)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nv.nvmlEventSetWait_v2(event_set, 0)
    fleet.inject_xid(0, 43)
    assert nv.nvmlEventSetWait_v2(event_set, 0).eventData == 43


def test_a_wait_with_nothing_to_deliver_times_out_after_the_timeout():
    """nvmlEventSetWait_v2 blocks up to timeoutms, then raises NVMLError_Timeout."""
    fake = FakeNvml(Fleet.default())
    fake.nvmlInit()
    event_set = listen(fake, 0)
    started = time.monotonic()
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait_v2(event_set, 150)
    assert time.monotonic() - started >= 0.14


def test_a_blocked_waiter_wakes_when_an_event_arrives(nv, fleet):
    """An event wakes a thread already waiting, long before its timeout."""
    event_set = listen(nv, 1)
    received = []
    waiter = threading.Thread(
        target=lambda: received.append(nv.nvmlEventSetWait(event_set, 10_000))
    )
    waiter.start()
    time.sleep(0.05)
    fleet.inject_xid(1, 94)
    waiter.join(2)
    assert not waiter.is_alive()
    assert received[0].eventData == 94


def test_only_registered_types_and_gpus_are_delivered(nv, fleet):
    """A set listening for MIG changes on GPU 0 sees neither XIDs nor other GPUs' changes."""
    event_set = listen(nv, 0, pynvml.nvmlEventMigConfigChange)
    fleet.inject_xid(0, 48)
    fleet.reconfigure(1, ["7g.80gb"])
    assert drain(nv, event_set) == []
    fleet.reconfigure(0, ["7g.80gb"])
    events = drain(nv, event_set)
    assert events
    for data in events:
        assert data.eventType == pynvml.nvmlEventMigConfigChange
        assert (data.eventData, data.gpuInstanceId, data.computeInstanceId) == (0, ANY, ANY)


def test_every_listening_set_gets_its_own_copy(nv, fleet):
    """Two sets registered for the same GPU both receive the event."""
    first, second = listen(nv, 0), listen(nv, 0)
    fleet.inject_xid(0, 63)
    assert [d.eventData for d in drain(nv, first)] == [63]
    assert [d.eventData for d in drain(nv, second)] == [63]


def test_ten_thousand_events_are_injected_and_delivered_quickly(nv, fleet):
    """count=10000 queues 10,000 events, delivered one per wait, in well under a second."""
    event_set = listen(nv, 0)
    started = time.monotonic()
    fleet.inject_xid(0, 48, count=10_000)
    events = drain(nv, event_set)
    assert len(events) == 10_000
    assert {d.eventData for d in events} == {48}
    assert time.monotonic() - started < 2


def test_unprivileged_sets_get_whole_device_events_only(fleet):
    """Without privileges, instance-attributed events are not reported (nvml.h)."""
    fake = FakeNvml(fleet, privileged=False)
    fake.nvmlInit()
    event_set = listen(fake, 1)
    fleet.inject_xid(1, 48, gpu_instance_id=2, compute_instance_id=0)
    fleet.inject_xid(1, 79)
    assert [d.eventData for d in drain(fake, event_set)] == [79]


def test_events_cannot_be_registered_on_a_mig_device(nv):
    """Per-instance registration through MIG handles is not supported."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nv.nvmlDeviceRegisterEvents(mig, XID, nv.nvmlEventSetCreate())
    assert nv.nvmlDeviceGetSupportedEventTypes(device) == pynvml.nvmlEventTypeAll


def test_a_freed_set_is_invalid(nv, fleet):
    """After nvmlEventSetFree the handle is rejected and receives nothing."""
    event_set = listen(nv, 0)
    nv.nvmlEventSetFree(event_set)
    fleet.inject_xid(0, 48)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlEventSetWait_v2(event_set, 0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"gpu": 5, "xid": 48}, "no GPU 5"),
        ({"gpu": 1, "xid": 48, "gpu_instance_id": 9}, "no GPU instance 9"),
        ({"gpu": 1, "xid": 48, "gpu_instance_id": 2, "compute_instance_id": 3}, "no compute"),
        ({"gpu": 1, "xid": 48, "compute_instance_id": 0}, "needs gpu_instance_id"),
        ({"gpu": 2, "xid": 48, "gpu_instance_id": 1}, "not in MIG mode"),
        ({"gpu": 0, "xid": 0}, "xid must be"),
        ({"gpu": 0, "xid": 48, "count": 0}, "count must be"),
        ({"gpu": True, "xid": 48}, "no GPU True"),
    ],
)
def test_xid_injection_is_validated(fleet, arguments, message):
    """Unknown GPUs or instances and out-of-range values are refused with a reason."""
    with pytest.raises(SimError, match=message):
        fleet.inject_xid(**arguments)
