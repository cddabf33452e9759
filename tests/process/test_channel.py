"""The control channel between a supervisor and its workers: JSON messages with descriptors.

Real Unix socket pairs; descriptors really cross (a socket sent is used on
the other side). Malformed input raises ProtocolError only.
"""

from __future__ import annotations

import socket

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import ProtocolError
from sota_dispatch.process.channel import MAX_FDS, MAX_MESSAGE, Channel

pytestmark = pytest.mark.anyio


async def pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return await Channel.from_socket(a), await Channel.from_socket(b)


async def test_messages_and_descriptors_cross_in_order() -> None:
    left, right = await pair()
    one, two = socket.socketpair()
    try:
        await left.send({"type": "a", "n": 1})
        await left.send({"type": "b", "text": "é"}, [one])
        await left.send({"type": "c"})
        first, none = await right.receive()
        second, carried = await right.receive()
        third, _ = await right.receive()
        assert (first, none) == ({"type": "a", "n": 1}, [])
        assert second == {"type": "b", "text": "é"}
        assert third == {"type": "c"}
        assert len(carried) == 1
        # The descriptor is the same socket: what is sent on it arrives at its peer.
        carried[0].sendall(b"through the copy")
        assert two.recv(100) == b"through the copy"
        carried[0].close()
    finally:
        one.close()
        two.close()
        await left.aclose()
        await right.aclose()


async def test_many_sockets_are_split_over_messages() -> None:
    left, right = await pair()
    pairs = [socket.socketpair() for _ in range(MAX_FDS * 2 + 3)]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(left.send_sockets, {"type": "start"}, [a for a, _ in pairs])
            message, _ = await right.receive()
            received = await right.receive_sockets(message)
        assert message == {"type": "start", "sockets": len(pairs)}
        assert len(received) == len(pairs)
        for got, (_, peer) in zip(received, pairs, strict=True):
            got.sendall(b"x")
            assert peer.recv(1) == b"x"
            got.close()
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        await left.aclose()
        await right.aclose()


async def test_too_many_descriptors_on_one_message_is_refused() -> None:
    left, right = await pair()
    with pytest.raises(ValueError, match="at most"):
        await left.send({"type": "x"}, list(range(MAX_FDS + 1)))
    await left.aclose()
    await right.aclose()


async def test_a_closed_peer_ends_the_channel() -> None:
    left, right = await pair()
    await left.aclose()
    with pytest.raises(anyio.EndOfStream):
        await right.receive()
    await right.aclose()


@pytest.mark.parametrize(
    "raw",
    [
        (5).to_bytes(4, "big") + b"nope!",  # not JSON
        (2).to_bytes(4, "big") + b"[]",  # not an object
        (9).to_bytes(4, "big") + b'{"fds":3}',  # descriptors that never came
        (MAX_MESSAGE + 1).to_bytes(4, "big"),  # too large to buffer
    ],
    ids=["not-json", "not-object", "missing-fds", "oversized"],
)
async def test_malformed_messages_raise_protocol_error(raw: bytes) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    right = await Channel.from_socket(b)
    a.sendall(raw)
    with pytest.raises(ProtocolError):
        with anyio.fail_after(5):
            await right.receive()
    a.close()
    await right.aclose()


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_error_or_waits(data: bytes) -> None:
    async def main() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        right = await Channel.from_socket(b)
        a.sendall(data)
        a.close()
        try:
            while True:
                await right.receive()
        except (ProtocolError, anyio.EndOfStream):
            pass
        finally:
            await right.aclose()

    anyio.run(main)
