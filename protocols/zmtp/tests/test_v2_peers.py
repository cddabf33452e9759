"""ZMTP 2.0 peers have no PING and no ERROR: they must be kept, never churned.

Closing a 2.0 peer cannot tell it to stay away; it reconnects (libzmq some
ten times a second) and whatever was in flight is lost. So our heartbeat
leaves idle 2.0 (and 3.0) peers alone, on both the ROUTER and the DEALER
side, and a 2.0 peer whose identity is taken is kept open and ignored, as
libzmq 4.3.5 does, instead of being closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from zmtp_support import RawPeer, connect, handshake, ready, v3_greeting

from sota_dispatch import BufferedReader, DispatcherFactory, IncompleteReadError, testing
from sota_zmtp import Dealer, EchoRouter, Heartbeat, ZmtpEchoDispatcher, encode_message
from sota_zmtp.wire import encode_command

pytestmark = pytest.mark.anyio

INTERVAL = 0.05
#: What our ROUTER sends a 2.0 peer: signature, major 3, then (once it has
#: seen revision 1) its socket type and an empty identity frame.
OUR_V2_ANSWER = bytes.fromhex("ff00000000000000017f03") + b"\x06\x00\x00"


def v2_hello(identity: bytes, revision: int = 1) -> bytes:
    """A raw 2.0 DEALER's greeting and identity frame (``revision`` 3 is
    what libzmq sends before it sees the server is 2.0)."""
    head = b"\xff" + (len(identity) + 1).to_bytes(8, "big") + b"\x7f"
    return head + bytes((revision, 5, 0, len(identity))) + identity


async def open_v2_peer(address: str, identity: bytes, revision: int = 1) -> RawPeer:
    peer = await connect(address)
    await peer.send(v2_hello(identity, revision))
    assert await peer.receive_exactly(len(OUR_V2_ANSWER)) == OUR_V2_ANSWER
    return peer


async def open_v3_0_peer(address: str, identity: bytes) -> RawPeer:
    peer = await connect(address)
    await peer.send(v3_greeting(3, 0) + ready(identity))
    await peer.receive_exactly(64 + len(ready(b"", b"ROUTER")))
    return peer


async def echo(peer: RawPeer, body: bytes) -> None:
    await peer.send(encode_message([body]))
    assert await peer.receive_exactly(len(body) + 2) == encode_message([body])


async def paced_echoes(peer: RawPeer, rounds: int = 3) -> None:
    """Idle for 4 intervals (longer than the 3-interval default timeout),
    then one request, ``rounds`` times: 12 intervals on one connection."""
    for i in range(rounds):
        await anyio.sleep(4 * INTERVAL)  # the client's own pace: idle on purpose
        await echo(peer, b"request %d" % i)


HEARTBEAT_SERVERS: dict[str, Callable[[], tuple[DispatcherFactory, Mapping[str, str]]]] = {
    "Router(heartbeat=...)": lambda: (EchoRouter(heartbeat=Heartbeat(interval=INTERVAL)).factory, {}),
    "-o heartbeat_interval": lambda: (ZmtpEchoDispatcher, {"heartbeat_interval": str(INTERVAL)}),
}


async def open_libzmq_style_v2_peer(address: str, identity: bytes) -> RawPeer:
    return await open_v2_peer(address, identity, revision=3)


OLD_PEERS: dict[str, Callable[[str, bytes], Awaitable[RawPeer]]] = {
    "2.0": open_v2_peer,
    "2.0 libzmq-style": open_libzmq_style_v2_peer,
    "3.0": open_v3_0_peer,
}


@pytest.mark.parametrize("server_kind", sorted(HEARTBEAT_SERVERS))
@pytest.mark.parametrize("peer_kind", sorted(OLD_PEERS))
async def test_idle_peer_without_ping_stays_on_one_connection(server_kind: str, peer_kind: str) -> None:
    factory, options = HEARTBEAT_SERVERS[server_kind]()
    async with testing.serving(factory, options=options) as server:
        assert server.address is not None
        async with await OLD_PEERS[peer_kind](server.address, b"idle-" + peer_kind.encode()) as peer:
            await paced_echoes(peer)
        assert server.connections_total == 1


async def test_a_silent_3_1_peer_is_still_closed_with_the_default_timeout() -> None:
    async with testing.serving(ZmtpEchoDispatcher, options={"heartbeat_interval": str(INTERVAL)}) as server:
        assert server.address is not None
        async with await connect(server.address) as peer:
            await handshake(peer, b"silent-3.1")
            with anyio.fail_after(5):  # 3 intervals, and it never answers a PING
                await peer.closed_by_server()


# -- our DEALER against a raw ZMTP 2.0 ROUTER ----------------------------------

#: A 2.0 ROUTER's whole greeting: signature (empty identity), revision 1,
#: ROUTER, empty identity frame; what a raw 2.0 server sends at once.
V2_ROUTER_GREETING = bytes.fromhex("ff00000000000000017f") + b"\x01\x06\x00\x00"


class RawV2Router:
    """A ZMTP 2.0 ROUTER that echoes every message; records its connections
    and the identity each announced."""

    def __init__(self) -> None:
        self.connections = 0
        self.identities: list[bytes] = []

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        async with stream:
            reader = BufferedReader(stream)
            try:
                await stream.send(V2_ROUTER_GREETING)
                head = await reader.read_exactly(12)
                assert head[10:] == b"\x03\x05"  # libzmq-style: major 3, then DEALER
                flags, size = await reader.read_exactly(2)
                assert flags == 0
                self.identities.append(await reader.read_exactly(size))
                while True:
                    flags, size = await reader.read_exactly(2)
                    assert not flags & 0x02  # short frames only in these tests
                    await stream.send(bytes((flags, size)) + await reader.read_exactly(size))
            except (anyio.EndOfStream, IncompleteReadError, anyio.BrokenResourceError, OSError):
                pass


@asynccontextmanager
async def raw_v2_router() -> AsyncIterator[tuple[RawV2Router, int]]:
    router = RawV2Router()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, router.handle)
        yield router, listener.extra(SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def test_dealer_with_heartbeat_keeps_an_idle_v2_router() -> None:
    async with raw_v2_router() as (server, port):
        dealer = Dealer(f"127.0.0.1:{port}", heartbeat=Heartbeat(interval=INTERVAL), reconnect_interval=0.01)
        async with dealer:
            for i in range(3):
                await anyio.sleep(4 * INTERVAL)  # our own pace: idle for longer than the timeout
                await dealer.send([b"request %d" % i])
                with anyio.fail_after(5):
                    assert await dealer.receive() == [b"request %d" % i]
            connection = await dealer.wait_connected()
            assert connection.engine.version == (2, 0)
            assert (dealer.attempts, dealer.connects, server.connections) == (1, 1, 1)
        assert server.identities == [b""]


async def test_dealer_with_heartbeat_still_drops_a_silent_3_1_router() -> None:
    reconnected = anyio.Event()
    connections = 0

    async def silent_router(stream: SocketStream) -> None:
        # Handshakes, then never answers a PING: the dealer must give up on it.
        nonlocal connections
        connections += 1
        if connections == 2:
            reconnected.set()
        async with stream:
            await stream.send(v3_greeting() + ready(b"", b"ROUTER"))
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent_router)
        port = listener.extra(SocketAttribute.local_port)
        async with Dealer(f"127.0.0.1:{port}", heartbeat=Heartbeat(interval=INTERVAL), reconnect_interval=0.01):
            with anyio.fail_after(10):
                await reconnected.wait()
        tg.cancel_scope.cancel()


# -- a 2.0 peer with an identity already connected --------------------------------


class Recording(EchoRouter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[bytes]] = []

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        self.seen.append([identity, *frames])
        await super().on_message(identity, frames)


async def reconnecting_v2_duplicate(address: str, identity: bytes, window: float) -> tuple[int, bytes]:
    """A 2.0 client that reconnects 0.1 s after every close, as libzmq does,
    for ``window`` seconds; returns its connection count and all it received."""
    connections = 0
    received = b""
    deadline = anyio.current_time() + window
    while anyio.current_time() < deadline and connections < 50:
        connections += 1
        async with await connect(address) as peer:
            with anyio.move_on_at(deadline):
                try:
                    await peer.send(v2_hello(identity) + encode_message([b"from the duplicate"]))
                    while True:
                        received += await peer.reader.read_some()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass
        await anyio.sleep(0.1)  # libzmq's reconnect interval
    return connections, received


@pytest.mark.parametrize("first_version", ["2.0", "3.1"])
async def test_v2_duplicate_identity_is_kept_and_ignored_not_churned(first_version: str) -> None:
    router = Recording()
    async with testing.serving(router.factory) as server:
        assert server.address is not None
        if first_version == "2.0":
            first = await open_v2_peer(server.address, b"twin")
        else:
            first = await connect(server.address)
            await handshake(first, b"twin")
        async with first:
            await echo(first, b"first")
            connections, received = await reconnecting_v2_duplicate(server.address, b"twin", window=1.0)
            assert connections == 1  # kept open: no reconnect storm
            assert received == OUR_V2_ANSWER  # and nothing after the greeting
            # The duplicate is gone now; the identity still routes to the first.
            await echo(first, b"first again")
        assert router.seen == [[b"twin", b"first"], [b"twin", b"first again"]]
        assert router.duplicates_ignored == 1
        assert server.connections_total == 2


async def test_v3_duplicate_identity_still_gets_an_error() -> None:
    router = Recording()
    async with testing.serving(router.factory) as server:
        assert server.address is not None
        async with await open_v2_peer(server.address, b"twin") as first, await connect(server.address) as second:
            await second.send(v3_greeting() + ready(b"twin"))
            sent = await second.closed_by_server()
            reason = b"identity b'twin' is already connected"
            assert sent.endswith(encode_command(b"ERROR", bytes((len(reason),)) + reason))
            await echo(first, b"first")
        assert router.duplicates_ignored == 0


async def test_handover_still_applies_to_v2_peers() -> None:
    router = EchoRouter(handover=True)
    async with testing.serving(router.factory) as server:
        assert server.address is not None
        first = await open_v2_peer(server.address, b"moving")
        async with first, await open_v2_peer(server.address, b"moving") as second:
            await first.closed_by_server()
            await echo(second, b"mine now")
