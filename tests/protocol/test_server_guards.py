"""Local services have the proxy's guards: connection cap, frame and idle timeouts.

A local service used to hold slowloris clients and 10,000 idle connections
for as long as they liked. Each case runs a real server on 127.0.0.1 with
short timeouts, on asyncio, trio and uvloop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio
import pytest
from anyio.abc import SocketStream

from sota_dispatch import BufferedReader, ChunkBuffer, Dispatcher, FrameTimeout, ReadTimeouts, Server
from sota_dispatch.testing import closed_within, connect, serve_process

pytestmark = pytest.mark.anyio


class Recorded(Dispatcher):
    """Records how its connections ended."""

    closes: ClassVar[list[BaseException | None]] = []

    async def on_close(self, reason: BaseException | None) -> None:
        type(self).closes.append(reason)


class LineEcho(Recorded):
    """Echoes each line."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            await self.writer.send(line + b"\n")


class Lengths(Recorded):
    """A codec fed from chunks(): frames are ``u8 length, body``; echoes each."""

    async def serve(self) -> None:
        buffer = ChunkBuffer()
        need = 1
        async for data in self.reader.chunks():
            work = buffer.take(data, need)
            frames = 0
            pos = 0
            if work is not None:
                while len(work) - pos >= 1 and len(work) - pos >= 1 + work[pos]:
                    end = pos + 1 + work[pos]
                    self.writer.write(work[pos:end])
                    pos, frames = end, frames + 1
                need = 1 if len(work) == pos else 1 + work[pos] - (len(work) - pos)
                buffer.keep(work, pos)
            self.reader.frame_state(len(buffer), frames)


@contextlib.asynccontextmanager
async def guarded(
    factory: type[Recorded],
    *,
    timeouts: ReadTimeouts | None,
    max_connections: int | None = None,
    wait_for_first_bytes: bool | None = None,
) -> AsyncIterator[tuple[Server, str]]:
    factory.closes = []
    server = Server(
        factory,
        "127.0.0.1:0",
        drain_timeout=1,
        timeouts=timeouts,
        max_connections=max_connections,
        wait_for_first_bytes=wait_for_first_bytes,
    )
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            yield server, address
        finally:
            server.shutdown()


SHORT = ReadTimeouts(frame=0.3, idle=0.6)


async def test_a_client_that_sends_nothing_is_closed_after_the_frame_timeout() -> None:
    async with (
        guarded(LineEcho, timeouts=SHORT, wait_for_first_bytes=True) as (server, address),
        await connect(address) as silent,
    ):
        assert 0.2 < await closed_within(silent, 5) < 2
        # Closed while it waited as a bare socket: no dispatcher was ever made.
        assert server.first_byte_timeouts == 1
    assert LineEcho.closes == []


async def test_a_silent_client_of_a_server_that_starts_at_once_gets_the_readers_frame_timeout() -> None:
    async with (
        guarded(LineEcho, timeouts=SHORT, wait_for_first_bytes=False) as (server, address),
        await connect(address) as silent,
    ):
        assert 0.2 < await closed_within(silent, 5) < 2
        assert server.first_byte_timeouts == 0
    assert isinstance(LineEcho.closes[0], FrameTimeout)


