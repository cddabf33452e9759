"""A local service sends a long batch's first replies before answering the rest.

The core's serving loop sends what it has written once ``EARLY_REPLIES``
requests of one read batch are answered, so a pipelining client reads and
sends again while the rest are answered. Over real TCP on 127.0.0.1, with
the tutorial protocol (examples/idproto.py).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from idproto import REQUEST, Frame, IdCodec, IdProto

from sota_dispatch import FrameTimeout, ReadTimeouts, Server, testing
from sota_dispatch.io.writer import DEFAULT_HIGH_WATER
from sota_dispatch.protocol.serving import EARLY_REPLIES
from sota_dispatch.testing import serving

pytestmark = pytest.mark.anyio


class Watching(IdProto):
    """Records, as each request is answered, the bytes its writer still holds."""

    held: ClassVar[list[int]] = []
    closes: ClassVar[list[BaseException | None]] = []

    def on_request(self, frame: Any) -> bytes:
        Watching.held.append(self.writer.pending)
        return super().on_request(frame)

    async def on_close(self, reason: BaseException | None) -> None:
        Watching.closes.append(reason)


def requests(count: int, body: bytes = b"x") -> bytes:
    return b"".join(Frame.make(REQUEST, i, body).raw for i in range(count))


async def pipeline(count: int) -> list[int]:
    """``count`` requests in one send; the writer's bytes held at each."""
    Watching.held = []
    async with serving(Watching) as server:
        assert server.address is not None
        async with await testing.connect(server.address) as stream:
            await stream.send(requests(count))
            codec, answers = IdCodec(1 << 20), list[Frame]()
            with anyio.fail_after(10):
                while len(answers) < count:
                    answers += codec.feed(await stream.receive())
            assert [a.request_id for a in answers] == list(range(count))  # every answer, in order
            assert [a.body for a in answers] == [b"X"] * count
    return Watching.held


async def test_the_first_replies_of_a_long_batch_leave_before_the_rest_are_answered() -> None:
    reply = len(Frame.make(REQUEST, 0, b"X").raw)
    held = await pipeline(2 * EARLY_REPLIES + 4)  # one send: one read batch on the server
    assert held[EARLY_REPLIES - 1] == (EARLY_REPLIES - 1) * reply  # held until the 48th is written
    assert held[EARLY_REPLIES] == 0  # then sent, before the 49th is answered
    # Once per batch: the rest wait for the batch's end.
    assert held[-1] == (len(held) - 1 - EARLY_REPLIES) * reply


async def test_a_short_batch_leaves_in_one_send_at_its_end() -> None:
    reply = len(Frame.make(REQUEST, 0, b"X").raw)
    held = await pipeline(EARLY_REPLIES - 1)
    assert held == [i * reply for i in range(EARLY_REPLIES - 1)]


# -- hostile peers ----------------------------------------------------------------


async def test_a_client_that_pipelines_and_resets_costs_only_its_own_connection() -> None:
    """Early replies meet a reset socket: the send gives up quietly, the
    connection ends, and the next client is answered in full."""
    Watching.held, Watching.closes = [], []
    async with serving(Watching) as server:
        address = server.address
        assert address is not None
        host, _, port = address.rpartition(":")

        def pipeline_and_reset() -> None:
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(requests(4 * EARLY_REPLIES))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        for _ in range(5):
            await anyio.to_thread.run_sync(pipeline_and_reset)
        with anyio.fail_after(10):
            while len(Watching.closes) < 5:  # noqa: ASYNC110 - the server's close has no event here
                await anyio.sleep(0.01)
        async with await testing.connect(address) as stream:
            await stream.send(requests(3 * EARLY_REPLIES))
            codec, answers = IdCodec(1 << 20), list[Frame]()
            with anyio.fail_after(10):
                while len(answers) < 3 * EARLY_REPLIES:
                    answers += codec.feed(await stream.receive())
            assert [a.request_id for a in answers] == list(range(3 * EARLY_REPLIES))


async def test_a_client_that_never_reads_is_closed_with_its_replies_bounded() -> None:
    """Early replies hand the socket only what it takes now: a client that
    pipelines megabytes and reads nothing holds the service's writer near
    its high-water mark until the send timeout closes it."""
    Watching.held, Watching.closes = [], []
    server = Server(Watching, timeouts=ReadTimeouts(0.5, 10.0))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        assert server.address is not None
        async with await testing.connect(server.address) as client:
            batch = requests(256, b"y" * 200)  # ~55 KB of requests, as many bytes of replies
            with contextlib.suppress(anyio.BrokenResourceError, OSError), anyio.fail_after(20):
                for _ in range(600):  # ~33 MB it never reads
                    await client.send(batch)
                    if Watching.closes:
                        break
            with anyio.fail_after(10):
                while not Watching.closes:  # noqa: ASYNC110 - the server's close has no event here
                    await anyio.sleep(0.01)
        server.shutdown()
    assert isinstance(Watching.closes[0], FrameTimeout)
    assert max(Watching.held) < 2 * DEFAULT_HIGH_WATER  # one read batch's replies over the mark, at most
