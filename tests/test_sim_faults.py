"""GPU faults in the simulator: falling off the bus, hanging, and recovering."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from manual_clock import ManualClock
from migexporter.sim import FakeNvml, Fleet, SimError


def test_a_gpu_that_fell_off_the_bus_is_lost_but_still_listed(nv, fleet):
    """Its own queries and its MIG devices raise GpuIsLost; enumeration still lists it."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 0)
    gi = nv.nvmlDeviceGetGpuInstanceById(device, 2)
    fleet.fault(0, "fall_off_bus")
    for call in (
        lambda: nv.nvmlDeviceGetUUID(device),
        lambda: nv.nvmlDeviceGetPowerUsage(device),
        lambda: nv.nvmlDeviceGetMemoryInfo(mig),
        lambda: nv.nvmlGpuInstanceGetInfo(gi),
    ):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call()
    assert nv.nvmlDeviceGetCount() == 3
    assert isinstance(nv.nvmlDeviceGetHandleByIndex(0), pynvml.c_nvmlDevice_t)
    assert fleet.describe()["gpus"][0]["state"] == "lost"


def test_the_other_gpus_keep_working_while_one_is_lost(nv, fleet):
    """Only the faulty GPU's calls fail."""
    fleet.fault(1, "fall_off_bus")
    assert nv.nvmlDeviceGetPowerUsage(nv.nvmlDeviceGetHandleByIndex(0)) > 0
    assert nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(2)) == "NVIDIA H100 80GB HBM3"


def test_falling_off_the_bus_raises_xid_79(nv, fleet):
    """The driver reports XID 79 when a GPU falls off the bus."""
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(
        nv.nvmlDeviceGetHandleByIndex(2), pynvml.nvmlEventTypeXidCriticalError, event_set
    )
    fleet.fault(2, "fall_off_bus")
    data = nv.nvmlEventSetWait_v2(event_set, 1000)
    assert data.eventData == 79
    assert nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(1))  # not the lost one


