"""The simulation control API, mounted only with ``--simulate``: driver events, MIG, faults."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from migexporter.httpguard import MAX_BODY_BYTES, READ_TIMEOUT_S
from migexporter.sim.fleet import FAULTS, MAX_EVENTS, RECOVERY_ACTIONS
from migexporter.sim.profiles import SimError

if TYPE_CHECKING:
    from collections.abc import Callable

    from migexporter.sim.fleet import Fleet

Check = tuple[str, "Callable[[Any], bool]"]  # (what the value must be, test)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_GPU: Check = ("an integer GPU index", _integer)
_ID: Check = ("an integer or null", lambda v: v is None or _integer(v))
_XID: Check = ("an integer from 1 to 4294967295", lambda v: _integer(v) and 0 < v < 2**32)
_COUNT: Check = (
    f"an integer from 1 to {MAX_EVENTS}",
    lambda v: _integer(v) and 0 < v <= MAX_EVENTS,
)
_PROFILES: Check = (
    "a list of profile names",
    lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
)
_KIND: Check = (" or ".join(FAULTS), lambda v: v in FAULTS)
_BOOLEAN: Check = ("true or false", lambda v: isinstance(v, bool))
_ACTION: Check = (
    " or ".join(RECOVERY_ACTIONS),
    lambda v: isinstance(v, str) and v in RECOVERY_ACTIONS,
)


def _error(status: type[web.HTTPError], message: str) -> web.HTTPError:
    body = json.dumps({"error": message})
    return status(text=body, content_type="application/json")


async def _json(request: web.Request) -> Any:
    """The request body parsed as JSON; 413, 408 or 400 when it is too big, slow or not JSON."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, request.content_length)
    try:
        # A client that trickles its body is cut off like one that trickles its head.
        async with asyncio.timeout(READ_TIMEOUT_S):
            return json.loads(await request.text())
    except TimeoutError:
        raise _error(web.HTTPRequestTimeout, "the body did not arrive in time") from None
    except ValueError:
        raise _error(web.HTTPBadRequest, "the body is not valid JSON") from None


async def _body(
    request: web.Request, required: dict[str, Check], optional: dict[str, Check]
) -> dict[str, Any]:
    """The request's JSON object, with only known keys, each of the expected type."""
    data = await _json(request)
    if not isinstance(data, dict):
        raise _error(web.HTTPBadRequest, "the body must be a JSON object")
    known = required | optional
    for key in data:
        if key not in known:
            valid = ", ".join(known)
            raise _error(web.HTTPBadRequest, f"unknown key {key!r} (valid: {valid})")
    for key in required:
        if key not in data:
            raise _error(web.HTTPBadRequest, f"missing key {key!r}")
    for key, value in data.items():
        what, test = known[key]
        if not test(value):
            raise _error(web.HTTPBadRequest, f"{key} must be {what}, not {json.dumps(value)}")
    return data


async def _run(call: Callable[..., dict[str, Any]], *args: Any) -> web.Response:
    """Run a fleet verb off the event loop; a refusal becomes 400 with the reason."""
    try:
        result = await asyncio.to_thread(call, *args)
    except SimError as error:
        raise _error(web.HTTPBadRequest, str(error)) from None
    return web.json_response(result)


def add_routes(app: web.Application, fleet: Fleet) -> None:
    """Register the simulation routes.

    ``GET /api/sim/fleet``; ``POST`` ``/api/sim/xid``, ``/api/sim/ecc``,
    ``/api/sim/recovery``, ``/api/sim/mig`` and ``/api/sim/fault``.
    """

    async def describe(_: web.Request) -> web.Response:
        return await _run(fleet.describe)

    async def xid(request: web.Request) -> web.Response:
        body = await _body(
            request,
            {"gpu": _GPU, "xid": _XID},
            {"gpu_instance_id": _ID, "compute_instance_id": _ID, "count": _COUNT},
        )
        return await _run(
            fleet.inject_xid,
            body["gpu"],
            body["xid"],
            body.get("gpu_instance_id"),
            body.get("compute_instance_id"),
            body.get("count", 1),
        )

    async def ecc(request: web.Request) -> web.Response:
        body = await _body(request, {"gpu": _GPU}, {"uncorrected": _BOOLEAN, "count": _COUNT})
        return await _run(
            fleet.inject_ecc, body["gpu"], body.get("uncorrected", False), body.get("count", 1)
        )

    async def recovery(request: web.Request) -> web.Response:
        body = await _body(request, {"gpu": _GPU, "action": _ACTION}, {})
        return await _run(fleet.inject_recovery_action, body["gpu"], body["action"])

    async def mig(request: web.Request) -> web.Response:
        # {"gpu": 0, "profiles": [...]} sets a layout (MIG on); {"gpu": 0, "mig": false} turns
        # MIG off again.
        body = await _body(request, {"gpu": _GPU}, {"profiles": _PROFILES, "mig": _BOOLEAN})
        if body.get("mig", True) is False:
            if body.get("profiles"):
                raise _error(web.HTTPBadRequest, "profiles need MIG on: leave out 'mig' or them")
            return await _run(fleet.disable_mig, body["gpu"])
        if "profiles" not in body:
            raise _error(web.HTTPBadRequest, "missing key 'profiles' (or 'mig': false)")
        return await _run(fleet.reconfigure, body["gpu"], body["profiles"])

    async def fault(request: web.Request) -> web.Response:
        # "gpu" is needed by the GPU faults only; the host engine faults are node-wide.
        body = await _body(request, {"kind": _KIND}, {"gpu": _GPU})
        return await _run(fleet.fault, body.get("gpu"), body["kind"])

    app.router.add_get("/api/sim/fleet", describe)
    app.router.add_post("/api/sim/xid", xid)
    app.router.add_post("/api/sim/ecc", ecc)
    app.router.add_post("/api/sim/recovery", recovery)
    app.router.add_post("/api/sim/mig", mig)
    app.router.add_post("/api/sim/fault", fault)
