"""The simulation control API over HTTP: happy paths, driver refusals and malformed bodies."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pynvml
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from migexporter.sim import FakeNvml, Fleet, add_routes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[TestClient]:
    app = web.Application()
    add_routes(app, fleet)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def post(client: TestClient, path: str, body: object) -> tuple[int, dict]:
    text = body if isinstance(body, str) else json.dumps(body)
    response = await client.post(path, data=text)
    return response.status, await response.json()


async def test_the_fleet_is_described(client):
    """GET /api/sim/fleet returns every GPU with its instances."""
    response = await client.get("/api/sim/fleet")
    assert response.status == 200
    gpus = (await response.json())["gpus"]
    assert [g["index"] for g in gpus] == [0, 1, 2]
    assert [gi["id"] for gi in gpus[1]["gpu_instances"]] == [7, 8, 9, 11, 12, 13, 14]


async def test_an_injected_xid_reaches_nvml_event_sets(client, fleet):
    """POST /api/sim/xid raises the XID through the fake library's events."""
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    xid = pynvml.nvmlEventTypeXidCriticalError
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(1), xid, event_set)
    body = {"gpu": 1, "gpu_instance_id": 7, "compute_instance_id": 0, "xid": 48, "count": 2}
    status, result = await post(client, "/api/sim/xid", body)
    assert status == 200
    assert result["count"] == 2
    assert result["gpu_uuid"] == fleet.gpus[1].uuid
    for _ in range(2):
        data = nv.nvmlEventSetWait_v2(event_set, 0)
        assert (data.eventData, data.gpuInstanceId, data.computeInstanceId) == (48, 7, 0)


async def test_injected_ecc_errors_are_counted_and_raised_as_events(client, fleet):
    """POST /api/sim/ecc counts errors and raises one event per error, of the right kind."""
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    single, double = pynvml.nvmlEventTypeSingleBitEccError, pynvml.nvmlEventTypeDoubleBitEccError
    device = nv.nvmlDeviceGetHandleByIndex(2)
    nv.nvmlDeviceRegisterEvents(device, single | double, event_set)
    status, result = await post(client, "/api/sim/ecc", {"gpu": 2})
    assert status == 200
    assert (result["gpu_uuid"], result["uncorrected"], result["count"]) == (
        fleet.gpus[2].uuid,
        False,
        1,
    )
    status, result = await post(client, "/api/sim/ecc", {"gpu": 2, "uncorrected": True, "count": 3})
    assert status == 200
    assert (result["uncorrected"], result["count"], result["aggregate_total"]) == (True, 3, 3)
    kinds = [nv.nvmlEventSetWait_v2(event_set, 0).eventType for _ in range(4)]
    assert kinds == [single, double, double, double]
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert nv.nvmlDeviceGetTotalEccErrors(device, uncorrected, pynvml.NVML_VOLATILE_ECC) == 3


async def test_an_injected_recovery_action_is_an_event_and_a_field_value(client, fleet):
    """POST /api/sim/recovery sets the GPU's recovery action and raises its event."""
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    nv.nvmlDeviceRegisterEvents(device, pynvml.nvmlEventTypeGpuRecoveryAction, event_set)
    status, result = await post(client, "/api/sim/recovery", {"gpu": 0, "action": "node_reboot"})
    assert status == 200
    assert result == {
        "gpu": 0,
        "gpu_uuid": fleet.gpus[0].uuid,
        "recovery_action": "node_reboot",
        "value": pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT,
    }
    data = nv.nvmlEventSetWait_v2(event_set, 0)
    assert (data.eventType, data.eventData) == (pynvml.nvmlEventTypeGpuRecoveryAction, 0)
    (value,) = nv.nvmlDeviceGetFieldValues(device, [pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION])
    assert value.value.uiVal == pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
    response = await client.get("/api/sim/fleet")
    assert (await response.json())["gpus"][0]["recovery_action"] == "node_reboot"


