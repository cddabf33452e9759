"""Our bolt client role: against anthunder's AioListener, through a forwarding
service for anthunder's sync client, and its multiplexing and keepalive."""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from xprotocol_support import (
    Reversing,
    UpperService,
    anthunder_calls,
    anthunder_server,
    anthunder_service,
    dubbo_request,
    request,
    serving,
)

from sota_dispatch import ConnectionLost, Dispatcher, Server
from sota_xprotocol import BoltClient, BoltEchoDispatcher, DubboClient, DubboEchoDispatcher, bolt, dubbo

pytestmark = pytest.mark.anyio


async def connect_with_retry(address: str) -> BoltClient:
    """The listener thread may still be binding: retry connecting, bounded."""
    for attempt in range(100):
        try:
            return await BoltClient.connect(address, timeout=5)
        except OSError:
            if attempt == 99:
                raise
            await anyio.sleep(0.05)  # the peer's own startup, not a state of ours
    raise AssertionError("unreachable")


async def test_our_client_calls_anthunders_aio_listener_concurrently() -> None:
    with anthunder_server() as (host, port, _):
        client = await connect_with_retry(f"{host}:{port}")
        async with client:
            results: dict[int, bolt.BoltFrame | None] = {}

            async def one(i: int) -> None:
                results[i] = await client.call(request(b"msg %d" % i, request_id=1), timeout=10)

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
        for i, response in results.items():
            assert response is not None
            assert response.status == bolt.ResponseStatus.SUCCESS
            assert response.content == b"MSG %d" % i
        assert client.streams.unmatched == 0


class Forwarder(Dispatcher):
    """Downstream bolt server forwarding every request over one BoltClient."""

    upstream: BoltClient

    async def serve(self) -> None:
        decoder = bolt.BoltDecoder()
        async for data in self.reader.chunks():
            for frame in decoder.feed(data):
                if frame.is_heartbeat:
                    self.writer.write(bolt.heartbeat_ack(frame).encode())
                    continue
                response = await self.upstream.call(frame, timeout=10)
                if response is not None:
                    # Restore the downstream id: 4 bytes patched, no re-encode.
                    self.writer.write(response.with_request_id(frame.request_id))
            decoder.check()


def forwarding(upstream: BoltClient) -> AbstractAsyncContextManager[tuple[str, int]]:
    def factory(stream: Any, context: Any) -> Forwarder:
        forwarder = Forwarder(stream, context)
        forwarder.upstream = upstream
        return forwarder

    return serving(factory)


async def test_anthunder_client_through_our_client_role_to_anthunders_server() -> None:
    with anthunder_server() as (host, port, listener):
        upstream = await connect_with_retry(f"{host}:{port}")
        async with upstream, forwarding(upstream) as (fhost, fport):
            service = anthunder_service()
            listener.handler.register_interface(service, UpperService)
            bodies = [b"through the proxy", b"second call"]
            replies = await anyio.to_thread.run_sync(anthunder_calls, fhost, fport, bodies, service)
        assert replies == [b.upper() for b in bodies]


async def test_connection_loss_fails_pending_calls() -> None:
    class Mute(BoltEchoDispatcher):
        async def serve(self) -> None:
            await self.reader.read_exactly(1)  # read a byte, then hang up

    server = Server(Mute, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await BoltClient.connect(address) as client:
            with anyio.fail_after(10), pytest.raises(ConnectionLost):
                await client.call(request(b"anyone?"))
        server.shutdown()


async def test_keepalive_heartbeats_and_missed_acks() -> None:
    class Fast(BoltClient):
        keepalive_interval = 0.05
        max_missed_heartbeats = 2

    class Deaf(BoltEchoDispatcher):
        async def serve(self) -> None:
            async for _ in self.reader.chunks():  # reads, never answers
                pass

    for upstream, closes in ((BoltEchoDispatcher, False), (Deaf, True)):
        server = Server(upstream, "127.0.0.1:0")
        async with anyio.create_task_group() as tg:
            address = await tg.start(server.serve)
            client = await Fast.connect(address)
            async with client:
                # Wait (heartbeats go on meanwhile); a deaf upstream ends it.
                with anyio.move_on_after(0.6), contextlib.suppress(ConnectionLost):
                    await client.streams.open().result()
            assert (client.close_reason is not None) == closes
            server.shutdown()


async def test_dubbo_client_matches_50_concurrent_calls_answered_out_of_order() -> None:
    server = Server(Reversing, "127.0.0.1:0")
    arguments = [f"a{i}" for i in range(50)]
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await DubboClient.connect(address) as client:
            results: dict[int, Any] = {}

            async def one(i: int) -> None:
                response = await client.call(dubbo_request(arguments[i]), timeout=10)
                assert response is not None
                assert response.status == dubbo.DubboStatus.OK
                results[i] = hessian2_values(response.body)

            async with anyio.create_task_group() as calls:
                for i in range(50):
                    calls.start_soon(one, i)
        server.shutdown()
    assert results == {i: [1, arguments[i]] for i in range(50)}
    assert client.streams.unmatched == 0


def hessian2_values(body: bytes) -> list[Any]:
    from sota_xprotocol import hessian2

    return hessian2.decode_all(body)


async def test_dubbo_client_keepalive_is_answered_by_our_echo_service() -> None:
    class Fast(DubboClient):
        keepalive_interval = 0.05
        max_missed_heartbeats = 1

    server = Server(DubboEchoDispatcher, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await Fast.connect(address) as client:
            for _ in range(5):  # real calls spaced by idle periods with heartbeats
                response = await client.call(dubbo_request("still"), timeout=5)
                assert response is not None
                with anyio.move_on_after(0.12):
                    await anyio.sleep_forever()
        assert client.close_reason is None
        assert client.missed_heartbeats == 0
        server.shutdown()
