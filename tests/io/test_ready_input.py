"""Input the socket holds already, taken without a wait (trio's
``io.transport.ready_input``), and what every backend's reader keeps
around it: a cancelled read takes nothing, a reset is a broken stream, and a
connection whose input never runs dry still lets the other tasks run."""

from __future__ import annotations

import socket
import struct
import sys
import time

import anyio
import anyio.lowlevel
import pytest
import sniffio
from anyio.abc import SocketAttribute

from sota_dispatch import BufferedReader
from sota_dispatch.io import paced
from sota_dispatch.io.transport import ReadyInput, ready_input
from sota_dispatch.testing import tcp_stream_pair

pytestmark = pytest.mark.anyio

#: A peer that sends as fast as it can, a bounded amount, then closes.
FLOODER = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
block = b"x" * (1 << 20)
try:
    for _ in range(2048):  # 2 GiB at most; the test closes its end long before
        sock.sendall(block)
except OSError:
    pass
"""


async def arrived(stream: anyio.abc.SocketStream, timeout: float = 10.0) -> None:
    """On trio, until ``stream``'s socket has input to read (looked at, not
    taken). asyncio's transport reads the socket itself (and owns its
    descriptor): its reads wait as they must anyway."""
    if sniffio.current_async_library() == "trio":
        with anyio.fail_after(timeout):
            await anyio.wait_readable(stream.extra(SocketAttribute.raw_socket))


async def reset(stream: anyio.abc.SocketStream) -> None:
    """Close ``stream`` with a reset (SO_LINGER 0), not a FIN."""
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def trio_ready(stream: anyio.abc.SocketStream, backend: str) -> ReadyInput:
    """``stream``'s ready input; the test skips off trio (nothing to test)."""
    if backend != "trio":
        pytest.skip("only trio's sockets take ready input")
    ready = ready_input(stream)
    assert ready is not None
    return ready


async def test_only_trios_sockets_take_ready_input_so(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (near, far):
        ready = ready_input(far)
        if anyio_backend_name != "trio":
            assert ready is None  # asyncio's, not paced yet (io.paced: tests/io/test_queued_input.py)
            return
        assert ready is not None
        take = ready[0]
        assert await take(100) is None  # nothing there: the caller waits the ordinary way
        await near.send(b"hello")
        await arrived(far)
        assert await take(100) == b"hello"
        await near.send_eof()
        await arrived(far)
        assert await take(100) is None  # the end stays for the ordinary receive to report
        with pytest.raises(anyio.EndOfStream):
            await far.receive()


async def test_a_closed_socket_is_left_to_the_ordinary_receive(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (_near, far):
        take, wait_and_take = trio_ready(far, anyio_backend_name)
        await far.aclose()
        assert await take(100) is None
        with pytest.raises(anyio.ClosedResourceError):
            await wait_and_take(100)  # left to the ordinary receive, which says so


async def test_the_waiting_take_waits_then_takes_and_leaves_ends_to_the_ordinary_receive(
    anyio_backend_name: str,
) -> None:
    async with tcp_stream_pair() as (near, far):
        _take, wait_and_take = trio_ready(far, anyio_backend_name)
        got: list[bytes] = []

        async def wait() -> None:
            got.append(await wait_and_take(100))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()  # the take waits: nothing was there
                assert got == []
                await near.send(b"late")
            assert got == [b"late"]
            with anyio.CancelScope(deadline=anyio.current_time()) as scope:  # a deadline that has passed
                await wait_and_take(100)
            assert scope.cancelled_caught
            await near.send(b"kept")
            assert await wait_and_take(100) == b"kept"
            await near.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await wait_and_take(100)


async def test_a_reset_during_the_waiting_take_is_a_broken_stream(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (near, far):
        _take, wait_and_take = trio_ready(far, anyio_backend_name)
        broken: list[bool] = []

        async def wait() -> None:
            with pytest.raises(anyio.BrokenResourceError):
                await wait_and_take(100)
            broken.append(True)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()  # the take waits
                await reset(near)
        assert broken == [True]


async def test_a_cancelled_read_loses_nothing(anyio_backend_name: str) -> None:
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        await near.send(b"kept")
        await arrived(far)
        got = b""
        with anyio.CancelScope() as scope:
            scope.cancel()
            got = await reader.read_some()
        if anyio_backend_name == "trio":  # stopped before it took anything, as trio's receive is
            assert scope.cancelled_caught
            assert got == b""
        # asyncio's checkpoint may not deliver the cancel before input it has queued
        while got != b"kept":
            with anyio.fail_after(10):
                got += await reader.read_some()


async def test_a_reset_after_input_is_a_broken_stream_not_an_end() -> None:
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        await near.send(b"before the reset")
        await arrived(far)
        await reset(near)
        received = bytearray()

        async def read_to_the_end() -> None:
            for _ in range(10):  # the input before it may come first
                received.extend(await reader.read_some())

        with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
            await read_to_the_end()
        assert bytes(received) in (b"", b"before the reset")


async def test_a_connection_whose_input_never_runs_dry_lets_the_others_run() -> None:
    # A peer floods faster than the reader handles its chunks (each costs
    # 0.3 ms here), so the socket always holds input and a read never has
    # to wait: only the reader's own yields let another task run. On trio
    # they come once per FAIR_SLICE of such input; every backend yields at
    # least that often.
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        flooder = await anyio.open_process([sys.executable, "-c", FLOODER, str(port)])
        try:
            with anyio.fail_after(30):
                far = await listener.listeners[0].accept()  # type: ignore[attr-defined]
            async with far:
                reader = BufferedReader(far)
                ticks = 0
                done = False

                async def tick() -> None:
                    nonlocal ticks
                    while not done:
                        ticks += 1
                        await anyio.lowlevel.checkpoint()

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(tick)
                        await anyio.lowlevel.checkpoint()  # the ticker is under way
                        ticks = 0
                        busy = 0.0
                        for _ in range(200):
                            await reader.read_some()
                            began = time.perf_counter()
                            while time.perf_counter() - began < 0.0003:
                                pass
                            busy += time.perf_counter() - began
                        done = True
        finally:
            flooder.kill()
            with anyio.fail_after(10):
                await flooder.aclose()
    # 60 ms of work in slices of at most a millisecond: dozens of turns.
    assert busy >= 0.06
    assert ticks >= 10, f"the other task ran {ticks} times in {busy * 1000:.0f} ms of the reader's work"


async def test_the_fair_slice_bounds_the_turn(anyio_backend_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader takes a chunk there already without a turn for the others
    # within a slice (trio's own receive yields after every chunk); past
    # the slice, it yields first.
    if anyio_backend_name != "trio":
        pytest.skip("only trio's sockets take ready input")
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            turns = {}
            for fair_slice in (3600.0, 0.0):
                monkeypatch.setattr(paced, "FAIR_SLICE", fair_slice)
                turns[fair_slice] = 0
                for _ in range(20):
                    await near.send(b"x")
                    await arrived(far)
                    before = ticks
                    assert await reader.read_some() == b"x"
                    turns[fair_slice] += ticks - before
            tg.cancel_scope.cancel()
        # A yield lets the other task run before this one resumes half the
        # time (trio shuffles its batches): twenty yields give it turns.
        assert turns == {3600.0: 0, 0.0: turns[0.0]}
        assert turns[0.0] > 0
