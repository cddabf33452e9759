"""Batches taken where their bytes arrive (CodecLoop.take_inline).

On anyio's asyncio sockets (asyncio and uvloop) a chunk that arrives while
the loop's iteration waits for input is decoded and handed to the taker
from the event loop's read callback; the iteration sees only what the
taker leaves it. On trio every batch comes from the iteration, as ever.
Over real TCP; a second chunk landing in the same loop turn is delivered
the way the event loop delivers it, through the stream protocol's
``data_received``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream

from sota_dispatch import BufferedReader, BufferedWriter, Dispatcher, FrameTimeout, ProtocolError, ReadTimeouts
from sota_dispatch.protocol.loop import CodecLoop
from sota_dispatch.testing import tcp_stream_pair

pytestmark = pytest.mark.anyio

Event = tuple[str, list[bytes]]


class Lines:
    """Frames are lines; a line starting with ``!`` is bad bytes (the lines
    before it are handed out first, :meth:`check` raises next)."""

    ready = True

    def __init__(self) -> None:
        self._buffer = b""
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self.check()
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"!"):
                self._error, self._buffer = ProtocolError(f"bad line {line!r}"), b""
                return lines[:i]
        return lines

    def data_to_send(self) -> bytes:
        return b""

    def check(self) -> None:
        if self._error is not None:
            raise self._error


@asynccontextmanager
async def served(
    taker: Callable[[CodecLoop[bytes], list[bytes], int], bool], frame_timeout: float = 10.0
) -> AsyncIterator[tuple[SocketStream, SocketStream, CodecLoop[bytes], MemoryObjectReceiveStream[Event]]]:
    """A CodecLoop over the far end of a TCP connection, iterated by a task;
    what the taker and the iteration get, in order, on the stream yielded.
    The iteration's end is an event: ("end", []) or ("raised: <name>", [])."""
    send, receive = anyio.create_memory_object_stream[Event](100)
    async with tcp_stream_pair() as (client, server):
        writer = BufferedWriter(server)
        reader = BufferedReader(server, writer=writer)
        reader.set_timeouts(ReadTimeouts(frame_timeout, 60.0))
        loop: CodecLoop[bytes] = CodecLoop(reader, writer, Lines(), empty_batches=True)

        def take(frames: list[bytes], received: int) -> bool:
            send.send_nowait(("inline", frames))
            return taker(loop, frames, received)

        loop.take_inline(take)

        async def iterate() -> None:
            try:
                async for frames in loop:
                    send.send_nowait(("task", frames))
            except Exception as error:  # noqa: BLE001 (what the iteration raised is the test's)
                send.send_nowait((f"raised: {type(error).__name__}", []))
            else:
                send.send_nowait(("end", []))

        async with anyio.create_task_group() as tg:
            tg.start_soon(iterate)
            yield client, server, loop, receive
            tg.cancel_scope.cancel()


async def parked(loop: CodecLoop[Any]) -> None:
    """Until the iteration waits for input (then a chunk can be taken inline)."""
    with anyio.fail_after(5):
        while not loop.reader.idle:
            await anyio.lowlevel.checkpoint()


async def next_events(receive: MemoryObjectReceiveStream[Event], count: int) -> list[Event]:
    with anyio.fail_after(5):
        return [await receive.receive() for _ in range(count)]


async def until_the_end(receive: MemoryObjectReceiveStream[Event]) -> list[Event]:
    """The events until the iteration's end, empty batches left out."""
    events: list[Event] = []
    with anyio.fail_after(5):
        while not events or not events[-1][0].startswith(("raised", "end")):
            event = await receive.receive()
            if event[1] or not event[0].startswith(("task", "inline")):
                events.append(event)
    return events


def inline_here(anyio_backend_name: str) -> bool:
    return anyio_backend_name != "trio"


async def test_each_batch_is_taken_where_it_arrives_on_asyncio_sockets(anyio_backend_name: str) -> None:
    async with served(lambda loop, frames, received: True) as (client, _, loop, receive):
        for i in range(3):
            await parked(loop)
            await client.send(b"line %d\n" % i)
            (event,) = await next_events(receive, 1)
            assert event == ("inline" if inline_here(anyio_backend_name) else "task", [b"line %d" % i])