async def test_a_mig_layout_is_applied(client, fleet):
    """POST /api/sim/mig replaces the layout and returns the new one."""
    status, result = await post(client, "/api/sim/mig", {"gpu": 0, "profiles": ["3g.40gb"] * 2})
    assert status == 200
    assert [gi["profile"] for gi in result["gpu_instances"]] == ["3g.40gb", "3g.40gb"]
    described = fleet.describe()["gpus"][0]["gpu_instances"]
    # The driver takes 4:4 first (id 2), then 0:4 (id 1); listed by id.
    assert [(gi["id"], gi["placement"]["start"]) for gi in described] == [(1, 0), (2, 4)]


async def test_an_impossible_layout_is_a_400_with_the_drivers_reason(client):
    """The driver's refusal comes back as the error."""
    body = {"gpu": 0, "profiles": ["3g.40gb", "3g.40gb", "1g.10gb"]}
    status, result = await post(client, "/api/sim/mig", body)
    assert status == 400
    assert result == {
        "error": "Unable to create a GPU instance on GPU 0 using profile 1g.10gb: "
        "Insufficient Resources"
    }


async def test_faults_are_applied_and_reported(client, fleet):
    """POST /api/sim/fault hangs, recovers and drops GPUs."""
    for kind, state in (("hang", "hung"), ("recover", "ok"), ("fall_off_bus", "lost")):
        status, result = await post(client, "/api/sim/fault", {"gpu": 2, "kind": kind})
        assert status == 200
        assert result["state"] == state
    assert fleet.describe()["gpus"][2]["state"] == "lost"


@pytest.mark.parametrize(
    ("path", "body", "complaint"),
    [
        ("/api/sim/xid", "{", "the body is not valid JSON"),
        ("/api/sim/xid", "", "the body is not valid JSON"),
        ("/api/sim/xid", [1, 2], "the body must be a JSON object"),
        ("/api/sim/xid", {"gpu": 0}, "missing key 'xid'"),
        ("/api/sim/xid", {"gpu": 0, "xid": 48, "gpu_id": 1}, "unknown key 'gpu_id'"),
        ("/api/sim/xid", {"gpu": True, "xid": 48}, "gpu must be an integer GPU index, not true"),
        ("/api/sim/xid", {"gpu": 0, "xid": "48"}, "xid must be an integer from 1"),
        ("/api/sim/xid", {"gpu": 0, "xid": 48, "count": 0}, "count must be an integer from 1"),
        ("/api/sim/xid", {"gpu": 0, "xid": 48, "count": 100_001}, "count must be"),
        ("/api/sim/xid", {"gpu": 7, "xid": 48}, "no GPU 7"),
        ("/api/sim/xid", {"gpu": 1, "xid": 48, "gpu_instance_id": 99}, "no GPU instance 99"),
        ("/api/sim/xid", {"gpu": 1, "xid": 48, "gpu_instance_id": 1.5}, "an integer or null"),
        ("/api/sim/mig", {"gpu": 0, "profiles": "3g.40gb"}, "profiles must be a list"),
        ("/api/sim/mig", {"gpu": 0, "profiles": ["9g.1gb"]}, "unknown profile '9g.1gb'"),
        ("/api/sim/mig", {"gpu": -1, "profiles": []}, "no GPU -1"),
        ("/api/sim/fault", {"gpu": 0, "kind": "explode"}, "kind must be fall_off_bus or hang"),
        ("/api/sim/fault", {"gpu": 0}, "missing key 'kind'"),
        ("/api/sim/ecc", "{", "the body is not valid JSON"),
        ("/api/sim/ecc", {}, "missing key 'gpu'"),
        ("/api/sim/ecc", {"gpu": "0"}, 'gpu must be an integer GPU index, not "0"'),
        ("/api/sim/ecc", {"gpu": 9}, "no GPU 9; the fleet has GPUs 0 to 2"),
        ("/api/sim/ecc", {"gpu": 0, "uncorrected": "yes"}, "uncorrected must be true or false"),
        ("/api/sim/ecc", {"gpu": 0, "uncorrected": 1}, "uncorrected must be true or false, not 1"),
        ("/api/sim/ecc", {"gpu": 0, "uncorrected": None}, "uncorrected must be true or false"),
        ("/api/sim/ecc", {"gpu": 0, "count": 0}, "count must be an integer from 1 to 100000"),
        ("/api/sim/ecc", {"gpu": 0, "count": 100_001}, "count must be an integer from 1"),
        ("/api/sim/ecc", {"gpu": 0, "count": True}, "count must be an integer from 1"),
        ("/api/sim/ecc", {"gpu": 0, "count": 2.0}, "count must be an integer from 1"),
        ("/api/sim/ecc", {"gpu": 0, "errors": 2}, "unknown key 'errors' (valid: gpu, "),
        ("/api/sim/recovery", {"gpu": 0}, "missing key 'action'"),
        ("/api/sim/recovery", {"action": "gpu_reset"}, "missing key 'gpu'"),
        ("/api/sim/recovery", {"gpu": 9, "action": "gpu_reset"}, "no GPU 9"),
        ("/api/sim/recovery", {"gpu": None, "action": "gpu_reset"}, "gpu must be an integer"),
        ("/api/sim/recovery", {"gpu": 0, "action": "reboot"}, "action must be none or gpu_reset"),
        ("/api/sim/recovery", {"gpu": 0, "action": "GPU_RESET"}, "or system_reboot, not"),
        ("/api/sim/recovery", {"gpu": 0, "action": 1}, "action must be none or gpu_reset"),
        ("/api/sim/recovery", {"gpu": 0, "action": None}, "action must be none or gpu_reset"),
        ("/api/sim/recovery", {"gpu": 0, "action": ["none"]}, "action must be none or"),
        ("/api/sim/recovery", {"gpu": 0, "action": "none", "x": 1}, "unknown key 'x'"),
    ],
)
async def test_malformed_requests_are_a_400_with_one_line(client, path, body, complaint):
    """Bad JSON, wrong shapes, unknown keys and bad values are rejected, never a 500."""
    status, result = await post(client, path, body)
    assert status == 400
    assert list(result) == ["error"]
    assert complaint in result["error"]
    assert "\n" not in result["error"]


