"""A ROUTER sends the first replies of a long read batch before the rest.

:func:`sota_zmtp.connection.pump` sends what the handlers have written to
the sending peer once ``EARLY_REPLIES`` messages of one read batch are
delivered, as the core's serving loop does for request/reply services: a
pipelining DEALER reads and sends again while the rest are answered. Over
real TCP on 127.0.0.1 with hand-written ZMTP peers, on every backend.
"""

from __future__ import annotations

import socket
import struct
from typing import ClassVar

import anyio
import anyio.to_thread
import pytest
from zmtp_support import connect, handshake, ready, serving, v3_greeting

from sota_dispatch.protocol.serving import EARLY_REPLIES
from sota_zmtp import EchoRouter
from sota_zmtp.wire import encode_message

pytestmark = pytest.mark.anyio


class Watching(EchoRouter):
    """Echoes, recording first what the sender's writer still holds."""

    held: ClassVar[list[int]] = []

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        Watching.held.append(self.peers[identity].writer.pending)
        await super().on_message(identity, frames)


def messages(count: int, size: int = 4) -> list[bytes]:
    """One-frame messages, each ``size`` bytes: ``m0``, ``m1``, ... padded."""
    return [encode_message([f"m{i}".encode().ljust(size, b".")]) for i in range(count)]


async def pipeline(count: int, router: Watching | None = None) -> list[int]:
    """``count`` messages in one send; the writer's bytes held at each."""
    Watching.held = []
    sent = messages(count)
    async with serving(router or Watching()) as (_, address), await connect(address) as peer:
        await handshake(peer, b"pipelining")
        await peer.send(b"".join(sent))
        echoed = await peer.receive_exactly(sum(map(len, sent)))
        assert echoed == b"".join(sent)  # every message back, in order
    return Watching.held


async def test_the_first_replies_of_a_long_batch_leave_before_the_rest_are_delivered() -> None:
    reply = len(messages(1)[0])
    held = await pipeline(2 * EARLY_REPLIES + 4)  # one send: one read batch on the server
    assert held[EARLY_REPLIES - 1] == (EARLY_REPLIES - 1) * reply  # held until the 48th is written
    assert held[EARLY_REPLIES] == 0  # then sent, before the 49th is delivered
    # Once per batch: the rest wait for the batch's end.
    assert held[-1] == (len(held) - 1 - EARLY_REPLIES) * reply


async def test_a_short_batch_leaves_in_one_send_at_its_end() -> None:
    reply = len(messages(1)[0])
    held = await pipeline(EARLY_REPLIES - 1)
    assert held == [i * reply for i in range(EARLY_REPLIES - 1)]


# -- hostile peers ----------------------------------------------------------------


async def test_a_dealer_that_pipelines_and_resets_costs_only_its_own_connection() -> None:
    """Early replies meet a reset socket: the send gives up quietly, the
    peer is detached, and the next peer is answered in full."""
    router = Watching()
    async with serving(router) as (_, address):
        host, _, port = address.rpartition(":")

        def pipeline_and_reset(index: int) -> None:
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(v3_greeting() + ready(f"reset{index}".encode()))
                sock.sendall(b"".join(messages(4 * EARLY_REPLIES)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        for index in range(5):
            await anyio.to_thread.run_sync(pipeline_and_reset, index)
        with anyio.fail_after(10):
            while any(name.startswith(b"reset") for name in router.peers):  # noqa: ASYNC110 - no event for a detach
                await anyio.sleep(0.01)
        sent = messages(3 * EARLY_REPLIES)
        async with await connect(address) as peer:
            await handshake(peer, b"next")
            await peer.send(b"".join(sent))
            assert await peer.receive_exactly(sum(map(len, sent))) == b"".join(sent)


async def test_a_dealer_that_never_reads_holds_at_most_its_send_hwm() -> None:
    """A peer that floods and reads nothing: early replies hand the socket
    only what it takes now; replies queue up to ``send_hwm`` at most (more
    are dropped, libzmq's ROUTER behaviour), and once the socket is full the
    connection stops reading from the peer instead of buffering."""
    hwm = 64 * 1024
    router = Watching(send_hwm=hwm)
    Watching.held = []
    batch = b"".join(messages(256, 200))  # ~52 KB of messages, as many bytes of replies
    async with serving(router) as (_, address), await connect(address) as peer:
        await handshake(peer, b"flood")
        stalled = False
        for _ in range(400):  # ~20 MB at most, never read
            with anyio.move_on_after(1) as scope:
                await peer.send(batch)
            if scope.cancelled_caught:
                stalled = True  # the server stopped reading: backpressure, not memory
                break
        assert stalled
    assert max(Watching.held) < hwm + 256  # the mark and one message over it, at most
