"""CURVE (RFC 26) against libzmq through pyzmq, both ways, and through the proxy.

libzmq's CURVE client meets our ROUTER (its server key, our authenticator
for client keys); our DEALER meets libzmq's CURVE ROUTER with its ZAP
authenticator (``zmq.auth``). Refusals: a client with the wrong server
key, a client key our authenticator refuses, a NULL or ZMTP 2.0 peer at a
CURVE endpoint (no downgrade). Sizes 0 B, 70 KB and 4 MiB byte-exact, 100
concurrent clients, and CURVE on both sides of the proxy's ZMTP listener.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
import zmq
import zmq.auth.thread
from zmq.utils.monitor import recv_monitor_message
from zmtp_support import RawPeer, serving

from sota_dispatch import ProtocolError
from sota_dispatch.config import parse_config
from sota_dispatch.testing import connect, running_proxy
from sota_zmtp import Dealer, EchoRouter, PeerError
from sota_zmtp.curve import CurveClientKeys, CurveServerKeys, curve_key, curve_keypair, z85_decode, z85_encode

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")]

SERVER_PUBLIC, SERVER_SECRET = curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = curve_keypair()
STRANGER_PUBLIC, STRANGER_SECRET = curve_keypair()

SIZES = [b"", b"m" * 70_000, bytes(range(256)) * (4 * 1024 * 1024 // 256)]


def libzmq_client(
    address: str,
    messages: list[list[bytes]],
    *,
    server_key: str = SERVER_PUBLIC,
    keys: tuple[str, str] = (CLIENT_PUBLIC, CLIENT_SECRET),
    timeout_ms: int = 10_000,
) -> tuple[list[list[bytes]] | None, list[int]]:
    """A pyzmq CURVE DEALER: the echoes of ``messages`` (None if none came
    in time) and the monitor's handshake events."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, timeout_ms)
        dealer.curve_serverkey = server_key.encode()
        dealer.curve_publickey, dealer.curve_secretkey = keys[0].encode(), keys[1].encode()
        monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        monitor.setsockopt(zmq.RCVTIMEO, 200)
        dealer.connect(f"tcp://{address}")
        replies: list[list[bytes]] | None = []
        try:
            for message in messages:  # one at a time: a 4 MiB answer fills the ROUTER's send_hwm
                dealer.send_multipart(message)
                assert replies is not None
                replies.append(dealer.recv_multipart())
        except zmq.Again:
            replies = None
        events = []
        while True:
            try:
                events.append(recv_monitor_message(monitor)["event"])
            except zmq.Again:
                break
        return replies, events
    finally:
        ctx.destroy(0)


def test_z85_and_keys_agree_with_libzmq() -> None:
    public, secret = zmq.curve_keypair()
    assert z85_encode(curve_key(public.decode())) == public.decode()
    assert zmq.curve_public(secret) == z85_encode(CurveServerKeys(secret.decode()).public_key).encode()
    assert z85_decode("HelloWorld") == bytes.fromhex("864fd26fb559f75b")  # RFC 32's test vector
    with pytest.raises(ValueError, match="a CURVE key is 40 Z85 characters"):
        curve_key("too short")


async def test_a_libzmq_curve_client_against_our_router() -> None:
    seen: list[bytes] = []

    def allow(key: bytes) -> bool:
        seen.append(key)
        return key == curve_key(CLIENT_PUBLIC)

    router = Recording(curve=CurveServerKeys(SERVER_SECRET, allow))
    async with serving(router) as (_, address):
        messages = [[size] for size in SIZES] + [[b"a", b"", b"c" * 300]]
        replies, events = await anyio.to_thread.run_sync(lambda: libzmq_client(address, messages))
        assert replies == messages  # byte-exact, every size, multipart
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in events
    assert seen == [curve_key(CLIENT_PUBLIC)]
    assert router.users == {(b"CURVE", CLIENT_PUBLIC.encode())}


