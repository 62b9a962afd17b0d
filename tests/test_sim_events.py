"""NVML events from the simulator: registration, attribution, timeouts, volume, and the events
beside XIDs (recovery actions with their field value, ECC, GPU unavailable)."""

from __future__ import annotations

import ctypes
import threading
import time

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet, SimError
from migexporter.sim.fleet import ADVANCE_STEP_S, RECOVERY_ACTIONS

ANY = 0xFFFFFFFF
XID = pynvml.nvmlEventTypeXidCriticalError
RECOVERY = pynvml.nvmlEventTypeGpuRecoveryAction
FIELD = pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION


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
    fleet.inject_xid(1, 48, gpu_instance_id=7, compute_instance_id=0)
    data = nv.nvmlEventSetWait_v2(event_set, 1000)
    assert isinstance(data, pynvml.c_nvmlEventData_t)
    assert (data.eventType, data.eventData) == (XID, 48)
    assert (data.gpuInstanceId, data.computeInstanceId) == (7, 0)
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
    fleet.inject_xid(1, 48, gpu_instance_id=7, compute_instance_id=0)
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
        ({"gpu": 1, "xid": 48, "gpu_instance_id": 10}, "no GPU instance 10"),
        ({"gpu": 1, "xid": 48, "gpu_instance_id": 7, "compute_instance_id": 3}, "no compute"),
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


def recovery_action(nv: FakeNvml, handle: object) -> int:
    """The recovery action field of a device, checking that the entry succeeded."""
    (value,) = nv.nvmlDeviceGetFieldValues(handle, [FIELD])
    assert value.nvmlReturn == pynvml.NVML_SUCCESS
    return value.value.uiVal


def stamped_between(value: pynvml.c_nvmlFieldValue_t, before: int, after: int) -> bool:
    """The entry carries a driver timestamp (microseconds since 1970) of the call.

    The stamp is when the counters were last integrated, which the simulator does at most once
    per ADVANCE_STEP_S: up to one step before the call began.
    """
    return before - ADVANCE_STEP_S * 1_000_000 <= value.timestamp <= after


def test_field_values_are_an_array_of_the_real_pynvml_structs(nv):
    """A ctypes array of c_nvmlFieldValue_t, the value in its c_nvmlValue_t union."""
    before = int(time.time() * 1_000_000)
    values = nv.nvmlDeviceGetFieldValues(nv.nvmlDeviceGetHandleByIndex(0), [FIELD])
    after = int(time.time() * 1_000_000)
    assert isinstance(values, ctypes.Array)
    assert values._type_ is pynvml.c_nvmlFieldValue_t
    assert len(values) == 1
    value = values[0]
    assert isinstance(value, pynvml.c_nvmlFieldValue_t)
    assert isinstance(value.value, pynvml.c_nvmlValue_t)
    assert (value.fieldId, value.scopeId) == (FIELD, 0)
    assert value.nvmlReturn == pynvml.NVML_SUCCESS
    assert value.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    assert value.value.uiVal == pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    assert stamped_between(value, before, after)
    assert value.latencyUsec >= 0


def test_other_fields_fail_entry_by_entry_as_on_an_h100(nv):
    """Unknown ids are INVALID_ARGUMENT, unmodelled fields NOT_SUPPORTED; the rest succeed.

    Measured on an H100 with driver 580.159.04: ids 0 and from NVML_FI_MAX up answer
    NVML_ERROR_INVALID_ARGUMENT with no timestamp; a known field the GPU lacks answers
    NVML_ERROR_NOT_SUPPORTED, stamped (in the simulator: every field it does not model); the
    call itself succeeds.
    """
    fields = [pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, (FIELD, 3), 0, pynvml.NVML_FI_MAX, 9999]
    before = int(time.time() * 1_000_000)
    values = nv.nvmlDeviceGetFieldValues(nv.nvmlDeviceGetHandleByIndex(1), fields)
    after = int(time.time() * 1_000_000)
    assert [(v.fieldId, v.scopeId) for v in values] == [
        (pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, 0),
        (FIELD, 3),
        (0, 0),
        (pynvml.NVML_FI_MAX, 0),
        (9999, 0),
    ]
    assert [v.nvmlReturn for v in values] == [
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_SUCCESS,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
    ]
    assert [stamped_between(v, before, after) for v in values] == [True, True, False, False, False]
    assert values[1].value.uiVal == pynvml.NVML_GPU_RECOVERY_ACTION_NONE


