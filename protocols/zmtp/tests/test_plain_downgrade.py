"""PLAIN cannot be skipped by speaking an older ZMTP (a security fix).

ZMTP 1.0 and 2.0 have no security mechanism. A peer greeting with them
used to be served by a PLAIN ROUTER without credentials, and our PLAIN
DEALER used to talk to a 2.0 server without logging in. Every PLAIN path is
checked with raw 1.0/2.0 peers on real sockets: the local service, a
:class:`~sota_zmtp.Router`, the proxy's ZMTP listener, and our DEALER as
the client. No message may be delivered, and nobody reconnects in a loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from sota_dispatch.config import parse_config
from sota_dispatch.testing import running_proxy, serving
from sota_zmtp import Dealer, DowngradeRefused, Router, SocketType, ZmtpEchoDispatcher, ZmtpEngine, encode_message

pytestmark = pytest.mark.anyio

SIGNATURE = bytes.fromhex("ff00000000000000017f")
#: A raw ZMTP 2.0 DEALER: revision 1, socket type, empty identity, then a message.
V2_PEER = SIGNATURE + b"\x01\x05" + b"\x00\x00" + encode_message([b"sneak", b"in"])
#: libzmq facing what it takes for a 2.0 server: major 3, then socket type and identity.
V2_AS_LIBZMQ = SIGNATURE + b"\x03\x05" + b"\x00\x00" + encode_message([b"sneak", b"in"])
#: A ZMTP 1.0 peer: revision 0 (libzmq reads this as 1.0).
V1_PEER = SIGNATURE + b"\x00" + b"\x01\x00" + b"\x06\x00sneak"
#: ZMTP 1.0 without a signature at all: length-prefixed frames.
V1_BARE = b"\x01\x00\x06\x00sneak\x06\x00sneak"
OLD_PEERS = pytest.mark.parametrize(
    "greeting", [V2_PEER, V2_AS_LIBZMQ, V1_PEER, V1_BARE], ids=["2.0", "2.0-libzmq", "1.0", "1.0-bare"]
)

PLAIN = {"plain_user": "admin", "plain_password": "secret"}


def check(user: bytes, password: bytes) -> bool:
    return (user, password) == (b"admin", b"secret")


async def raw_session(address: str, greeting: bytes) -> bytes:
    """Send ``greeting`` (and the message in it), return all the server says
    until it closes the connection."""
    host, _, port = address.rpartition(":")
    received = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(greeting)
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                while True:
                    received += await stream.receive()
    return received


class Recording(Router):
    def __init__(self) -> None:
        super().__init__(plain_authenticator=check)
        self.messages: list[list[bytes]] = []

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        self.messages.append(frames)
        self.send([identity, *frames])


@pytest.mark.parametrize("greeting", [V2_PEER, V2_AS_LIBZMQ, b"\x00"], ids=["2.0", "2.0-libzmq", "1.0"])
def test_a_plain_server_engine_refuses_an_older_peer(greeting: bytes) -> None:
    engine = ZmtpEngine(SocketType.ROUTER, probe_downgrade=True, plain_authenticator=check)
    data = greeting if greeting != b"\x00" else V1_PEER
    with pytest.raises(DowngradeRefused, match="no authentication"):
        engine.feed(data)
    assert not engine.ready


def test_a_plain_client_engine_refuses_a_2_0_server() -> None:
    engine = ZmtpEngine(SocketType.DEALER, plain_credentials=(b"admin", b"secret"))
    with pytest.raises(DowngradeRefused):
        engine.feed(SIGNATURE + b"\x01\x06\x00\x00")
    assert b"HELLO" not in engine.data_to_send()


def test_a_null_engine_still_speaks_2_0() -> None:
    engine = ZmtpEngine(SocketType.ROUTER)
    assert engine.feed(V2_PEER) == [[b"sneak", b"in"]]
    assert engine.version == (2, 0)


@OLD_PEERS
async def test_a_plain_router_refuses_older_peers_and_delivers_nothing(greeting: bytes) -> None:
    router = Recording()
    async with serving(router.factory) as server:
        assert server.address is not None
        received = await raw_session(server.address, greeting)
    assert router.messages == []
    assert b"sneak" not in received


@OLD_PEERS
async def test_the_plain_local_service_refuses_older_peers(greeting: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    async with serving(ZmtpEchoDispatcher, options=PLAIN) as server:
        assert server.address is not None
        received = await raw_session(server.address, greeting)
    assert b"sneak" not in received
    if greeting != V1_BARE:  # a bare 1.0 peer is no ZMTP 2.0+ greeting at all
        assert "no authentication" in caplog.text  # the log says why


@asynccontextmanager
async def plain_broker(upstream: str) -> AsyncIterator[str]:
    config = parse_config(
        {
            "listeners": [
                {
                    "name": "zmq",
                    "address": "127.0.0.1:0",
                    "protocol": "zmtp",
                    "options": PLAIN,
                    "routes": [{"cluster": "services"}],
                }
            ],
            "clusters": [{"name": "services", "endpoints": [upstream]}],
        }
    )
    async with running_proxy(config) as proxy:
        yield proxy.addresses["zmq"]


@OLD_PEERS
async def test_the_plain_broker_listener_refuses_older_peers(greeting: bytes) -> None:
    upstream = Recording()
    upstream.plain_authenticator = None  # the service behind the proxy speaks NULL
    async with serving(upstream.factory) as service:
        assert service.address is not None
        async with plain_broker(service.address) as broker:
            received = await raw_session(broker, greeting)
    assert upstream.messages == []
    assert b"sneak" not in received


async def accept_2_0_sessions(counts: dict[str, int], stream: SocketStream) -> None:
    """A ZMTP 2.0 ROUTER that records what a client sends (until it closes)."""
    counts["connections"] += 1
    async with stream:
        await stream.send(SIGNATURE + b"\x01\x06\x00\x00")
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            while True:
                counts["bytes"] += len(await stream.receive())


async def test_our_plain_dealer_refuses_a_2_0_server_once_and_for_all() -> None:
    counts = {"connections": 0, "bytes": 0}
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda s: accept_2_0_sessions(counts, s))
        dealer = Dealer(f"127.0.0.1:{port}", plain_credentials=(b"admin", b"secret"), reconnect_interval=0.01)
        async with dealer:
            with anyio.fail_after(10), pytest.raises(DowngradeRefused, match="no authentication"):
                await dealer.send([b"secret message"])
            # Ten reconnect intervals later: still the one attempt.
            await anyio.sleep(0.1)
            assert dealer.attempts == 1
        tg.cancel_scope.cancel()
    assert counts["connections"] == 1
    assert counts["bytes"] <= 11  # our signature and major version, never a message


async def test_a_plain_upstream_that_speaks_2_0_gets_no_message_and_one_attempt_per_backoff_step() -> None:
    counts = {"connections": 0, "bytes": 0}
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    config = parse_config(
        {
            "listeners": [
                {"name": "zmq", "address": "127.0.0.1:0", "protocol": "zmtp", "routes": [{"cluster": "services"}]}
            ],
            "clusters": [{"name": "services", "endpoints": [f"127.0.0.1:{port}"], "options": PLAIN}],
        }
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda s: accept_2_0_sessions(counts, s))
        async with running_proxy(config) as proxy, Dealer(proxy.addresses["zmq"]) as client:
            for _ in range(20):
                await client.send([b"", b"secret message"])
                with anyio.fail_after(10):
                    reply = await client.receive()
                assert reply[-1].startswith(b"error:"), reply
        tg.cancel_scope.cancel()
    assert counts["bytes"] <= 11 * counts["connections"]
    # The endpoint is in connect backoff after each refusal (0.25 s, doubling):
    # 20 quick requests cost a handful of attempts, not one each.
    assert 1 <= counts["connections"] <= 3