async def dribble(stream: SocketStream, data: bytes, interval: float) -> None:
    """Send ``data`` a byte at a time (bounded), until the peer is gone."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        for i in range(len(data)):
            await stream.send(data[i : i + 1])
            await anyio.sleep(interval)


async def test_a_slowloris_is_closed_after_the_frame_timeout_from_its_first_byte() -> None:
    async with (
        guarded(LineEcho, timeouts=SHORT) as (_, address),
        await connect(address) as slow,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(dribble, slow, b"x" * 40, 0.05)  # never a whole line; 2 s at most
        assert 0.2 < await closed_within(slow, 5) < 1.5
        tg.cancel_scope.cancel()
    assert isinstance(LineEcho.closes[0], FrameTimeout)


async def test_an_idle_client_is_closed_in_order_after_the_idle_timeout() -> None:
    async with guarded(LineEcho, timeouts=SHORT) as (_, address), await connect(address) as client:
        await client.send(b"hello\n")
        assert await client.receive() == b"hello\n"
        assert 0.4 < await closed_within(client, 5) < 3
    assert LineEcho.closes == [None]  # an orderly end, not an error


async def test_steady_pipelining_outlasts_the_frame_timeout() -> None:
    async with guarded(LineEcho, timeouts=SHORT) as (_, address), await connect(address) as client:
        for i in range(30):  # 1.5 s of traffic, each line whole in well under 0.3 s
            await client.send(b"n=%d\n" % i)
            assert await client.receive() == b"n=%d\n" % i
            await anyio.sleep(0.05)
    assert LineEcho.closes == [None]


async def test_a_codec_that_reports_its_frames_gets_the_frame_timeout_too() -> None:
    async with guarded(Lengths, timeouts=SHORT) as (_, address):
        async with await connect(address) as client:
            reader = BufferedReader(client)
            for _ in range(20):  # 1 s of frames each sent in two pieces: never a timeout
                await client.send(b"\x03ab")
                await anyio.sleep(0.025)
                await client.send(b"c")
                assert await reader.read_exactly(4) == b"\x03abc"
                await anyio.sleep(0.025)
        async with await connect(address) as slow, anyio.create_task_group() as tg:
            tg.start_soon(dribble, slow, b"\xff" + b"a" * 40, 0.05)  # a frame begun, never finished
            assert 0.2 < await closed_within(slow, 5) < 1.5
            tg.cancel_scope.cancel()
    assert Lengths.closes[0] is None
    assert isinstance(Lengths.closes[-1], FrameTimeout)


async def test_connections_over_the_cap_are_closed_at_once() -> None:
    async with (
        guarded(LineEcho, max_connections=3, timeouts=None) as (server, address),
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [await stack.enter_async_context(await connect(address)) for _ in range(3)]
        for c in clients:  # each is being served
            await c.send(b"hi\n")
            assert await c.receive() == b"hi\n"
        async with await connect(address) as fourth:
            assert await closed_within(fourth, 5) < 1
        assert server.connections_refused == 1


async def test_the_serve_command_gives_a_local_service_the_guards_by_flag(
    backend_args: list[str], echo_lines_env: dict[str, str]
) -> None:
    args = ["--protocol", "echo_lines", "--listen", "127.0.0.1:0", *backend_args]
    with serve_process([*args, "--frame-timeout", "300ms", "--idle-timeout", "0"], env=echo_lines_env) as proc:
        async with await connect(proc.address) as silent, await connect(proc.address) as idle:
            await idle.send(b"echo:a=1\r\n")
            assert await idle.receive() == b"echo:a=1\r\n"
            assert 0.2 < await closed_within(silent, 5) < 2
            with anyio.move_on_after(0.5):  # idle timeout 0: never closed for idling
                await idle.receive()
                pytest.fail("closed while idle though --idle-timeout is 0")
        assert proc.stop() == 0
    with serve_process([*args, "--max-connections", "2"], env=echo_lines_env) as proc:
        async with await connect(proc.address) as first, await connect(proc.address) as second:
            for client in (first, second):
                await client.send(b"echo:b=2\r\n")
                assert await client.receive() == b"echo:b=2\r\n"
            async with await connect(proc.address) as third:
                assert await closed_within(third, 5) < 1  # two served: the cap
        assert proc.stop() == 0


class SlowLineEcho(Recorded):
    """Takes 0.4 s per line: longer than the frame timeout of these tests."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            await anyio.sleep(0.4)
            await self.writer.send(line + b"\n")


async def test_the_servers_own_processing_time_is_not_the_clients_frame_time() -> None:
    async with guarded(SlowLineEcho, timeouts=SHORT) as (_, address), await connect(address) as client:
        await client.send(b"a\nb\nc\npart")  # pipelined, the last one in two pieces
        await anyio.sleep(0.1)
        await client.send(b"ial\n")
        reader = BufferedReader(client)
        with anyio.fail_after(5):
            assert [await reader.read_until(b"\n", max_bytes=64) for _ in range(4)] == [b"a", b"b", b"c", b"partial"]
    assert SlowLineEcho.closes == [None]


async def test_a_client_that_never_reads_its_answers_is_closed() -> None:
    async with guarded(LineEcho, timeouts=SHORT) as (_, address), await connect(address) as client:
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            for _ in range(2000):  # ~16 MB of answers it never reads, 256 lines a send
                await client.send(b"x" * 30 + b"\n" * 1 + (b"y" * 30 + b"\n") * 255)
                if LineEcho.closes:
                    break
        with anyio.fail_after(5):
            while not LineEcho.closes:  # noqa: ASYNC110 - the server's close has no event here
                await anyio.sleep(0.05)
    assert isinstance(LineEcho.closes[0], FrameTimeout)
