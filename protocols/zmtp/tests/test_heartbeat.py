"""Our heartbeats: PINGs to 3.1 peers, silent peers closed, the peer's TTL honoured."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest
import zmq
from zmtp_support import connect, handshake, ready, serving, v3_greeting

from sota_zmtp import Dealer, EchoRouter, Heartbeat
from sota_zmtp.wire import encode_command, encode_message

pytestmark = pytest.mark.anyio


async def test_router_pings_and_closes_a_silent_peer() -> None:
    router = EchoRouter(heartbeat=Heartbeat(interval=0.05, timeout=0.3, ttl=1.0))
    async with serving(router) as (_, address), await connect(address) as peer:
        await handshake(peer, b"quiet")
        ping = encode_command(b"PING", (10).to_bytes(2, "big"))  # TTL 1.0 s = 10 deciseconds
        assert await peer.receive_exactly(len(ping)) == ping
        with anyio.fail_after(5):  # then we say nothing, and are closed
            await peer.closed_by_server()


async def test_a_peer_that_answers_pongs_stays() -> None:
    router = EchoRouter(heartbeat=Heartbeat(interval=0.02, timeout=0.2))

    def client(address: str) -> int:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.ROUTING_ID, b"lively")
            dealer.setsockopt(zmq.RCVTIMEO, 10_000)
            dealer.connect(f"tcp://{address}")
            dealer.send(b"hello")
            assert dealer.recv() == b"hello"
            # libzmq answers our PINGs by itself while this thread only waits
            # for our PONG count to grow; no messages in between.
            rounds = 0
            while len(peer_pongs()) < 5 and rounds < 1_000:
                dealer.poll(50)
                rounds += 1
            dealer.send(b"still here")
            assert dealer.recv() == b"still here"
            return len(peer_pongs())
        finally:
            ctx.destroy(0)

    def peer_pongs() -> list[bytes]:
        peer = router.peers.get(b"lively")
        return [] if peer is None else peer.engine.pongs

    async with serving(router) as (server, address):
        assert await anyio.to_thread.run_sync(client, address) >= 5
        assert server.connections_total == 1


async def test_the_peers_ping_ttl_is_honoured() -> None:
    router = EchoRouter(heartbeat=Heartbeat(interval=0.05, timeout=30))
    async with serving(router) as (_, address), await connect(address) as peer:
        await handshake(peer, b"ttl")
        await peer.send(encode_command(b"PING", (3).to_bytes(2, "big")))  # "wait 0.3 s for me"
        with anyio.fail_after(5):  # far below our own 30 s timeout
            await peer.closed_by_server()


async def test_no_pings_to_a_3_0_peer() -> None:
    router = EchoRouter(heartbeat=Heartbeat(interval=0.01, timeout=0.05))
    async with serving(router) as (_, address), await connect(address) as peer:
        await peer.send(v3_greeting(3, 0) + ready(b"old"))
        await peer.receive_exactly(64 + len(ready(b"", b"ROUTER")))
        # A 3.0 peer has no PING: it is neither pinged nor timed out.
        await peer.send(encode_message([b"x"]))
        assert await peer.receive_exactly(3) == encode_message([b"x"])
        assert router.peers[b"old"].engine.version == (3, 0)


async def test_dealer_heartbeats_against_libzmq_router() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        zrouter = ctx.socket(zmq.ROUTER)
        zrouter.setsockopt(zmq.LINGER, 0)
        zrouter.setsockopt(zmq.RCVTIMEO, 10_000)
        port = zrouter.bind_to_random_port("tcp://127.0.0.1")
        dealer = Dealer(f"127.0.0.1:{port}", heartbeat=Heartbeat(interval=0.02, timeout=0.5))
        async with dealer:
            await dealer.send([b"ping me"])
            frames = await anyio.to_thread.run_sync(zrouter.recv_multipart)
            assert frames[1:] == [b"ping me"]
            connection = await dealer.wait_connected()
            # Real traffic until libzmq has answered three of our PINGs.
            for i in range(100_000):
                if len(connection.engine.pongs) >= 3:
                    break
                await dealer.send([b"%d" % i])
                assert (await anyio.to_thread.run_sync(zrouter.recv_multipart))[1:] == [b"%d" % i]
            assert len(connection.engine.pongs) >= 3
            assert dealer.connects == 1
    finally:
        ctx.destroy(0)


def test_heartbeat_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Heartbeat(interval=0)


async def test_the_peers_ttl_is_honoured_without_a_heartbeat_of_ours() -> None:
    async with serving(EchoRouter()) as (_, address), await connect(address) as peer:
        await handshake(peer, b"ttl-only")
        await peer.send(encode_command(b"PING", (3).to_bytes(2, "big")))
        with anyio.fail_after(5):
            await peer.closed_by_server()


async def test_a_slow_handler_does_not_make_the_peer_look_silent() -> None:
    class Slow(EchoRouter):
        async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
            await anyio.sleep(0.6)  # slow work in the handler, longer than the timeout
            await super().on_message(identity, frames)

    router = Slow(heartbeat=Heartbeat(interval=0.05, timeout=0.2))
    async with serving(router) as (_, address), await connect(address) as peer:
        await handshake(peer, b"patient")
        await peer.send(encode_message([b"work"]))
        reply = encode_message([b"work"])
        data = b""
        with anyio.fail_after(5):
            while not data.endswith(reply):  # PINGs may come first
                data += await peer.reader.read_some()
