"""The aiohttp application: /metrics from pre-rendered bytes, health, events and a landing page."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import choose_encoder

from migexporter import catalog, compat, console, httpguard, webconfig, xids
from migexporter.backends.base import ECC_ERROR_TYPES
from migexporter.exposition import OPENMETRICS

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable

    from migexporter.backends.base import DeviceEvent
    from migexporter.collector import Collector, RecordedEvent
    from migexporter.webconfig import WebState

log = logging.getLogger(__name__)

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"  # understood by every Prometheus
COLLECTOR: web.AppKey[Collector] = web.AppKey("collector")
GUARD: web.AppKey[httpguard.ConnectionGuard] = web.AppKey("guard")
NODE: web.AppKey[str] = web.AppKey("node")
SIMULATED: web.AppKey[bool] = web.AppKey("simulated")
MAX_EVENTS_PER_REQUEST = 1000


def create_app(
    collector: Collector,
    web_state: WebState | None = None,
    guard: httpguard.ConnectionGuard | None = None,
    *,
    simulated: bool = False,
) -> web.Application:
    """The exporter's routes; unknown paths get 404 and wrong methods 405 from aiohttp.

    With ``web_state``, requests pass its basic auth and responses get its headers; ``guard``
    sets the connection limits (the defaults otherwise); ``simulated`` marks the landing page.
    """
    guard = guard or httpguard.ConnectionGuard()
    middlewares = [guard.middleware()]
    if web_state is not None:
        middlewares.append(webconfig.middleware(web_state))
    middlewares.append(_json_errors)  # innermost: the answers of routing and of the handlers
    app = web.Application(middlewares=middlewares, client_max_size=httpguard.MAX_BODY_BYTES)
    app[COLLECTOR] = collector
    app[GUARD] = guard
    app[NODE] = compat.host_label()
    app[SIMULATED] = simulated
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/api/events", events)
    app.router.add_get("/", landing)
    return app


async def metrics(request: web.Request) -> web.Response:
    """Serve the latest rendered exposition in the negotiated format and encoding."""
    exposition = request.app[COLLECTOR].exposition
    _encoder, negotiated = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = negotiated.startswith("application/openmetrics-text")
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    headers = {
        "Content-Type": OPENMETRICS if openmetrics else TEXT_0_0_4,
        "Vary": "Accept, Accept-Encoding",
    }
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return web.Response(
        body=exposition.body(openmetrics=openmetrics, gzipped=gzipped), headers=headers
    )


async def healthy(_request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    """Readiness: a full collection happened and the backend is up."""
    collector = request.app[COLLECTOR]
    if collector.ready:
        return web.Response(text="OK\n")
    reason = "first collection pending" if collector.backend_up else "backend down"
    return web.Response(status=503, text=f"not ready: {reason}\n")


async def events(request: web.Request) -> web.Response:
    """The most recent driver events, newest first; ``?limit=N`` returns fewer."""
    text = request.query.get("limit", str(MAX_EVENTS_PER_REQUEST))
    if not text.isdigit() or not 1 <= int(text) <= MAX_EVENTS_PER_REQUEST:
        raise web.HTTPBadRequest(
            text=f'{{"error": "limit must be an integer from 1 to {MAX_EVENTS_PER_REQUEST}"}}',
            content_type="application/json",
        )
    recent = list(request.app[COLLECTOR].events)[: int(text)]
    return web.json_response([_event_json(e) for e in recent])


def _event_json(recorded: RecordedEvent) -> dict[str, object]:
    event = recorded.event
    return {
        "time": dt.datetime.fromtimestamp(event.time, dt.UTC).isoformat(),
        "timestamp": event.time,
        "kind": event.kind.value,
        "gpu": recorded.gpu,
        "gpu_uuid": event.gpu_uuid,
        "gpu_instance_id": event.gpu_instance_id,
        "compute_instance_id": event.compute_instance_id,
        "mig_uuid": recorded.mig_uuid,
        "profile": recorded.profile,
        **dict(zip(catalog.POD_LABELS, recorded.owner, strict=True)),
        "xid": event.xid,
        **_xid_json(event),
        "error_type": ECC_ERROR_TYPES.get(event.kind),
        "recovery_action": event.recovery_action,
    }


def _xid_json(event: DeviceEvent) -> dict[str, str | None]:
    """What the XID catalog says of an XID event; None for other events."""
    row = xids.describe(event.xid) if event.xid is not None else None
    return {
        "mnemonic": row.mnemonic if row else None,
        "description": row.description if row else None,
        "action": row.action if row else None,
        "severity": row.severity.value if row else None,
    }


async def landing(request: web.Request) -> web.Response:
    """The node console: backend state, each GPU's health and MIG layout, the latest events."""
    collector = request.app[COLLECTOR]
    links = ["/metrics", "/api/events", "/-/healthy", "/-/ready"]
    links += [str(r.url_for()) for r in request.app.router.resources() if _is_sim(r)]
    body = console.page(
        collector, node=request.app[NODE], simulated=request.app[SIMULATED], links=tuple(links)
    )
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


def _is_sim(resource: web.AbstractResource) -> bool:
    return resource.canonical == "/api/sim/fleet"


class _ClientErrors(logging.Filter):
    """Drops aiohttp's tracebacks for requests it could not parse.

    They are the client's fault (answered 4xx), and an abusive client must not fill the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500)


_CLIENT_ERRORS = _ClientErrors()


@dataclass
class Server:
    """A running HTTP server; ``url`` is where it listens."""

    runner: web.AppRunner
    listener: asyncio.Server
    url: str

    async def close(self) -> None:
        """Stop listening and finish open requests."""
        self.listener.close()
        await self.runner.cleanup()


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A 4xx of aiohttp's own (no route, wrong method, body too large) as a JSON error.

    The simulation routes answer their errors in JSON already; these then do too.
    """
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        message = {
            404: f"no such path: {request.path}",
            405: f"{request.method} is not allowed here (allowed: {error.headers.get('Allow')})",
        }.get(error.status, error.text or error.reason)
        allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
        return web.json_response({"error": message}, status=error.status, headers=allow)


async def start_server(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> Server:
    """Serve ``app`` on host:port (port 0 picks a free one) in the running event loop.

    The listener is created here rather than by an aiohttp site so that every connection goes
    through the app's ``ConnectionGuard`` (connection cap, request-head deadline).
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **httpguard.HANDLER_ARGS)
    await runner.setup()
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERRORS)  # once: filters are a set
    # An app not made by create_app (a benchmark's baseline) has no guard and is served bare.
    guard = app.get(GUARD)
    try:
        assert runner.server is not None  # set by setup()
        factory = guard.factory(runner.server) if guard is not None else runner.server
        timeout = guard.read_timeout if guard is not None else httpguard.READ_TIMEOUT_S
        listener = await asyncio.get_running_loop().create_server(
            factory,
            host or None,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=timeout if ssl_context is not None else None,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise
    bound = listener.sockets[0].getsockname()
    shown = host or "0.0.0.0"  # noqa: S104  (the operator asked for every interface)
    url_host = f"[{shown}]" if ":" in shown else shown
    scheme = "https" if ssl_context is not None else "http"
    return Server(runner, listener, f"{scheme}://{url_host}:{bound[1]}")