async def test_a_taker_that_needs_a_wait_hands_the_rest_on_and_later_chunks_keep_their_order(
    anyio_backend_name: str,
) -> None:
    if not inline_here(anyio_backend_name):
        pytest.skip("trio reads only when asked: every batch comes from the iteration")
    calls: list[int] = []

    def taker(loop: CodecLoop[bytes], frames: list[bytes], received: int) -> bool:
        calls.append(received)
        if len(calls) == 1:
            # A second chunk in the same loop turn, before the task runs (as
            # uvloop delivers several reads per wake-up): not offered (the
            # first one's work is not done), queued instead.
            protocol: Any = loop.reader._stream._protocol  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_soon(protocol.data_received, b"second\n")
            return False
        return True

    async with served(taker) as (client, _, loop, receive):
        await parked(loop)
        await client.send(b"first\n")
        assert await next_events(receive, 3) == [("inline", [b"first"]), ("task", []), ("task", [b"second"])]
        assert calls == [len(b"first\n")]
        await parked(loop)
        await client.send(b"third\n")  # the iteration waits again: taken inline again
        assert await next_events(receive, 1) == [("inline", [b"third"])]


async def test_a_codec_error_is_raised_by_the_iteration_after_the_frames_before_it(anyio_backend_name: str) -> None:
    async with served(lambda loop, frames, received: True) as (client, _, loop, receive):
        await parked(loop)
        await client.send(b"good\n!bad\n")
        where = "inline" if inline_here(anyio_backend_name) else "task"
        assert await until_the_end(receive) == [(where, [b"good"]), ("raised: ProtocolError", [])]


async def test_an_error_of_the_taker_is_raised_by_the_iteration(anyio_backend_name: str) -> None:
    if not inline_here(anyio_backend_name):
        pytest.skip("trio reads only when asked: every batch comes from the iteration")

    def taker(loop: CodecLoop[bytes], frames: list[bytes], received: int) -> bool:
        raise RuntimeError("a bug in the caller's batch")

    async with served(taker) as (client, _, loop, receive):
        await parked(loop)
        await client.send(b"x\n")
        assert await next_events(receive, 2) == [("inline", [b"x"]), ("raised: RuntimeError", [])]


async def test_the_idle_and_frame_clocks_run_on_after_a_batch_taken_inline() -> None:
    async with served(lambda loop, frames, received: True, frame_timeout=0.5) as (client, _, loop, receive):
        await parked(loop)
        await client.send(b"one\n")
        await next_events(receive, 1)
        await parked(loop)
        # Between frames: the idle clock runs from this input (not the
        # first byte's deadline from the connect, the wait's when it began).
        now = anyio.current_time()
        assert now + 30 < loop.reader.idle_deadline < now + 61
        await client.send(b"never finish")  # a frame begun: its clock, not the idle one
        assert await until_the_end(receive) == [(f"raised: {FrameTimeout.__name__}", [])]


async def test_work_handed_on_is_done_before_a_drain_ends_the_iteration(anyio_backend_name: str) -> None:
    if not inline_here(anyio_backend_name):
        pytest.skip("trio reads only when asked: every batch comes from the iteration")

    def taker(loop: CodecLoop[bytes], frames: list[bytes], received: int) -> bool:
        loop.stop()  # a drain in the same loop turn
        return False  # and work left for the task

    async with served(taker) as (client, _, loop, receive):
        await parked(loop)
        await client.send(b"last\n")
        assert await next_events(receive, 3) == [("inline", [b"last"]), ("task", []), ("end", [])]


async def test_a_large_chunk_taken_inline_lets_the_loop_turn_before_the_next_read(
    anyio_backend_name: str, anyio_backend: object
) -> None:
    if not inline_here(anyio_backend_name):
        pytest.skip("trio reads only when asked: every batch comes from the iteration")
    async with served(lambda loop, frames, received: True) as (_, server, loop, receive):
        await parked(loop)
        protocol: Any = server._protocol  # type: ignore[attr-defined]
        transport: Any = server._transport  # type: ignore[attr-defined]
        protocol.data_received(b"%0999d\n" % 0 * 70)  # 70 KiB at once: more is likely waiting
        # A flooding peer gets one chunk per loop turn: uvloop would read up
        # to 32 in a row, so reading pauses; asyncio's own loop reads one per
        # turn by itself, and a pause would only cost two epoll_ctl calls.
        assert transport.is_reading() is (anyio_backend == "asyncio")  # not ("asyncio", uvloop)
        assert await next_events(receive, 1) == [("inline", [b"%0999d" % 0] * 70)]
        assert transport.is_reading()  # the next turn reads on
        protocol.data_received(b"small\n")
        assert transport.is_reading()  # the latency case goes on at once
        assert await next_events(receive, 1) == [("inline", [b"small"])]


async def test_a_closing_connection_serves_nothing_more_where_it_lands(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (_, server):
        dispatcher = Dispatcher(server)
        offered = dispatcher.reader.offer_input(lambda data: True) is not None
        assert offered == inline_here(anyio_backend_name)
        dispatcher.close_soon()
        assert getattr(getattr(server, "_protocol", None), "sota_inline", None) is None
