"""Our ROUTER against real libzmq 4.3.5 peers (pyzmq) and raw ZMTP peers.

pyzmq is blocking, so each libzmq peer runs in a worker thread; the server
runs in the test's event loop, on asyncio and on trio.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest
import zmq
from zmtp_support import connect, handshake, in_thread, ready, serving, v3_greeting, zsocket

from sota_zmtp import EchoRouter, Limits, Router, encode_message
from sota_zmtp.wire import encode_command

pytestmark = pytest.mark.anyio

MESSAGE = [b"", b"a" * 255, b"b" * 256, b"c" * 70_000, b"", b"d" * (4 << 20)]


@pytest.mark.parametrize("routing_id", [b"client-1", None])
async def test_dealer_gets_byte_exact_echo(routing_id: bytes | None) -> None:
    router = EchoRouter()

    def client(address: str) -> list[bytes]:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            options = {} if routing_id is None else {"ROUTING_ID": routing_id}
            dealer = zsocket(ctx, zmq.DEALER, address, **options)
            dealer.send_multipart(MESSAGE)
            return dealer.recv_multipart()
        finally:
            ctx.destroy(0)

    async with serving(router) as (_, address):
        assert await in_thread(lambda: client(address)) == MESSAGE
    assert router.dropped == 0


async def test_req_gets_its_reply_through_the_envelope() -> None:
    seen: list[list[bytes]] = []

    class Recording(EchoRouter):
        async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
            seen.append(frames)
            await super().on_message(identity, frames)

    def client(address: str) -> list[list[bytes]]:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            req = zsocket(ctx, zmq.REQ, address)
            replies = []
            for body in ([b"hello", b"world"], MESSAGE):
                req.send_multipart(body)
                replies.append(req.recv_multipart())
            return replies
        finally:
            ctx.destroy(0)

    async with serving(Recording()) as (_, address):
        assert await in_thread(lambda: client(address)) == [[b"hello", b"world"], MESSAGE]
    assert seen[0] == [b"", b"hello", b"world"]  # REQ's empty delimiter reaches the app


async def test_100_concurrent_dealers_each_get_only_their_own_replies() -> None:
    identities: set[bytes] = set()

    class Recording(EchoRouter):
        async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
            identities.add(identity)
            await super().on_message(identity, frames)

    router = Recording()

    def clients(address: str) -> dict[bytes, list[list[bytes]]]:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            socks = {
                b"peer-%03d" % i: zsocket(ctx, zmq.DEALER, address, ROUTING_ID=b"peer-%03d" % i) for i in range(100)
            }
            for ident, sock in socks.items():
                for n in range(3):
                    sock.send_multipart([ident, b"%d" % n])
            got = {ident: [sock.recv_multipart() for _ in range(3)] for ident, sock in socks.items()}
            # Nothing else is waiting on any socket once every echo arrived.
            poller = zmq.Poller()
            for sock in socks.values():
                poller.register(sock, zmq.POLLIN)
            assert poller.poll(100) == []
            return got
        finally:
            ctx.destroy(0)

    async with serving(router) as (server, address):
        got = await in_thread(lambda: clients(address))
    assert identities == {b"peer-%03d" % i for i in range(100)}
    for ident, replies in got.items():
        assert replies == [[ident, b"%d" % n] for n in range(3)]
    assert server.connections_total == 100


# -- raw peers -----------------------------------------------------------------


V2_HELLO = bytes.fromhex("ff00000000000000067f0105") + b"\x00\x05alice"
LIBZMQ_STYLE_V2 = bytes.fromhex("ff00000000000000067f0305") + b"\x00\x05alice"


@pytest.mark.parametrize(
    ("hello", "version", "answer_size"),
    [
        (V2_HELLO, (2, 0), 3),  # after our 11 bytes: socket type, empty identity frame
        (LIBZMQ_STYLE_V2, (2, 0), 3),
        (v3_greeting(3, 0) + ready(b"alice"), (3, 0), 64 - 11),
        (v3_greeting(4, 0) + ready(b"alice"), (3, 1), 64 - 11),
    ],
)
async def test_raw_peers_negotiate_the_right_version(hello: bytes, version: tuple[int, int], answer_size: int) -> None:
    router = EchoRouter()
    async with serving(router) as (_, address), await connect(address) as stream:
        await stream.send(hello)
        head = await stream.receive_exactly(11)
        assert head == bytes.fromhex("ff00000000000000017f03")
        await stream.receive_exactly(answer_size)
        if version != (2, 0):
            await stream.receive_exactly(len(ready(b"", b"ROUTER")))
        await stream.send(encode_message([b"hi", b"x" * 300]))
        assert await stream.receive_exactly(len(encode_message([b"hi", b"x" * 300]))) == encode_message(
            [b"hi", b"x" * 300]
        )
        assert router.peers[b"alice"].engine.version == version


async def test_ping_context_is_echoed_at_most_16_bytes() -> None:
    async with serving(EchoRouter()) as (_, address), await connect(address) as stream:
        await handshake(stream, b"pinger")
        await stream.send(encode_command(b"PING", b"\x00\x14" + b"0123456789abcdefXYZW"))
        pong = encode_command(b"PONG", b"0123456789abcdef")
        assert await stream.receive_exactly(len(pong)) == pong
        await stream.send(bytes.fromhex("04050450494e47"))  # a PING without TTL: no over-read
        assert await stream.receive_exactly(7) == encode_command(b"PONG")


async def test_pyzmq_heartbeats_are_answered_and_the_connection_stays() -> None:
    router = EchoRouter()

    def pings() -> int:
        peer = router.peers.get(b"hb")
        return 0 if peer is None else peer.engine.pings_answered

    def client(address: str) -> int:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            dealer = zsocket(
                ctx, zmq.DEALER, address, ROUTING_ID=b"hb", HEARTBEAT_IVL=20, HEARTBEAT_TIMEOUT=300, HEARTBEAT_TTL=1000
            )
            rounds = 0
            # Real traffic, not sleeping, until 5 PINGs were answered.
            while pings() < 5 and rounds < 1_000_000:
                dealer.send(b"%d" % rounds)
                assert dealer.recv() == b"%d" % rounds
                rounds += 1
            return pings()
        finally:
            ctx.destroy(0)

    async with serving(router) as (server, address):
        assert await in_thread(lambda: client(address)) >= 5
        assert server.connections_total == 1  # libzmq never dropped it for a missing PONG


def fresh_dealer_round_trip(address: str) -> list[bytes]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer = zsocket(ctx, zmq.DEALER, address)
        dealer.send_multipart([b"still", b"serving"])
        return dealer.recv_multipart()
    finally:
        ctx.destroy(0)


BAD_INPUT = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "zmtp-1.0-frames": b"\x01\x00\x06\x00hello",
    "wrong-signature": bytes.fromhex("ff00000000000000017e03") + bytes(53),
    "unknown-mechanism": v3_greeting(mechanism=b"CURVE"),
    "lowercase-null": v3_greeting(mechanism=b"null"),
    "message-before-ready": v3_greeting() + encode_message([b"early"]),
    "malformed-ready": v3_greeting() + bytes.fromhex("040d055245414459") + b"\x0bSocket-T",
    "incompatible-socket-type": v3_greeting() + ready(b"", b"PUB"),
    "long-size-2^64-1": v3_greeting() + ready(b"") + b"\x02" + b"\xff" * 8,
    "long-size-2^63-1": v3_greeting() + ready(b"") + b"\x02\x7f" + b"\xff" * 7,
    "frame-over-limit": v3_greeting() + ready(b"") + b"\x02" + (1024 * 1024 + 1).to_bytes(8, "big"),
    "multipart-bomb": v3_greeting() + ready(b"") + b"\x01\x00" * 100_000,
    "truncated-greeting": v3_greeting()[:30],
    "truncated-frame": v3_greeting() + ready(b"") + b"\x02" + (5000).to_bytes(8, "big") + b"x" * 100,
}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
async def test_bad_input_closes_only_that_connection(name: str) -> None:
    # The ZMTP 1.0 peer waits for the rest of a greeting: it is closed at the handshake timeout.
    router = EchoRouter(limits=Limits(max_frame_size=1024 * 1024, max_parts=1000, handshake_timeout=1))
    async with serving(router) as (_server, address), await connect(address) as healthy:
        await handshake(healthy, b"healthy")
        async with await connect(address) as bad:
            try:
                await bad.send(BAD_INPUT[name])
                if name.startswith("truncated"):
                    await bad.send_eof()
            except (anyio.BrokenResourceError, OSError):
                pass
            sent = await bad.closed_by_server()
            assert sent.startswith(bytes.fromhex("ff00000000000000017f03"))
        assert not any(peer for ident, peer in router.peers.items() if ident != b"healthy")
        # The healthy peer and a fresh libzmq peer are still served.
        await healthy.send(encode_message([b"ok"]))
        assert await healthy.receive_exactly(4) == encode_message([b"ok"])
        assert await in_thread(lambda: fresh_dealer_round_trip(address)) == [b"still", b"serving"]


async def test_incompatible_peer_gets_an_error_command_before_the_close() -> None:
    async with serving(EchoRouter()) as (_, address), await connect(address) as bad:
        await bad.send(v3_greeting() + ready(b"", b"PUB"))
        assert (await bad.closed_by_server()).endswith(encode_command(b"ERROR", b"\x13invalid socket type"))


async def test_slowloris_greeting_is_closed_after_the_handshake_timeout() -> None:
    router = EchoRouter(limits=Limits(handshake_timeout=0.5))
    async with serving(router) as (_, address), await connect(address) as slow:
        await slow.send(b"\xff")  # and nothing more
        with anyio.fail_after(5):
            await slow.closed_by_server()
        assert await in_thread(lambda: fresh_dealer_round_trip(address)) == [b"still", b"serving"]


async def test_duplicate_identity_is_refused_unless_handover() -> None:
    async with serving(EchoRouter()) as (_, address), await connect(address) as first:
        await handshake(first, b"same")
        async with await connect(address) as second:
            await second.send(v3_greeting() + ready(b"same"))
            assert (await second.closed_by_server()).endswith(b"is already connected")
        await first.send(encode_message([b"first still"]))
        assert await first.receive_exactly(13) == encode_message([b"first still"])

    router = EchoRouter(handover=True)
    async with serving(router) as (_, address), await connect(address) as first:
        await handshake(first, b"same")
        async with await connect(address) as second:
            await handshake(second, b"same")
            await first.closed_by_server()  # the old connection is closed...
            await second.send(encode_message([b"mine"]))  # ...and the new one owns the identity
            assert await second.receive_exactly(6) == encode_message([b"mine"])


class ToSlowPeer(Router):
    """Routes every message to the peer 'slow', acknowledging to the sender."""

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        self.send([b"slow", *frames])
        self.send([identity, b"ack"])


async def test_peer_that_does_not_read_is_capped_and_blocks_nobody() -> None:
    router = ToSlowPeer(send_hwm=64 * 1024)
    async with serving(router) as (_, address), await connect(address) as slow, await connect(address) as fast:
        await handshake(slow, b"slow")  # and never reads again
        await handshake(fast, b"fast")
        payload = encode_message([b"p" * 10_000])
        acks = 0
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def read_acks() -> None:
                    nonlocal acks
                    data = b""
                    while acks < 2000:
                        data += await fast.reader.read_some()
                        acks = data.count(b"\x00\x03ack")

                tg.start_soon(read_acks)
                for _ in range(2000):
                    await fast.send(payload)
        assert acks == 2000
        assert router.dropped > 0
        assert router.peers[b"slow"].writer.pending <= 64 * 1024 + len(payload)


def test_unknown_identity_is_dropped_or_raises_in_mandatory_mode() -> None:
    from sota_zmtp import UnroutableError

    router = Router()
    assert router.send([b"nobody", b"x"]) is False
    assert router.dropped == 1
    with pytest.raises(UnroutableError):
        Router(mandatory=True).send([b"nobody", b"x"])
    with pytest.raises(ValueError, match="identity, frame"):
        router.send([b"only-identity"])


async def test_libzmq_duplicate_identity_is_refused_without_a_reconnect_storm() -> None:
    def duplicate(address: str) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            first = zsocket(ctx, zmq.DEALER, address, ROUTING_ID=b"twin")
            first.send(b"one")
            assert first.recv() == b"one"
            second = zsocket(ctx, zmq.DEALER, address, ROUTING_ID=b"twin", RCVTIMEO=1500)
            second.send(b"two")
            # Refused during the handshake: libzmq gives up instead of
            # reconnecting; 1.5 s would show a storm (it was 13 in 2 s).
            with pytest.raises(zmq.Again):
                second.recv()
            first.send(b"still mine")
            assert first.recv() == b"still mine"
        finally:
            ctx.destroy(0)

    async with serving(EchoRouter()) as (server, address):
        await in_thread(lambda: duplicate(address))
    assert server.connections_total == 2


async def test_peer_chosen_identity_with_a_leading_zero_is_refused() -> None:
    async with serving(EchoRouter(handover=True)) as (_, address), await connect(address) as peer:
        await peer.send(v3_greeting() + ready(b"\x00fake"))
        assert (await peer.closed_by_server()).endswith(b"reserved for generated ids")
