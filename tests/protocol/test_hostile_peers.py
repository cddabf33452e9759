"""A peer that misbehaves costs its own connection, never the listener.

Run on asyncio, uvloop and trio: uvloop hands over an accepted connection
whose peer already reset it with no socket behind it, which once crashed
the whole process from the accept path.
"""

from __future__ import annotations

import logging

import anyio
import pytest

from sota_dispatch import Dispatcher
from sota_dispatch.testing import connect_and_reset, serving

pytestmark = pytest.mark.anyio


class LineEcho(Dispatcher):
    protocol_name = "line-echo"

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            await self.writer.send(line + b"\n")


async def echo_once(address: str, data: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(data + b"\n")
            out = b""
            while not out.endswith(b"\n"):
                out += await stream.receive()
            return out


async def test_clients_that_reset_at_once_cost_only_their_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(LineEcho) as server:
        assert server.address is not None
        for _ in range(4):  # the crash took 16-75 such connections
            done = await anyio.to_thread.run_sync(connect_and_reset, server.address, 100)
            assert done == 100, "the listener stopped accepting"
            assert await echo_once(server.address, b"still here") == b"still here\n"
        assert server.connections_total >= 400
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


async def test_a_failing_factory_costs_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def factory(stream: object, context: object) -> Dispatcher:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("plugin bug")
        return LineEcho(stream, context)  # type: ignore[arg-type]

    async with serving(factory) as server:
        assert server.address is not None
        host, _, port = server.address.rpartition(":")
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(host, int(port)) as stream:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()  # closed at once
        assert await echo_once(server.address, b"next") == b"next\n"
    assert "plugin bug" in caplog.text
