"""Connection limits aiohttp does not have: a cap on open connections and a request-head deadline.

aiohttp bounds the request line and header sizes itself (``HANDLER_ARGS``) but waits forever
for a client that trickles its request head, and accepts any number of connections. Here each
connection's protocol is wrapped: past ``max_connections`` a new one is answered 429 and
closed; a connection that has sent part of a request must reach the handler within
``read_timeout`` seconds or it is closed. Idle keep-alive connections are aiohttp's to time out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.typedefs import Middleware

MAX_CONNECTIONS = 512
READ_TIMEOUT_S = 10.0  # from a request's first byte to its handler; also the TLS handshake's
KEEPALIVE_S = 75.0  # idle keep-alive; longer than any sane scrape interval's gap
MAX_BODY_BYTES = 64 * 1024  # GET bodies are never read; the simulator's are small JSON objects
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": 8190,  # request line; longer is answered 400 by aiohttp
    "max_field_size": 8190,  # one header
    "max_headers": 64,
    "keepalive_timeout": KEEPALIVE_S,
}
TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Content-Length: 21\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many connections\n"
)


class ConnectionGuard:
    """Counts open connections and holds the deadline of each; one per listening server."""

    def __init__(
        self, max_connections: int = MAX_CONNECTIONS, read_timeout: float = READ_TIMEOUT_S
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        # Open connections by id() of aiohttp's protocol (it has no __weakref__), so that the
        # middleware finds a request's connection; entries leave with the connection.
        self.open: dict[int, _Guarded] = {}
        self.refused = 0

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` wrapping aiohttp's ``inner``."""
        return lambda: _Guarded(self, inner())

    def middleware(self) -> Middleware:
        """Tells the guard when a request has reached its handler and when it is done."""

        @web.middleware
        async def mark(request: web.Request, handler: Any) -> web.StreamResponse:
            guarded = self.open.get(id(request.protocol))
            if guarded is not None:
                guarded.request_started()
            try:
                response: web.StreamResponse = await handler(request)
                return response
            finally:
                if guarded is not None:
                    guarded.request_done()

        return mark


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's checks around it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner: Any = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if len(guard.open) >= guard.max_connections:
            guard.refused += 1
            self._inner = None
            transport.write(TOO_MANY)  # type: ignore[attr-defined]
            transport.close()
            return
        self._transport = transport
        guard.open[id(self._inner)] = self
        self._inner.connection_made(transport)
        self._arm()  # a new connection owes its first request head too

    def _arm(self) -> None:
        if not self._busy and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._guard.read_timeout, self._too_slow
            )

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._inner is not None:
            self._guard.open.pop(id(self._inner), None)
            self._inner.connection_lost(exc)

    def request_started(self) -> None:
        """A request reached its handler: its head was read in time."""
        self._busy = True
        self._cancel()

    def request_done(self) -> None:
        """The handler returned; the next request's head will have its own deadline."""
        self._busy = False

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._busy:
            self._transport.close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