def test_falling_off_the_bus_also_reports_the_gpu_unavailable(nv, fleet):
    """XID 79 and nvmlEventTypeGpuUnavailableError are both delivered, then calls fail."""
    xid = pynvml.nvmlEventTypeXidCriticalError
    unavailable = pynvml.nvmlEventTypeGpuUnavailableError
    device = nv.nvmlDeviceGetHandleByIndex(1)
    both, only_unavailable = nv.nvmlEventSetCreate(), nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(device, xid | unavailable, both)
    nv.nvmlDeviceRegisterEvents(device, unavailable, only_unavailable)
    fleet.fault(1, "fall_off_bus")
    first, second = (nv.nvmlEventSetWait_v2(both, 1000) for _ in range(2))
    assert [(d.eventType, d.eventData) for d in (first, second)] == [(xid, 79), (unavailable, 0)]
    assert (second.gpuInstanceId, second.computeInstanceId) == (0xFFFFFFFF, 0xFFFFFFFF)
    data = nv.nvmlEventSetWait_v2(only_unavailable, 1000)
    assert data.eventType == unavailable
    for event_set in (both, only_unavailable):
        with pytest.raises(pynvml.NVMLError_Timeout):
            nv.nvmlEventSetWait_v2(event_set, 0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nv.nvmlDeviceGetUUID(data.device)


def test_recovering_restores_the_same_handles(nv, fleet):
    """After recover, handles taken before the fault work again."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(device, 2)
    uuid = nv.nvmlDeviceGetUUID(mig)
    fleet.fault(0, "fall_off_bus")
    fleet.fault(0, "recover")
    assert nv.nvmlDeviceGetUUID(mig) == uuid
    assert fleet.describe()["gpus"][0]["state"] == "ok"


def test_a_hung_gpu_blocks_its_callers_until_it_recovers(nv, fleet):
    """A call on a hung GPU blocks; other GPUs and event waits do not; recover releases it."""
    device = nv.nvmlDeviceGetHandleByIndex(1)
    event_set = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(device, pynvml.nvmlEventTypeXidCriticalError, event_set)
    fleet.fault(1, "hang")
    results: list[int] = []
    caller = threading.Thread(target=lambda: results.append(nv.nvmlDeviceGetPowerUsage(device)))
    caller.start()
    caller.join(0.2)
    assert caller.is_alive()
    assert results == []

    started = time.monotonic()
    assert nv.nvmlDeviceGetPowerUsage(nv.nvmlDeviceGetHandleByIndex(0)) > 0
    with pytest.raises(pynvml.NVMLError_Timeout):
        nv.nvmlEventSetWait_v2(event_set, 50)
    fleet.inject_xid(1, 43)
    assert nv.nvmlEventSetWait_v2(event_set, 1000).eventData == 43
    late = nv.nvmlEventSetCreate()  # registering does not talk to the GPU: no blocking
    nv.nvmlDeviceRegisterEvents(device, pynvml.nvmlEventTypeXidCriticalError, late)
    fleet.inject_xid(1, 45)
    assert nv.nvmlEventSetWait_v2(late, 1000).eventData == 45
    assert time.monotonic() - started < 1

    fleet.fault(1, "recover")
    caller.join(2)
    assert not caller.is_alive()
    assert results
    assert results[0] > 0


def test_a_hung_gpu_that_falls_off_the_bus_releases_its_callers_with_an_error(nv, fleet):
    """Blocked callers wake up with GpuIsLost when the hung GPU is lost."""
    device = nv.nvmlDeviceGetHandleByIndex(0)
    fleet.fault(0, "hang")
    errors: list[Exception] = []

    def call() -> None:
        try:
            nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU)
        except pynvml.NVMLError as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(0.1)
    assert caller.is_alive()
    fleet.fault(0, "fall_off_bus")
    caller.join(2)
    assert [type(e) for e in errors] == [pynvml.NVMLError_GpuIsLost]


def test_a_faulty_gpu_cannot_be_reconfigured(fleet):
    """Reconfiguring a lost or hung GPU is refused, not attempted."""
    fleet.fault(0, "hang")
    with pytest.raises(SimError, match="GPU 0 is hung"):
        fleet.reconfigure(0, ["7g.80gb"])
    fleet.fault(0, "fall_off_bus")
    with pytest.raises(SimError, match="GPU 0 is lost"):
        fleet.reconfigure(0, ["7g.80gb"])


def test_unknown_faults_are_refused(fleet):
    """Only the kinds of FAULTS exist."""
    with pytest.raises(SimError, match="unknown fault 'melt'"):
        fleet.fault(0, "melt")
    with pytest.raises(SimError, match="no GPU 3"):
        fleet.fault(3, "hang")


def test_an_overheated_gpu_slows_down_until_it_recovers():
    """Above the slowdown temperature, SW thermal slowdown, a lower SM clock; recover ends it."""
    clock = ManualClock()
    fleet = Fleet.from_spec("h100-80gb", clock=clock)
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    slowdown = fleet.gpus[0].model.slowdown_temp_c
    thermal = pynvml.nvmlClocksEventReasonSwThermalSlowdown

    def trace() -> list[tuple[int, int, int, int, bool]]:
        """(die C, memory C, SM MHz, reasons, busy) every 2.5 s for 500 s."""
        rows = []
        for _ in range(200):
            clock.advance(2.5)
            memory = nv.nvmlDeviceGetFieldValues(device, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
            rows.append(
                (
                    nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU),
                    memory.value.uiVal,
                    nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_SM),
                    nv.nvmlDeviceGetCurrentClocksEventReasons(device),
                    nv.nvmlDeviceGetUtilizationRates(device).gpu > 0,
                )
            )
        return rows

    normal = trace()
    assert result_state(fleet.fault(0, "overheat")) == ("ok", True)
    hot = trace()
    assert result_state(fleet.fault(0, "recover")) == ("ok", False)
    cooled = trace()
    for rows, overheated in ((normal, False), (hot, True), (cooled, False)):
        assert all((die > slowdown) == overheated for die, *_ in rows)
        assert all(bool(reasons & thermal) == overheated for *_, reasons, _ in rows)
    busy_normal = {mhz for _, _, mhz, _, busy in normal if busy}
    busy_hot = {mhz for _, _, mhz, _, busy in hot if busy}
    assert busy_hot
    assert max(busy_hot) < min(busy_normal)
    assert min(memory for _, memory, *_ in hot) > max(memory for _, memory, *_ in normal)
    assert fleet.describe()["gpus"][0]["overheated"] is False


def result_state(result: dict) -> tuple[str, bool]:
    return result["state"], result["overheated"]