class Recording(EchoRouter):
    """An echo that notes each sender's mechanism and authenticated key."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.users: set[tuple[bytes, bytes | None]] = set()

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        engine = self.peers[identity].engine
        self.users.add((engine.mechanism, engine.user_id))
        await super().on_message(identity, frames)


async def test_an_unknown_client_key_is_refused_as_zap_would() -> None:
    router = EchoRouter(curve=CurveServerKeys(SERVER_SECRET, lambda key: key == curve_key(CLIENT_PUBLIC)))
    async with serving(router) as (server, address):
        replies, events = await anyio.to_thread.run_sync(
            lambda: libzmq_client(address, [[b"x"]], keys=(STRANGER_PUBLIC, STRANGER_SECRET), timeout_ms=1500)
        )
        assert replies is None
        assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in events  # our ERROR "400", as a ZAP refusal
        # And the server goes on serving the client it knows.
        replies, _ = await anyio.to_thread.run_sync(lambda: libzmq_client(address, [[b"known"]]))
        assert replies == [[b"known"]]
    assert server.connections_total == 2  # an ERROR is final: libzmq did not reconnect


async def test_a_client_with_the_wrong_server_key_gets_nothing() -> None:
    router = EchoRouter(curve=CurveServerKeys(SERVER_SECRET))
    async with serving(router) as (_, address):
        replies, events = await anyio.to_thread.run_sync(
            lambda: libzmq_client(address, [[b"x"]], server_key=STRANGER_PUBLIC, timeout_ms=1000)
        )
        assert (replies, zmq.EVENT_HANDSHAKE_SUCCEEDED in events) == (None, False)
        assert not router.peers
        replies, _ = await anyio.to_thread.run_sync(lambda: libzmq_client(address, [[b"still here"]]))
        assert replies == [[b"still here"]]


async def test_100_concurrent_libzmq_curve_clients() -> None:
    router = EchoRouter(curve=CurveServerKeys(SERVER_SECRET))

    def many(address: str) -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            calls = [pool.submit(libzmq_client, address, [[b"client-%d" % i, b"x" * i]]) for i in range(100)]
            return [call.result()[0] for call in calls]

    async with serving(router) as (server, address):
        replies = await anyio.to_thread.run_sync(lambda: many(address))
    assert replies == [[[b"client-%d" % i, b"x" * i]] for i in range(100)]
    assert server.connections_total == 100


class OnlyKey:
    """pyzmq's ZAP credentials provider: one client key is welcome."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.key


def libzmq_curve_router(ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], int]:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, 100)  # the echo loop checks its stop flag this often
    router.curve_server = True
    router.curve_secretkey = SERVER_SECRET.encode()
    router.curve_publickey = SERVER_PUBLIC.encode()
    return router, router.bind_to_random_port("tcp://127.0.0.1")


async def test_our_dealer_against_a_libzmq_curve_router_with_zap() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = zmq.auth.thread.ThreadAuthenticator(ctx)
    auth.start()
    stop = threading.Event()
    try:
        auth.configure_curve_callback(domain="*", credentials_provider=OnlyKey(CLIENT_PUBLIC))
        router, port = libzmq_curve_router(ctx)

        def echo() -> list[str]:
            users = []
            while not stop.is_set():
                try:
                    frames = router.recv_multipart(copy=False)
                except zmq.Again:
                    continue
                users.append(str(frames[1].get("User-Id")))
                router.send_multipart([frame.bytes for frame in frames])
            return users

        async with anyio.create_task_group() as tg:
            users: list[str] = []

            async def serve() -> None:
                users.extend(await anyio.to_thread.run_sync(echo))

            tg.start_soon(serve)
            keys = CurveClientKeys(SERVER_PUBLIC, CLIENT_SECRET)
            async with Dealer(f"127.0.0.1:{port}", identity=b"ours", curve=keys) as good:
                for size in SIZES:
                    await good.send([b"size", size])
                    with anyio.fail_after(20):
                        assert await good.receive() == [b"size", size]
            stranger = CurveClientKeys(SERVER_PUBLIC, STRANGER_SECRET)
            async with Dealer(f"127.0.0.1:{port}", curve=stranger, reconnect_interval=0.01) as refused:
                with anyio.fail_after(10), pytest.raises(PeerError):
                    await refused.send([b"let me in"])  # ZAP said no: libzmq sends ERROR 400
                assert refused.attempts == 1
            stop.set()
        assert set(users) == {CLIENT_PUBLIC}  # libzmq's ZAP saw our long-term key
    finally:
        stop.set()
        auth.stop()
        ctx.destroy(0)


async def test_our_dealer_refuses_a_server_with_another_key() -> None:
    router = EchoRouter(curve=CurveServerKeys(STRANGER_SECRET))  # not the key the dealer expects
    async with serving(router) as (server, address):
        dealer = Dealer(address, curve=CurveClientKeys(SERVER_PUBLIC), reconnect_interval=0.05)
        async with dealer:
            with anyio.move_on_after(1):
                await dealer.send([b"never"])  # waits for a connection that never shakes hands
            assert dealer.connects == 0
            assert dealer.attempts >= 2  # it kept trying (a wrong key is not an ERROR from us)
        assert not router.peers
        assert server.connections_total >= 2