@pytest.mark.parametrize(
    "item", [FIELD, (FIELD, 7), "230", "23", (230, 0, 1), (230,), (230, "x"), 2.5, None]
)
def test_field_ids_are_unpacked_as_in_the_real_pynvml(nv, monkeypatch, item):
    """pynvml's own unpacking runs in the fake: same ids and scopes, same exceptions."""
    # Let the real function run past its library lookup, up to the C call, which "succeeds".
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", lambda _name: lambda *_args: 0)
    device = nv.nvmlDeviceGetHandleByIndex(0)
    try:
        real = pynvml.nvmlDeviceGetFieldValues(None, [FIELD, item])
    except Exception as error:  # whatever the real one raises
        with pytest.raises(type(error)):
            nv.nvmlDeviceGetFieldValues(device, [FIELD, item])
        return
    fake = nv.nvmlDeviceGetFieldValues(device, [FIELD, item])
    assert [(v.fieldId, v.scopeId) for v in fake] == [(v.fieldId, v.scopeId) for v in real]


def test_an_uninitialised_library_fails_before_the_ids_are_looked_at(fleet, monkeypatch):
    """Like pynvml, which looks the function up first: Uninitialized, even for bad ids."""
    monkeypatch.setattr(pynvml, "nvmlLib", None)  # as before any nvmlInit
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetFieldValues(None, ["not an id"])
    fake = FakeNvml(fleet)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetFieldValues(None, ["not an id"])


def test_no_field_ids_is_an_invalid_argument(nv):
    """An empty list fails the whole call, as measured on an H100 (valuesCount 0)."""
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetFieldValues(nv.nvmlDeviceGetHandleByIndex(0), [])


def test_a_mig_device_handle_answers_not_supported_per_entry(nv, fleet):
    """The recovery action belongs to the whole GPU: not answered through a MIG handle."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    fleet.inject_recovery_action(0, "gpu_reset")
    (value,) = nv.nvmlDeviceGetFieldValues(mig, [FIELD])
    assert value.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert recovery_action(nv, device) == pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET


def test_field_values_fail_as_a_whole_for_bad_handles_lost_gpus_and_no_init(nv, fleet):
    """Invalid handle, lost GPU (also through its MIG handle) and no init fail the call."""
    device = nv.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetFieldValues(None, [FIELD])
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(nv.nvmlDeviceGetHandleByIndex(1), 0)
    fleet.fault(1, "fall_off_bus")
    for handle in (nv.nvmlDeviceGetHandleByIndex(1), mig):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            nv.nvmlDeviceGetFieldValues(handle, [FIELD])
    assert recovery_action(nv, device) == pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    fake = FakeNvml(fleet)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetFieldValues(device, [FIELD])


def test_action_names_are_pynvmls_constants_in_lower_case():
    """Every NVML_GPU_RECOVERY_ACTION_* of the installed pynvml, and nothing else."""
    prefix = "NVML_GPU_RECOVERY_ACTION_"
    expected = {
        name.removeprefix(prefix).lower(): getattr(pynvml, name)
        for name in dir(pynvml)
        if name.startswith(prefix)
    }
    assert expected == RECOVERY_ACTIONS
    assert RECOVERY_ACTIONS["gpu_reset"] == pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET
    assert next(iter(RECOVERY_ACTIONS)) == "none"


def test_an_injected_action_is_an_event_then_a_field_value(nv, fleet):
    """A registered set gets one GpuRecoveryAction event; the field then reads the action."""
    event_set = listen(nv, 1, RECOVERY)
    xids_only = listen(nv, 1, pynvml.nvmlEventTypeXidCriticalError)
    result = fleet.inject_recovery_action(1, "drain_and_reset")
    assert result == {
        "gpu": 1,
        "gpu_uuid": fleet.gpus[1].uuid,
        "recovery_action": "drain_and_reset",
        "value": pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET,
    }
    events = drain(nv, event_set)
    assert len(events) == 1
    data = events[0]
    assert isinstance(data, pynvml.c_nvmlEventData_t)
    assert (data.eventType, data.eventData) == (RECOVERY, 0)
    assert (data.gpuInstanceId, data.computeInstanceId) == (ANY, ANY)
    assert nv.nvmlDeviceGetUUID(data.device) == fleet.gpus[1].uuid
    assert drain(nv, xids_only) == []
    device = nv.nvmlDeviceGetHandleByIndex(1)
    assert recovery_action(nv, device) == pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET
    assert recovery_action(nv, nv.nvmlDeviceGetHandleByIndex(0)) == 0  # the others: none
    assert fleet.describe()["gpus"][1]["recovery_action"] == "drain_and_reset"


def test_an_action_given_by_value_and_repeated_raises_an_event_each_time(nv, fleet):
    """NVML values are accepted too; injecting the same action again is another event."""
    event_set = listen(nv, 0, RECOVERY)
    fleet.inject_recovery_action(0, pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT)
    fleet.inject_recovery_action(0, "node_reboot")
    assert len(drain(nv, event_set)) == 2
    device = nv.nvmlDeviceGetHandleByIndex(0)
    assert recovery_action(nv, device) == pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT


def test_unprivileged_sets_get_recovery_action_events(fleet):
    """A recovery action is a whole-device event: no privileges needed to receive it."""
    fake = FakeNvml(fleet, privileged=False)
    fake.nvmlInit()
    event_set = listen(fake, 2, RECOVERY)
    fleet.inject_recovery_action(2, "bus_reset")
    assert [d.eventType for d in drain(fake, event_set)] == [RECOVERY]
    device = fake.nvmlDeviceGetHandleByIndex(2)
    assert recovery_action(fake, device) == pynvml.NVML_GPU_RECOVERY_ACTION_BUS_RESET


def test_recover_resets_the_action_to_none(nv, fleet):
    """A recovered (reset) GPU asks for nothing any more; no event says so."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    fleet.inject_recovery_action(0, "gpu_reset")
    fleet.fault(0, "fall_off_bus")
    event_set = listen(nv, 1, RECOVERY)
    fleet.inject_recovery_action(1, "node_reboot")
    drain(nv, event_set)
    fleet.fault(0, "recover")
    fleet.fault(1, "recover")
    assert recovery_action(nv, device) == pynvml.NVML_GPU_RECOVERY_ACTION_NONE
    assert recovery_action(nv, nv.nvmlDeviceGetHandleByIndex(1)) == 0
    assert drain(nv, event_set) == []
    assert [g["recovery_action"] for g in fleet.describe()["gpus"]] == ["none"] * 3


