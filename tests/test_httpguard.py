"""The connection guard: a cap on open connections and a deadline for each request head."""

from __future__ import annotations

import asyncio
import time

import pytest

from migexporter.collector import Collector
from migexporter.exposition import BuildInfo
from migexporter.httpguard import ConnectionGuard
from migexporter.server import create_app, start_server
from stub_backend import StubBackend

READ_TIMEOUT_S = 0.5
LIMIT = 5
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def served():
    collector = Collector(StubBackend(), BuildInfo("test"), interval=3600)
    await collector.start()
    guard = ConnectionGuard(max_connections=LIMIT, read_timeout=READ_TIMEOUT_S)
    server = await start_server(create_app(collector, guard=guard), "127.0.0.1", 0)
    port = int(server.url.rsplit(":", 1)[1])
    yield guard, port
    await server.close()
    await collector.stop()


async def _status(reader: asyncio.StreamReader) -> bytes:
    """The status line of the next response, or b"" when the server closed the connection."""
    return await asyncio.wait_for(reader.readline(), 5)


async def _closed_within(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the server closes the connection (reads return EOF), at most limit_s."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), limit_s):
        pass
    return time.monotonic() - started


async def test_a_trickled_request_head_is_cut_off(served):
    guard, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    await writer.drain()
    trickle = asyncio.create_task(_trickle(writer))
    try:
        waited = await _closed_within(reader, 5.0)
    finally:
        trickle.cancel()
    assert waited < 5.0
    await asyncio.sleep(0.05)
    assert not guard.open


async def _trickle(writer: asyncio.StreamWriter) -> None:
    for _ in range(100):  # one header byte every 50 ms: never a complete head in time
        await asyncio.sleep(0.05)
        writer.write(b"X")
        await writer.drain()


async def test_a_connection_that_never_asks_is_closed(served):
    guard, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    waited = await _closed_within(reader, 5.0)
    assert READ_TIMEOUT_S * 0.5 < waited < 5.0
    writer.close()
    await asyncio.sleep(0.05)
    assert not guard.open


async def test_keep_alive_requests_are_not_cut_off_between_scrapes(served):
    """The deadline runs from a request's first byte, not from the previous response."""
    _guard, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):
        writer.write(REQUEST)
        await writer.drain()
        assert (await _status(reader)).startswith(b"HTTP/1.1 200")
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(READ_TIMEOUT_S * 1.5)  # idle, longer than the head deadline
    writer.close()


async def test_connections_past_the_cap_get_429_and_the_rest_are_served(served):
    guard, port = served
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LIMIT)]
    await asyncio.sleep(0.05)
    assert len(guard.open) == LIMIT
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await _status(reader)).startswith(b"HTTP/1.1 429")
    assert guard.refused == 1
    writer.close()
    for _, each in held:
        each.close()
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    assert (await _status(reader)).startswith(b"HTTP/1.1 200")
    writer.close()