@pytest.mark.parametrize("peer", ["null", "v2"])
async def test_a_curve_endpoint_never_downgrades(peer: str) -> None:
    router = EchoRouter(curve=CurveServerKeys(SERVER_SECRET))
    async with serving(router) as (_, address):
        async with RawPeer(await connect(address)) as raw:
            if peer == "null":
                greeting = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\x00") + bytes(32)
            else:
                greeting = b"\xff" + bytes(7) + b"\x01\x7f\x01\x05\x00\x00"  # 2.0 DEALER, empty identity
            await raw.send(greeting)
            sent = await raw.closed_by_server()
        assert not router.peers
        assert b"READY" not in sent
        if peer == "null":
            assert sent[10:17] == b"\x03\x01CURVE"
            assert b"\x05ERROR" in sent  # "unsupported mechanism", then the close


async def test_tampered_and_replayed_frames_close_the_connection() -> None:
    from sota_zmtp.engine import ZmtpEngine
    from sota_zmtp.wire import SocketType

    server = ZmtpEngine(SocketType.ROUTER, curve_server=CurveServerKeys(SERVER_SECRET))
    client = ZmtpEngine(SocketType.DEALER, curve_client=CurveClientKeys(SERVER_PUBLIC))
    for _ in range(4):
        server.feed(client.data_to_send())
        client.feed(server.data_to_send())
    assert server.ready
    assert client.ready
    sealed = client.encode([b"one"])
    assert server.feed(sealed) == [[b"one"]]
    with pytest.raises(ProtocolError, match="nonce"):
        server.feed(sealed)  # the same frame again
    server2 = ZmtpEngine(SocketType.ROUTER, curve_server=CurveServerKeys(SERVER_SECRET))
    client2 = ZmtpEngine(SocketType.DEALER, curve_client=CurveClientKeys(SERVER_PUBLIC))
    for _ in range(4):
        server2.feed(client2.data_to_send())
        client2.feed(server2.data_to_send())
    tampered = bytearray(client2.encode([b"two"]))
    tampered[-1] ^= 1
    with pytest.raises(ProtocolError, match="does not open"):
        server2.feed(bytes(tampered))


async def test_curve_on_both_sides_of_the_proxy() -> None:
    backend = Recording(curve=CurveServerKeys(STRANGER_SECRET))  # the upstream's own key pair
    async with serving(backend) as (_, upstream):
        config = parse_config(
            {
                "listeners": [
                    {
                        "name": "broker",
                        "address": "127.0.0.1:0",
                        "protocol": "zmtp",
                        "options": {"curve_secret_key": SERVER_SECRET, "curve_clients": CLIENT_PUBLIC},
                        "routes": [{"cluster": "echo"}],
                    }
                ],
                "clusters": [
                    {
                        "name": "echo",
                        "endpoints": [upstream],
                        "options": {"curve_server_key": STRANGER_PUBLIC, "curve_secret_key": CLIENT_SECRET},
                    }
                ],
            }
        )
        async with running_proxy(config) as proxy:
            address = proxy.addresses["broker"]
            messages = [[size] for size in SIZES]
            replies, _ = await anyio.to_thread.run_sync(lambda: libzmq_client(address, messages))
            assert replies == messages
            refused, events = await anyio.to_thread.run_sync(
                lambda: libzmq_client(address, [[b"x"]], keys=(STRANGER_PUBLIC, STRANGER_SECRET), timeout_ms=1500)
            )
            assert refused is None
            assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in events
    assert backend.users == {(b"CURVE", CLIENT_PUBLIC.encode())}  # the proxy logged in with the cluster's key


def test_curve_options_are_checked() -> None:
    from sota_zmtp import ZmtpDispatcher

    errors = ZmtpDispatcher.option_errors({"curve_secret_key": "nope"}, "listener")
    assert "curve_secret_key" in errors
    errors = ZmtpDispatcher.option_errors({"curve_clients": CLIENT_PUBLIC}, "listener")
    assert errors == {"curve_clients": "needs curve_secret_key (the server's own key)"}
    errors = ZmtpDispatcher.option_errors(
        {"curve_secret_key": SERVER_SECRET, "plain_user": "a", "plain_password": "b"}, "listener"
    )
    assert errors == {"plain_user": "a connection uses PLAIN or CURVE, not both"}
    assert ZmtpDispatcher.option_errors({"curve_server_key": SERVER_PUBLIC}, "cluster") == {}