def test_the_supported_event_types_include_the_new_events(nv):
    """GpuUnavailableError and GpuRecoveryAction are registrable on a GPU."""
    supported = nv.nvmlDeviceGetSupportedEventTypes(nv.nvmlDeviceGetHandleByIndex(0))
    assert supported & pynvml.nvmlEventTypeGpuUnavailableError
    assert supported & RECOVERY


@pytest.mark.parametrize("action", ["reboot", "GPU_RESET", "", 8, -1, True, None, 1.0])
def test_bad_actions_are_refused_in_one_line_listing_the_names(fleet, action):
    """Unknown names and values, booleans and other types are refused, nothing changes."""
    with pytest.raises(SimError) as caught:
        fleet.inject_recovery_action(0, action)
    message = str(caught.value)
    assert message.startswith(f"unknown recovery action {action!r}; valid: none, gpu_reset, ")
    assert "system_reboot" in message
    assert "\n" not in message
    assert fleet.gpus[0].recovery_action == pynvml.NVML_GPU_RECOVERY_ACTION_NONE


def test_a_recovery_action_needs_a_gpu_of_the_fleet(fleet):
    """GPU indices are checked like the other injections'."""
    with pytest.raises(SimError, match="no GPU 3"):
        fleet.inject_recovery_action(3, "gpu_reset")


def test_injected_ecc_errors_are_events_counts_and_a_description(nv, fleet):
    """inject_ecc raises count events of the right kind and says what it did."""
    single = pynvml.nvmlEventTypeSingleBitEccError
    double = pynvml.nvmlEventTypeDoubleBitEccError
    event_set = listen(nv, 1, single | double)
    first = fleet.inject_ecc(1, count=2)
    second = fleet.inject_ecc(1, uncorrected=True)
    assert first == {
        "gpu": 1,
        "gpu_uuid": fleet.gpus[1].uuid,
        "uncorrected": False,
        "count": 2,
        "volatile_total": 2,
        "aggregate_total": 2,
    }
    assert (second["uncorrected"], second["count"], second["volatile_total"]) == (True, 1, 1)
    assert [d.eventType for d in drain(nv, event_set)] == [single, single, double]
    device = nv.nvmlDeviceGetHandleByIndex(1)
    assert (
        nv.nvmlDeviceGetTotalEccErrors(
            device, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC
        )
        == 2
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"gpu": 5}, "no GPU 5"),
        ({"gpu": 0, "uncorrected": "yes"}, "uncorrected must be true or false, not 'yes'"),
        ({"gpu": 0, "uncorrected": 1}, "uncorrected must be true or false, not 1"),
        ({"gpu": 0, "count": 0}, "count must be between 1 and 100000, not 0"),
        ({"gpu": 0, "count": 100_001}, "count must be between"),
        ({"gpu": 0, "count": True}, "count must be an integer, not True"),
        ({"gpu": 0, "count": "2"}, "count must be an integer, not '2'"),
    ],
)
def test_ecc_injection_is_validated(fleet, arguments, message):
    """Bad GPUs, non-boolean ``uncorrected`` and bad counts are refused; nothing is counted."""
    with pytest.raises(SimError, match=message):
        fleet.inject_ecc(**arguments)
    assert all(not gpu.ecc for gpu in fleet.gpus)


def test_a_fresh_fleet_asks_for_no_recovery():
    """Every GPU starts with NVML_GPU_RECOVERY_ACTION_NONE."""
    assert {gpu.recovery_action for gpu in Fleet.default().gpus} == {0}
