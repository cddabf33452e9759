"""PLAIN (RFC 24) against libzmq both ways: its client to our ROUTER, our DEALER to its ROUTER."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest
import zmq
import zmq.auth.thread

from sota_dispatch import Server
from sota_zmtp import Dealer, EchoRouter, PeerError

pytestmark = pytest.mark.anyio


def check(user: bytes, password: bytes) -> bool:
    return (user, password) == (b"admin", b"secret")


def plain_dealer_round_trip(address: str, password: bytes) -> list[bytes] | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, 1500 if password != b"secret" else 10_000)
        dealer.plain_username = b"admin"
        dealer.plain_password = password
        dealer.connect(f"tcp://{address}")
        dealer.send_multipart([b"hello", b"plain"])
        try:
            return dealer.recv_multipart()
        except zmq.Again:
            return None
    finally:
        ctx.destroy(0)


@pytest.mark.parametrize(("password", "reply"), [(b"secret", [b"hello", b"plain"]), (b"wrong", None)])
async def test_libzmq_plain_client_against_our_router(password: bytes, reply: list[bytes] | None) -> None:
    router = EchoRouter(plain_authenticator=check)
    server = Server(router.factory, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        # A refused libzmq client waits 1.5 s for an answer that never comes:
        # long enough to see a reconnect storm if there were one.
        assert await anyio.to_thread.run_sync(plain_dealer_round_trip, address, password) == reply
        server.shutdown()
    assert server.connections_total == 1  # refused with ERROR: libzmq did not reconnect


async def test_our_plain_dealer_against_a_libzmq_plain_router() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = zmq.auth.thread.ThreadAuthenticator(ctx)  # libzmq's PLAIN server needs a ZAP handler
    auth.start()
    try:
        auth.configure_plain(domain="*", passwords={"admin": "secret"})
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVTIMEO, 10_000)
        router.plain_server = True
        port = router.bind_to_random_port("tcp://127.0.0.1")

        def echo_once() -> str:
            frames = router.recv_multipart(copy=False)
            user = frames[1].get("User-Id")
            router.send_multipart([frame.bytes for frame in frames])
            return str(user)

        async with (
            anyio.create_task_group() as tg,
            Dealer(f"127.0.0.1:{port}", identity=b"ours", plain_credentials=(b"admin", b"secret")) as good,
        ):
            users: list[str] = []

            async def serve() -> None:
                users.append(await anyio.to_thread.run_sync(echo_once))

            tg.start_soon(serve)
            await good.send([b"authenticated"])
            with anyio.fail_after(10):
                assert await good.receive() == [b"authenticated"]
        assert users == ["admin"]  # libzmq saw our PLAIN user

        bad = Dealer(f"127.0.0.1:{port}", plain_credentials=(b"admin", b"wrong"), reconnect_interval=0.01)
        async with bad:
            # libzmq answers with its malformed '5e RROR' command: still a refusal.
            with anyio.fail_after(10), pytest.raises(PeerError):
                await bad.send([b"let me in"])
            assert bad.attempts == 1
    finally:
        auth.stop()
        ctx.destroy(0)


async def test_servers_with_different_options_do_not_share_a_router() -> None:
    from sota_zmtp import ZmtpEchoDispatcher

    open_server = Server(ZmtpEchoDispatcher, "127.0.0.1:0")
    plain_server = Server(
        ZmtpEchoDispatcher, "127.0.0.1:0", options={"plain_user": "admin", "plain_password": "secret"}
    )
    async with anyio.create_task_group() as tg:
        open_address = await tg.start(open_server.serve)
        plain_address = await tg.start(plain_server.serve)
        # The first connection goes to the open server; the PLAIN one must
        # still demand credentials.
        assert await anyio.to_thread.run_sync(null_round_trip, open_address) == [b"open"]
        assert await anyio.to_thread.run_sync(null_round_trip, plain_address) is None
        assert await anyio.to_thread.run_sync(plain_dealer_round_trip, plain_address, b"secret") == [
            b"hello",
            b"plain",
        ]
        open_server.shutdown()
        plain_server.shutdown()


def null_round_trip(address: str) -> list[bytes] | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, 1000)
        dealer.connect(f"tcp://{address}")
        dealer.send(b"open")
        try:
            return dealer.recv_multipart()
        except zmq.Again:
            return None
    finally:
        ctx.destroy(0)
