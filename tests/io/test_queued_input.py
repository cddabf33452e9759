"""asyncio's streams, paced: input taken from the stream's queue without
anyio's ``receive()`` (``io.paced.queued_input``).

anyio's ``receive()`` resumes reading before each wait and pauses it after:
two ``epoll_ctl`` calls per request for a service answering one at a time.
A small chunk that arrives while the reader waits goes to it with reading
left on; a chunk that has to wait for a busy task, or a large one, pauses
reading, so the loop never reads more than one chunk ahead of the task.
trio reads only when asked (``ready_input``): nothing of this applies.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.io.paced import FAIR_SHARE, prepare_input, queued_input
from sota_dispatch.io.transport import input_queued, ready_input
from sota_dispatch.testing import send_bytewise, tcp_stream_pair

pytestmark = pytest.mark.anyio

#: Bounds every wait for the loop to get somewhere (turns, not seconds).
TURNS = 10_000


def paced(stream: anyio.abc.SocketStream, backend: str) -> tuple[Any, Any]:
    """``stream``'s protocol and transport; the test skips on trio."""
    if backend == "trio":
        pytest.skip("trio reads only when asked: no queue, nothing read ahead")
    return getattr(stream, "_protocol"), getattr(stream, "_transport")  # noqa: B009


async def until(condition: Any, what: str) -> None:
    """Give the loop turns until ``condition()`` holds (bounded)."""
    for _ in range(TURNS):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"not after {TURNS} turns: {what}")


async def test_only_a_paced_asyncio_stream_has_a_queue_to_take_from(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (near, far):
        assert queued_input(far) is None  # not paced yet, or trio: anyio's receive
        prepare_input(far, 65536)
        ready = queued_input(far)
        if anyio_backend_name == "trio":
            assert ready is None
            return
        assert ready is not None
        assert ready_input(far) is not None
        take, wait = ready
        assert await take(100) is None  # nothing queued: the caller waits
        await near.send(b"hello")
        assert await wait(100) == b"hello"
        await near.send(b"0123456789")
        assert await wait(4) == b"0123"  # a caller asking for less gets less, and the rest next
        assert await take(100) == b"456789"
        await near.send_eof()
        with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
            await wait(100)


async def test_requests_one_at_a_time_leave_reading_on(anyio_backend_name: str) -> None:
    # The latency case: every request reaches a reader that waits for it.
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        protocol, transport = paced(far, anyio_backend_name)
        reading: list[bool] = []

        async def serve() -> None:
            for _ in range(20):
                request = await reader.read_some()
                reading.append(transport.is_reading())
                await far.send(request)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                for number in range(20):
                    await until(lambda: protocol.sota_waiting, "the reader waits")
                    await near.send(b"%d" % number)
                    assert await near.receive() == b"%d" % number
    assert reading == [True] * 20  # never paused, so never resumed either


async def test_a_chunk_that_waits_for_a_busy_task_pauses_reading(anyio_backend_name: str) -> None:
    # A peer that sends a byte per segment to a task busy elsewhere: one
    # chunk is read ahead, then nothing until the task reads again; every
    # byte arrives, in order.
    data = bytes(range(256)) * 8
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        protocol, transport = paced(far, anyio_backend_name)
        queued = input_queued(far)
        assert queued is not None
        received = bytearray()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    received.extend(await reader.read_some())

                tg.start_soon(first)
                await until(lambda: protocol.sota_waiting, "the reader waits")
                await near.send(data[:10])
                await until(lambda: received, "the first chunk arrives")
                assert transport.is_reading()  # handed to the reader: reading went on
                tg.start_soon(send_bytewise, near, data[10:])  # the busy task reads nothing meanwhile
                await until(lambda: protocol.read_queue, "a chunk is read ahead")
                for _ in range(100):  # the loop's turns find the socket paused
                    await anyio.lowlevel.checkpoint()
                assert not transport.is_reading()
                assert len(protocol.read_queue) == 1
                assert 0 < queued() < len(data) - 10
                while len(received) < len(data):
                    received.extend(await reader.read_some())
    assert received == data


async def test_a_large_chunk_handed_to_a_waiting_task_pauses_reading(anyio_backend_name: str) -> None:
    # A chunk of FAIR_SHARE or more suggests more in the socket: as when it
    # is taken inline, reading pauses (uvloop would read up to 32 chunks
    # per wake-up) and the task's next wait resumes it. The chunk is given
    # to the protocol as the loop gives it, to have its size exact. So is
    # a second small chunk before the task ran (uvloop reads on within one
    # wake-up): it waits in the queue, and reading pauses.
    for sizes, left_on in (([FAIR_SHARE - 1], True), ([FAIR_SHARE], False), ([1, 1], False)):
        async with tcp_stream_pair() as (_near, far):
            BufferedReader(far)
            protocol, transport = paced(far, anyio_backend_name)
            transport.resume_reading()
            protocol.sota_waiting = True  # as while queued_input's wait runs
            for size in sizes:
                protocol.data_received(bytes(size))
            protocol.sota_waiting = False
            assert transport.is_reading() is left_on, sizes
            protocol.read_queue.clear()


async def test_a_cancelled_wait_leaves_no_waiter_behind(anyio_backend_name: str) -> None:
    # After a cancelled wait, a chunk has no task to go to: it is queued,
    # reading pauses, and the next read takes it.
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        protocol, transport = paced(far, anyio_backend_name)
        with anyio.move_on_after(0.05):
            await reader.read_some()
        assert not protocol.sota_waiting
        await near.send(b"after")
        with anyio.fail_after(10):
            await until(lambda: protocol.read_queue, "the chunk is queued")
            assert not transport.is_reading()
            assert await reader.read_some() == b"after"
