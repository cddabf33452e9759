"""What a reader takes from a real TCP stream of the running event loop:
whole chunks where the stream holds them whole, and never more than one
chunk read ahead of the task (memory the buffer budget has to count)."""

from __future__ import annotations

import array
import fcntl
import socket
import termios

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from sota_dispatch import BufferedReader
from sota_dispatch.io import paced, transport
from sota_dispatch.io.reader import DEFAULT_READ_SIZE
from sota_dispatch.io.transport import input_queued
from sota_dispatch.testing import tcp_stream_pair

pytestmark = pytest.mark.anyio

KiB = 1024
#: The most asyncio's and uvloop's transports read per socket read.
CHUNK = 256 * KiB


async def test_reads_take_whole_chunks_and_the_loop_reads_ahead_one_chunk_at_most(anyio_backend_name: str) -> None:
    data = bytes(range(256)) * (16 * KiB)  # 4 MiB
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(far, read_size=16 * KiB)
        queued = input_queued(far)
        sizes: list[int] = []
        ahead: list[int] = []
        received = bytearray()

        async def send() -> None:
            await near.send(data)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                while len(received) < len(data):
                    chunk = await reader.read_some()
                    sizes.append(len(chunk))
                    received += chunk
                    if queued is not None:
                        ahead.append(queued())
                    await anyio.lowlevel.checkpoint()  # let the loop run: it may read ahead meanwhile
    assert received == data
    assert max(sizes) <= CHUNK
    if anyio_backend_name == "asyncio":  # and uvloop: chunks as the loop read them
        assert max(sizes) > 16 * KiB
        assert queued is not None
        assert max(ahead) <= CHUNK  # uvloop read up to 32 chunks per wake-up
    else:  # trio reads what it is asked for
        assert queued is None
        assert max(sizes) <= 16 * KiB


async def test_a_stream_that_cannot_be_paced_is_read_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whole chunks only with the read-ahead bound: an anyio whose protocol
    # cannot take the pause (another layout) is read in read_size pieces.
    def refuse(kind: object) -> type:
        raise TypeError("object layout differs")

    monkeypatch.setattr(paced, "_one_chunk", refuse)
    data = bytes(range(256)) * 1024  # 256 KiB
    async with tcp_stream_pair() as (near, far):
        assert transport.prepare_input(far, 4 * KiB) == 4 * KiB
        reader = BufferedReader(far, read_size=4 * KiB)
        received = bytearray()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(near.send, data)
                while len(received) < len(data):
                    chunk = await reader.read_some()
                    assert len(chunk) <= 4 * KiB
                    received += chunk
    assert received == data


async def test_where_reads_take_what_they_ask_one_read_takes_up_to_the_default_read_size(
    anyio_backend_name: str,
) -> None:
    # trio reads what it is asked for: at the default size one read takes
    # all of 200 KiB that arrived, not 64 KiB of it (the trio broker read
    # six times as often as uvloop's with the old 64 KiB).
    if anyio_backend_name != "trio":
        pytest.skip("asyncio's TCP streams hand over the event loop's chunks (the test above)")
    assert 256 * KiB <= DEFAULT_READ_SIZE
    data = bytes(range(256)) * (800)  # 200 KiB
    async with tcp_stream_pair() as (near, far):
        raw = far.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * KiB)  # room for all of it at once
        reader = BufferedReader(far)
        await near.send(data)
        with anyio.fail_after(10):
            while arrived(raw) < len(data):  # noqa: ASYNC110 - the kernel's queue has no event
                await anyio.sleep(0.005)
        assert await reader.read_some() == data  # in one read


def arrived(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock`` to read (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]
