"""Moving a live connection between two servers: its descriptor, state and unread bytes.

In one process for precision (the hot restart tests move connections
between processes): a dispatcher that counts its lines gives its count as
state; server A hands the connection to server B; the client, on the same
TCP connection throughout, sees the count go on. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream

from sota_dispatch import ConnectionContext, Dispatcher, HandOff, HandOffDeclined
from sota_dispatch.io.transport import detach_socket, detachable
from sota_dispatch.protocol.moving import WAITING
from sota_dispatch.testing import connect, memory_stream_pair, serving

pytestmark = pytest.mark.anyio


class CountingLines(Dispatcher):
    """Answers each line with ``<count>:<line>``; the count moves with the connection."""

    def __init__(self, stream: ByteStream, context: ConnectionContext) -> None:
        super().__init__(stream, context)
        handoff = context.handoff or {}
        self.count = int(handoff.get("count", 0))

    def handoff_state(self) -> dict[str, Any] | None:
        return {"count": self.count}

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\r\n", max_bytes=1024)
            self.count += 1
            await self.writer.send(b"%d:" % self.count + line + b"\r\n")


class Plain(Dispatcher):
    """A dispatcher that gives no state: it cannot move."""

    async def serve(self) -> None:
        while True:
            await self.writer.send(await self.reader.read_until(b"\r\n", max_bytes=1024) + b"\r\n")


async def lines(stream: ByteStream, count: int) -> list[bytes]:
    data = b""
    with anyio.fail_after(10):
        while data.count(b"\r\n") < count:
            data += await stream.receive()
    return data.split(b"\r\n")[:count]


async def accepted_pair() -> tuple[ByteStream, socket.socket]:
    """A client stream and the plain socket its connection was accepted on
    (what another process would hand over)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        host, port = listening.getsockname()
        client = await anyio.connect_tcp(host, port)
        accepted, _ = listening.accept()
    return client, accepted


async def read_to_the_end(stream: ByteStream) -> None:
    while True:
        await stream.receive()


async def test_a_connection_moves_with_its_state() -> None:
    async with serving(CountingLines, drain_timeout=1) as old, serving(CountingLines, drain_timeout=1) as new:
        client = await connect(old.address or "")
        async with client:
            await client.send(b"a\r\nb\r\nc\r\n")
            assert await lines(client, 3) == [b"1:a", b"2:b", b"3:c"]
            moved: list[HandOff] = []

            async def sink(handoff: HandOff) -> None:
                moved.append(handoff)
                assert new.adopt(socket.socket(fileno=os.dup(handoff.fd)), handoff.unread, handoff.state)

            old.stop_accepting()
            assert old.hand_off(sink) == 1
            await client.send(b"d\r\ne\r\n")
            assert await lines(client, 2) == [b"4:d", b"5:e"]  # the same TCP connection, the count went on
            assert len(moved) == 1
            assert moved[0].state == {"count": 3}
            assert (old.active_connections, new.active_connections) == (0, 1)
            assert new.connections_adopted == 1
            assert old.connections_handed_off == 1


class ClientFirst(CountingLines):
    """Its clients speak first: a silent connection waits as a bare socket."""

    speaks_first = False


async def test_a_connection_that_has_not_spoken_moves_and_waits_there() -> None:
    async with serving(ClientFirst, drain_timeout=1) as old, serving(ClientFirst, drain_timeout=1) as new:
        silent = await connect(old.address or "")
        talker = await connect(old.address or "")  # accepted after it: the silent one is waiting by now
        async with silent, talker:
            await talker.send(b"a\r\n")
            assert await lines(talker, 1) == [b"1:a"]
            assert old.waiting_connections == 1
            moved: list[HandOff] = []
            both_in = anyio.Event()

            async def sink(handoff: HandOff) -> None:
                moved.append(handoff)
                assert new.adopt(socket.socket(fileno=os.dup(handoff.fd)), handoff.unread, handoff.state)
                if len(moved) == 2:
                    both_in.set()

            old.stop_accepting()
            assert old.hand_off(sink) == 2  # the waiting one, and the one that spoke
            with anyio.fail_after(10):
                await both_in.wait()
            await anyio.wait_all_tasks_blocked()
            assert (old.waiting_connections, new.waiting_connections) == (0, 1)  # still a bare socket
            await silent.send(b"x\r\n")  # its first bytes, now to the new server
            assert await lines(silent, 1) == [b"1:x"]
            await talker.send(b"b\r\n")
            assert await lines(talker, 1) == [b"2:b"]
            assert new.connections_adopted == 2
            assert old.connections_handed_off == 2


async def test_a_waiting_connection_adopted_by_a_server_that_does_not_wait_is_served_as_new() -> None:
    async with serving(CountingLines, drain_timeout=1) as server:  # speaks_first not declared: no waiting
        assert not server.wait_for_first_bytes
        client, accepted = await accepted_pair()
        async with client:
            assert server.adopt(accepted, b"", {WAITING: True})
            await client.send(b"x\r\n")
            assert await lines(client, 1) == [b"1:x"]  # a fresh dispatcher, no state to restore


async def test_adopted_connections_read_their_unread_bytes_first() -> None:
    async with serving(CountingLines, drain_timeout=1) as server:
        client, accepted = await accepted_pair()
        async with client:
            assert server.adopt(accepted, b"x\r\ny\r\n", {"count": 10})
            assert await lines(client, 2) == [b"11:x", b"12:y"]  # read from the old process, answered here
            await client.send(b"z\r\n")
            assert await lines(client, 1) == [b"13:z"]


async def test_connections_that_cannot_move_stay() -> None:
    async with serving(Plain, drain_timeout=1) as server:
        client = await connect(server.address or "")
        async with client:
            await client.send(b"hello\r\n")
            assert await lines(client, 1) == [b"hello"]

            async def sink(handoff: HandOff) -> None:
                raise AssertionError("nothing may be handed off")

            server.stop_accepting()
            assert server.hand_off(sink) == 0
            await client.send(b"still here\r\n")
            assert await lines(client, 1) == [b"still here"]


@pytest.mark.parametrize(
    ("refusal", "warned"),
    [(OSError("the new process went away"), True), (HandOffDeclined("not now"), False)],
    ids=["failed", "declined"],
)
async def test_a_failing_sink_closes_only_that_connection(
    refusal: Exception, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink that fails or declines costs that connection only; only a
    failure is a warning (a declined one, say parking during shutdown, is
    the drain closing an idle connection)."""
    caplog.set_level(logging.DEBUG, logger="sota_dispatch.protocol.handoff")
    async with serving(CountingLines, drain_timeout=1) as server:
        client = await connect(server.address or "")
        async with client:
            await client.send(b"a\r\n")
            assert await lines(client, 1) == [b"1:a"]

            async def sink(handoff: HandOff) -> None:
                raise refusal

            assert server.hand_off(sink) == 1
            with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await read_to_the_end(client)
            records = [r for r in caplog.records if r.name == "sota_dispatch.protocol.handoff"]
            assert [r.levelno for r in records if "hand-off failed" in r.message] == ([logging.WARNING] * warned)
            assert any(str(refusal) in r.message for r in records)
        # The server itself is fine: it still accepts.
        other = await connect(server.address or "")
        async with other:
            await other.send(b"b\r\n")
            assert await lines(other, 1) == [b"1:b"]


async def test_only_plain_socket_streams_detach() -> None:
    left, right = memory_stream_pair()
    assert not detachable(left)
    assert detach_socket(left) is None
    await left.aclose()
    await right.aclose()