async def test_unknown_paths_and_methods_are_aiohttps_404_and_405(client):
    """Routing errors come from aiohttp itself."""
    assert (await client.get("/api/sim/nothing")).status == 404
    assert (await client.get("/api/sim/xid")).status == 405
    assert (await client.get("/api/sim/ecc")).status == 405
    assert (await client.get("/api/sim/recovery")).status == 405
    assert (await client.post("/api/sim/fleet")).status == 405


async def test_the_overheat_fault_is_applied_and_reported(client, fleet):
    """POST /api/sim/fault overheat: the GPU stays ok but slows down, until recover."""
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(2)
    thermal = pynvml.nvmlClocksEventReasonSwThermalSlowdown
    for kind, overheated in (("overheat", True), ("recover", False)):
        status, result = await post(client, "/api/sim/fault", {"gpu": 2, "kind": kind})
        assert status == 200
        assert (result["state"], result["overheated"]) == ("ok", overheated)
        reasons = nv.nvmlDeviceGetCurrentClocksEventReasons(device)
        assert bool(reasons & thermal) == overheated


async def test_mig_mode_can_be_turned_off_and_on_again(client, fleet):
    """{"mig": false} destroys the instances and leaves MIG mode; a layout turns it back on."""
    status, result = await post(client, "/api/sim/mig", {"gpu": 0, "mig": False})
    assert status == 200
    assert (result["mig_enabled"], result["gpu_instances"]) == (False, [])
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetMigMode(device)[0] == pynvml.NVML_DEVICE_MIG_DISABLE
    status, result = await post(client, "/api/sim/mig", {"gpu": 0, "profiles": ["7g.80gb"]})
    assert status == 200
    assert result["mig_enabled"] is True
    assert [gi["profile"] for gi in result["gpu_instances"]] == ["7g.80gb"]
    status, result = await post(
        client, "/api/sim/mig", {"gpu": 0, "mig": False, "profiles": ["1g.10gb"]}
    )
    assert status == 400
    assert "profiles need MIG on" in result["error"]
