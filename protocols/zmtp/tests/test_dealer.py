"""Our DEALER role against libzmq ROUTER and REP sockets that bind, and against our ROUTER."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest
import zmq

from sota_dispatch import Server
from sota_dispatch.testing import free_port
from sota_zmtp import Dealer, EchoRouter, PeerError, Router

pytestmark = pytest.mark.anyio


def bound(kind: int) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], int]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return ctx, sock, port


def serve_n(sock: zmq.Socket[bytes], count: int, answer: Callable[[list[bytes]], list[bytes]]) -> list[list[bytes]]:
    seen = []
    for _ in range(count):
        message = sock.recv_multipart()
        seen.append(message)
        sock.send_multipart(answer(message))
    return seen


async def test_dealer_talks_to_a_libzmq_router() -> None:
    ctx, router, port = bound(zmq.ROUTER)
    try:
        async with anyio.create_task_group() as tg, Dealer(f"127.0.0.1:{port}", identity=b"ours") as dealer:
            seen: list[list[list[bytes]]] = []

            async def server() -> None:
                seen.append(await anyio.to_thread.run_sync(serve_n, router, 3, lambda m: [m[0], b"re:", *m[1:]]))

            tg.start_soon(server)
            for i in range(3):
                await dealer.send([b"q%d" % i, b"x" * 300])
                with anyio.fail_after(10):
                    assert await dealer.receive() == [b"re:", b"q%d" % i, b"x" * 300]
        assert seen[0][0] == [b"ours", b"q0", b"x" * 300]  # libzmq saw our identity
        assert dealer.connection is None
        assert dealer.connects == 1
    finally:
        ctx.destroy(0)


async def test_dealer_talks_to_a_libzmq_rep_with_the_envelope() -> None:
    ctx, rep, port = bound(zmq.REP)
    try:
        async with anyio.create_task_group() as tg, Dealer(f"127.0.0.1:{port}") as dealer:
            tg.start_soon(anyio.to_thread.run_sync, serve_n, rep, 2, lambda m: [b"reply to " + m[0]])
            for body in (b"one", b"two"):
                await dealer.send([b"", body])  # a DEALER talking to REP adds the empty delimiter
                with anyio.fail_after(10):
                    assert await dealer.receive() == [b"", b"reply to " + body]
    finally:
        ctx.destroy(0)


@asynccontextmanager
async def our_router(router: Router, listen: str) -> AsyncIterator[Server]:
    server = Server(router.factory, listen, drain_timeout=1)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


async def test_dealer_waits_for_the_server_and_reconnects_after_it_restarts() -> None:
    port = free_port()
    dealer = Dealer(f"127.0.0.1:{port}", identity=b"d1", reconnect_interval=0.01, reconnect_interval_max=0.05)
    async with dealer:
        assert dealer.connection is None  # nothing listens yet: it keeps trying
        async with our_router(EchoRouter(), f"127.0.0.1:{port}"):
            await dealer.send([b"first"])
            with anyio.fail_after(10):
                assert await dealer.receive() == [b"first"]
        # That server is gone; a new one on the same port gets the dealer back.
        async with our_router(EchoRouter(), f"127.0.0.1:{port}"):
            with anyio.fail_after(10):
                await dealer.send([b"second"])
                assert await dealer.receive() == [b"second"]
        assert dealer.connects == 2
        assert dealer.attempts >= 3


async def test_refused_dealer_does_not_reconnect() -> None:
    port = free_port()
    async with our_router(EchoRouter(), f"127.0.0.1:{port}"), Dealer(f"127.0.0.1:{port}", identity=b"same") as first:
        await first.send([b"hello"])
        with anyio.fail_after(10):
            assert await first.receive() == [b"hello"]
        second = Dealer(f"127.0.0.1:{port}", identity=b"same", reconnect_interval=0.01)
        async with second:
            # Its handshake may complete (both READYs cross) before the
            # refusal arrives; the ERROR then ends it for good.
            with anyio.fail_after(10), pytest.raises(PeerError, match="already connected"):
                await second.receive()
            with pytest.raises(PeerError):
                await second.send([b"me too"])
            assert second.attempts == 1


def test_dealer_must_be_running() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="not running"):
            await Dealer("127.0.0.1:1").send([b"x"])

    anyio.run(main)


async def test_concurrent_receivers_each_get_a_message() -> None:
    port = free_port()
    async with our_router(EchoRouter(), f"127.0.0.1:{port}"), Dealer(f"127.0.0.1:{port}") as dealer:
        got: list[list[bytes]] = []

        async def receiver() -> None:
            got.append(await dealer.receive())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                await dealer.send([b"m1"])
                await dealer.send([b"m2"])
        assert sorted(got) == [[b"m1"], [b"m2"]]


async def test_a_stopped_dealer_raises_instead_of_blocking() -> None:
    port = free_port()
    dealer = Dealer(f"127.0.0.1:{port}", reconnect_interval=0.01)
    pending: list[BaseException] = []

    async def waiting_receive() -> None:
        try:
            await dealer.receive()
        except anyio.ClosedResourceError as exc:
            pending.append(exc)

    async with anyio.create_task_group() as outer:
        async with dealer:
            outer.start_soon(waiting_receive)
            await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            for call in (dealer.receive, dealer.wait_connected, lambda: dealer.send([b"x"])):
                with pytest.raises(anyio.ClosedResourceError):
                    await call()
    assert len(pending) == 1  # the receive that was waiting when it stopped


async def test_receive_hwm_applies_backpressure_instead_of_buffering() -> None:
    class Flood(Router):
        async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
            for i in range(5000):
                self.send([identity, b"%d" % i])

    port = free_port()
    async with (
        our_router(Flood(send_hwm=1 << 30), f"127.0.0.1:{port}"),
        Dealer(f"127.0.0.1:{port}", receive_hwm=10) as dealer,
    ):
        await dealer.send([b"go"])
        with anyio.fail_after(10):
            assert await dealer.receive() == [b"0"]
            await anyio.wait_all_tasks_blocked()
            assert len(dealer._inbox) <= 10  # the rest waits in sockets, not in our memory
            for i in range(1, 5000):
                assert await dealer.receive() == [b"%d" % i]
