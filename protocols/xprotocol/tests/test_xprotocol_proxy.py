"""bolt and dubbo through the bundled proxy, with real peers on 127.0.0.1.

anthunder's sync client -> proxy -> anthunder's AioListener; dubbo-ssl-python
-> proxy -> a dubbo provider (our echo service counting its connections).
The error cases use a raw client and a scripted upstream whose behaviour the
request's content chooses (``hold``: never answer, ``close``: drop the
connection, ``busy``: a busy status); each is asserted on the bytes the
client receives.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.abc import ByteStream, TaskStatus
from xprotocol_support import (
    DUBBO_CALL_TIMEOUT,
    SERVICE,
    UpperService,
    anthunder_calls,
    anthunder_server,
    anthunder_service,
    close_dubbo_connection,
    request,
)

from sota_dispatch import BufferedReader, Dispatcher, Server
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import free_port, running_proxy, serving
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, bolt, dubbo, hessian2
from sota_xprotocol.service import echo_bolt, echo_dubbo

pytestmark = pytest.mark.anyio
INTERFACE = "com.example.EchoService"


def document(protocol: str, endpoints: list[str], route: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "rpc",
                "address": "127.0.0.1:0",
                "protocol": protocol,
                "routes": [{"cluster": "up", **(route or {})}],
            }
        ],
        "clusters": [{"name": "up", "endpoints": endpoints, **extra}],
    }


@asynccontextmanager
async def proxy_for(doc: dict[str, Any]) -> AsyncIterator[Proxy]:
    async with running_proxy(parse_config(doc)) as proxy:
        yield proxy


# -- real peers -------------------------------------------------------------------


async def test_anthunder_client_through_the_proxy_to_anthunders_aio_listener() -> None:
    with anthunder_server() as (host, port, listener):
        async with proxy_for(document("bolt", [f"{host}:{port}"])) as proxy:
            proxy_host, _, proxy_port = proxy.addresses["rpc"].rpartition(":")
            service = anthunder_service()
            listener.handler.register_interface(service, UpperService)
            bodies = [b"hello bolt", b"x" * 70_000]  # not b"": AioListener never answers an empty result
            replies = await anyio.to_thread.run_sync(anthunder_calls, proxy_host, int(proxy_port), bodies, service)
        assert replies == [b.upper() for b in bodies]


def dubbo_call_all(addresses: list[str], per_address: int) -> dict[str, list[Any]]:
    """``per_address`` concurrent calls on each address (one dubbo-ssl-python
    connection per address), all at once; returns each caller's answers."""
    from dubbo_ssl.client import DubboClient

    clients = {a: DubboClient(INTERFACE, group="g1", version="1.0.0", host=a) for a in addresses}
    jobs = [(a, f"{a}/call-{i}") for a in addresses for i in range(per_address)]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(
                pool.map(lambda job: clients[job[0]].call("echo", (job[1],), timeout=DUBBO_CALL_TIMEOUT), jobs)
            )
    finally:
        for address in addresses:  # the library never closes its pooled connections
            close_dubbo_connection(address)
    result: dict[str, list[Any]] = {a: [] for a in addresses}
    for (address, _), answer in zip(jobs, answers, strict=True):
        result[address].append(answer)
    return result


async def test_long_dubbo_calls_and_answers_cross_the_proxy_whole() -> None:
    # Frames of PIECE_FROM bytes or more leave the proxy in two pieces
    # (sota_xprotocol.semantics): dubbo-ssl-python's calls, both ways.
    from dubbo_ssl.client import DubboClient

    # Below 32,768 characters: dubbo-ssl-python 0.9.6 reads a string's
    # 16-bit length as signed (a valid 'S' 0x8000 or longer comes out empty)
    # and never chunks its own (past 65,535 it writes garbage).
    texts = ["short", "l" * 470, "\u00e9x" * 2000, "y" * 32_767]

    def calls(address: str) -> list[Any]:
        client = DubboClient(INTERFACE, group="g1", version="1.0.0", host=address)
        try:
            return [client.call("echo", (text,), timeout=DUBBO_CALL_TIMEOUT) for text in texts]
        finally:
            close_dubbo_connection(address)

    async with serving(DubboEchoDispatcher) as provider:
        assert provider.address is not None
        async with proxy_for(document("dubbo", [provider.address])) as proxy:
            assert await anyio.to_thread.run_sync(calls, proxy.addresses["rpc"]) == texts


async def test_dubbo_100_concurrent_calls_from_10_connections_share_at_most_2_upstream_connections() -> None:
    upstream_connections = 0

    class CountingProvider(DubboEchoDispatcher):
        async def on_connect(self) -> None:
            nonlocal upstream_connections
            upstream_connections += 1

    async with serving(CountingProvider) as provider:
        assert provider.address is not None
        doc = document("dubbo", [provider.address], pool={"connections": 2})
        # Ten listeners: dubbo-ssl-python keeps one connection per address.
        doc["listeners"] = [{**doc["listeners"][0], "name": f"rpc{i}"} for i in range(10)]
        async with proxy_for(doc) as proxy:
            addresses = list(proxy.addresses.values())
            answers = await anyio.to_thread.run_sync(dubbo_call_all, addresses, 10)
            downstream = sum(listener.server.connections_total for listener in proxy.listeners)
    for address, replies in answers.items():
        assert replies == [f"{address}/call-{i}" for i in range(10)]  # every answer reached its own caller
    assert downstream == 10
    assert 1 <= upstream_connections <= 2


# -- a scripted upstream for the error cases --------------------------------------


class Scripted(Dispatcher):
    """bolt or dubbo (told by the first byte): echo, unless the request says
    ``hold`` (no answer), ``close`` (drop the connection), ``busy``, or
    ``twice`` (the echo twice, then one more under an id never sent)."""

    seen: list[int]

    async def serve(self) -> None:
        first = await self.reader.peek(1)
        decoder: Any = bolt.BoltDecoder() if first[:1] in (b"\x01", b"\x02") else dubbo.DubboDecoder()
        async for frames in self.codec_loop(decoder):
            for frame in frames:
                if frame.is_heartbeat:
                    continue
                Scripted.seen.append(frame.request_id)
                word = content_of(frame)
                if word == "close":
                    return
                if word == "hold":
                    continue
                if word == "busy" and isinstance(frame, bolt.BoltFrame):
                    busy = bolt.BoltFrame(
                        bolt.FrameType.RESPONSE,
                        bolt.CmdCode.RPC_RESPONSE,
                        frame.request_id,
                        codec=frame.codec,
                        status=bolt.ResponseStatus.SERVER_THREADPOOL_BUSY,
                    )
                    self.writer.write(busy.encode())
                    continue
                reply = echo_bolt(frame) if isinstance(frame, bolt.BoltFrame) else echo_dubbo(frame)
                if reply:
                    self.writer.write(reply)
                if word == "twice" and reply:
                    self.writer.write(reply)
                    stray = frame.request_id ^ 0x40000000
                    if isinstance(frame, bolt.BoltFrame):
                        self.writer.write(echo_bolt(request(b"stray", stray)) or b"")
                    else:
                        self.writer.write(echo_dubbo(dubbo_request("stray", stray)) or b"")


def content_of(frame: bolt.BoltFrame | dubbo.DubboFrame) -> str:
    if isinstance(frame, bolt.BoltFrame):
        return frame.content.decode()
    first = frame.invocation().arguments[0]
    return first if isinstance(first, str) else ""


def answer_of(reply: bolt.BoltFrame | dubbo.DubboFrame) -> str:
    """What an echo answered: bolt's content, dubbo's return value."""
    if isinstance(reply, bolt.BoltFrame):
        return reply.content.decode()
    kind, *values = hessian2.decode_all(reply.body)
    return str(values[0]) if values else f"no value ({kind})"


def bolt_request(word: str, request_id: int, timeout_ms: int = 5000, service: str = SERVICE) -> bolt.BoltFrame:
    frame = request(word.encode(), request_id)
    header = {"service": service, "sofa_head_target_service": service, "sofa_head_method_name": "echo"}
    return bolt.BoltFrame(
        frame.type,
        frame.cmdcode,
        request_id,
        codec=frame.codec,
        timeout=timeout_ms,
        class_name=frame.class_name,
        header_bytes=bolt.encode_header_map(header),
        content=frame.content,
    )


def dubbo_request(
    word: str, request_id: int, service: str = INTERFACE, attachments: dict[str, Any] | None = None
) -> dubbo.DubboFrame:
    attachments = {"group": "g1"} if attachments is None else attachments
    body = b"".join(
        hessian2.encode(v) for v in ("2.7.0", service, "1.0.0", "echo", "Ljava/lang/String;", word, attachments)
    )
    flag = dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2
    return dubbo.DubboFrame(flag, 0, request_id, body)


class RawClient:
    def __init__(self, stream: ByteStream, protocol: str) -> None:
        self.stream = stream
        self.reader = BufferedReader(stream)
        self.decoder: Any = bolt.BoltDecoder() if protocol == "bolt" else dubbo.DubboDecoder()
        self.frames: list[Any] = []

    async def call(self, frame: bolt.BoltFrame | dubbo.DubboFrame, timeout: float = 10) -> Any:
        await self.stream.send(frame.encode())
        return await self.receive(timeout)

    async def receive(self, timeout: float = 10) -> Any:
        with anyio.fail_after(timeout):
            while not self.frames:
                self.frames.extend(self.decoder.feed(await self.reader.read_some()))
        return self.frames.pop(0)


@asynccontextmanager
async def raw_client(proxy: Proxy, protocol: str) -> AsyncIterator[RawClient]:
    host, _, port = proxy.addresses["rpc"].rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        yield RawClient(stream, protocol)


@asynccontextmanager
async def scripted() -> AsyncIterator[str]:
    Scripted.seen = []
    async with serving(Scripted, drain_timeout=0.2) as server:
        assert server.address is not None
        yield server.address


def expect_bolt(reply: bolt.BoltFrame, request_id: int, status: int) -> None:
    """The reply's own bytes: a response with the status, our id, no body."""
    expected = bolt.BoltFrame(bolt.FrameType.RESPONSE, bolt.CmdCode.RPC_RESPONSE, request_id, codec=11, status=status)
    assert reply.raw == expected.encode()


def expect_dubbo(reply: dubbo.DubboFrame, request_id: int, status: int, message_start: str) -> None:
    assert reply.raw[:4] == b"\xda\xbb\x02" + bytes([status])  # a response, hessian2, the status
    assert reply.request_id == request_id
    [message] = hessian2.decode_all(reply.body)
    assert isinstance(message, str)
    assert message.startswith(message_start), message
    assert "127.0.0.1" not in message, message  # internals stay in the log
    assert "cluster" not in message, message


async def test_bolt_error_replies_carry_the_protocols_statuses() -> None:
    async with scripted() as upstream:
        route = {"match": [{"attribute": "service", "exact": SERVICE}], "timeout": "2s"}
        doc = document("bolt", [upstream], route, pool={"mode": "multiplex", "max_requests": 1, "max_pending": 1})
        async with proxy_for(doc) as proxy, raw_client(proxy, "bolt") as c:
            # No route.
            expect_bolt(await c.call(bolt_request("x", 11, service="other:1.0")), 11, bolt.ResponseStatus.NO_PROCESSOR)
            # The request's own timeout (200 ms) is shorter than the route's.
            start = anyio.current_time()
            expect_bolt(await c.call(bolt_request("hold", 12, timeout_ms=200)), 12, bolt.ResponseStatus.TIMEOUT)
            assert 0.15 < anyio.current_time() - start < 1.5
            # Upstream closes mid-request.
            expect_bolt(await c.call(bolt_request("close", 13)), 13, bolt.ResponseStatus.CONNECTION_CLOSED)
            # The connection stays usable: an echo.
            reply = await c.call(bolt_request("fine", 14))
            assert (reply.request_id, reply.status, reply.content) == (14, 0, b"fine")
            # Overflow: one request per connection, one may wait, the next may not.
            await c.stream.send(bolt_request("hold", 15, timeout_ms=500).encode())
            await c.stream.send(bolt_request("x", 16).encode())
            await c.stream.send(bolt_request("x", 17).encode())
            expect_bolt(await c.receive(), 17, bolt.ResponseStatus.SERVER_THREADPOOL_BUSY)
            expect_bolt(await c.receive(), 15, bolt.ResponseStatus.TIMEOUT)
            reply = await c.receive()  # 16 went out once 15 gave up its place
            assert (reply.request_id, reply.status, reply.content) == (16, 0, b"x")
    async with proxy_for(document("bolt", [f"127.0.0.1:{free_port()}"])) as proxy, raw_client(proxy, "bolt") as c:
        expect_bolt(await c.call(bolt_request("x", 21)), 21, bolt.ResponseStatus.NO_PROCESSOR)  # no healthy upstream


async def test_dubbo_error_replies_carry_the_protocols_statuses() -> None:
    async with scripted() as upstream:
        route = {"match": [{"attribute": "service", "exact": INTERFACE}], "timeout": "300ms"}
        async with proxy_for(document("dubbo", [upstream], route)) as proxy, raw_client(proxy, "dubbo") as c:
            expect_dubbo(await c.call(dubbo_request("x", 1, service="other")), 1, 60, "404|router unavailable")
            expect_dubbo(await c.call(dubbo_request("hold", 2**63 - 1)), 2**63 - 1, 31, "504|timeout")
            expect_dubbo(await c.call(dubbo_request("close", 3)), 3, 70, "502|upstream connection reset")
            reply = await c.call(dubbo_request("fine", 4))
            assert (reply.request_id, reply.status, hessian2.decode_all(reply.body)) == (4, 20, [1, "fine"])
    async with proxy_for(document("dubbo", [f"127.0.0.1:{free_port()}"])) as proxy, raw_client(proxy, "dubbo") as c:
        expect_dubbo(await c.call(dubbo_request("x", 5)), 5, 60, "502|no healthy upstream")


async def test_a_dubbo_timeout_attachment_is_the_deadline_its_reply_names() -> None:
    async with scripted() as upstream:
        route = {"match": [{"attribute": "service", "exact": INTERFACE}], "timeout": "15s"}
        async with proxy_for(document("dubbo", [upstream], route)) as proxy, raw_client(proxy, "dubbo") as c:
            start = anyio.current_time()
            reply = await c.call(dubbo_request("hold", 1, attachments={"timeout": "300"}))
            assert anyio.current_time() - start < 5  # its own 300 ms, not the route's 15 s
            expect_dubbo(reply, 1, 31, "504|timeout: no answer within 0.3s; ref ")


async def test_without_attribute_routes_the_timeout_is_read_from_the_bytes_or_by_decoding_alike() -> None:
    # A catch-all route reads no attributes: the proxy reads the timeout from
    # the call's bytes (dubbo_scan), and decodes calls of another shape (a
    # non-ASCII key, an int value): each names its own deadline, on its own
    # connection, beside the other client's.
    async with scripted() as upstream:
        route = {"timeout": "5s"}
        async with (
            proxy_for(document("dubbo", [upstream], route)) as proxy,
            raw_client(proxy, "dubbo") as a,
            raw_client(proxy, "dubbo") as b,
        ):
            replies: dict[str, dubbo.DubboFrame] = {}

            async def ask(name: str, client: RawClient, request_id: int, attachments: dict[str, Any]) -> None:
                replies[name] = await client.call(dubbo_request("hold", request_id, attachments=attachments))

            start = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, "scanned", a, 7, {"path": INTERFACE, "timeout": "300", "group": "g1"})
                tg.start_soon(ask, "decoded", b, 7, {"é\x00": "", "timeout": "200"})
            assert anyio.current_time() - start < 4  # their own deadlines, not the route's 5 s
            expect_dubbo(replies["scanned"], 7, 31, "504|timeout: no answer within 0.3s; ref ")
            expect_dubbo(replies["decoded"], 7, 31, "504|timeout: no answer within 0.2s; ref ")
            reply = await a.call(dubbo_request("hold", 8, attachments={"timeout": 250}))
            expect_dubbo(reply, 8, 31, "504|timeout: no answer within 0.25s; ref ")


async def test_a_hostile_dubbo_timeout_attachment_falls_back_to_the_routes_timeout() -> None:
    # A double's infinity made reading the attachment raise OverflowError out
    # of the request path, which lost the client's connection with everything
    # in flight on it: now it reads as "none", as any other unusable value.
    async with scripted() as upstream:
        route = {"match": [{"attribute": "service", "exact": INTERFACE}], "timeout": "100ms"}
        async with proxy_for(document("dubbo", [upstream], route)) as proxy, raw_client(proxy, "dubbo") as c:
            for number, value in enumerate([float("inf"), float("nan"), "never", -1, [300]], start=1):
                reply = await c.call(dubbo_request("hold", number, attachments={"timeout": value}))
                expect_dubbo(reply, number, 31, "504|timeout: no answer within 0.1s; ref ")
            reply = await c.call(dubbo_request("fine", 9))
            assert (reply.request_id, reply.status, hessian2.decode_all(reply.body)) == (9, 20, [1, "fine"])


async def test_dubbo_routes_on_attachments_holding_lone_surrogates() -> None:
    # A Java String may hold a lone surrogate: such an attachment is routed
    # on (a regex match) and the call forwarded, its bytes unchanged.
    async with scripted() as upstream:
        route = {"match": [{"attribute": "traceId", "regex": "t-."}], "timeout": "2s"}
        async with proxy_for(document("dubbo", [upstream], route)) as proxy, raw_client(proxy, "dubbo") as c:
            request = dubbo_request("fine\udc00", 7, attachments={"group": "g\udfff", "traceId": "t-\ud800"})
            reply = await c.call(request)
            assert (reply.request_id, reply.status, reply.body) == (7, 20, b"\x91" + hessian2.encode("fine\udc00"))
            missed = await c.call(dubbo_request("x", 8, attachments={"traceId": "u-\ud800"}))
            expect_dubbo(missed, 8, 60, "404|router unavailable")


async def test_dubbo_hash_balances_on_an_attachment_holding_a_lone_surrogate() -> None:
    async with scripted() as upstream:
        doc = document("dubbo", [upstream], {"hash_key": "traceId"}, lb="ring_hash")
        async with proxy_for(doc) as proxy, raw_client(proxy, "dubbo") as c:
            reply = await c.call(dubbo_request("fine", 1, attachments={"traceId": "t-\ud800"}), timeout=5)
            assert (reply.request_id, reply.status) == (1, 20)


@pytest.mark.parametrize("protocol", ["bolt", "dubbo"])
async def test_surplus_and_stray_upstream_answers_never_reach_a_client(protocol: str) -> None:
    """An upstream that answers every request twice and adds one under an id
    never sent, on a connection two clients share: each client gets its own
    answer once, nothing else, and goes on being served."""
    async with scripted() as upstream:
        doc = document(protocol, [upstream], pool={"mode": "multiplex", "connections": 1})
        async with proxy_for(doc) as proxy, raw_client(proxy, protocol) as one, raw_client(proxy, protocol) as two:
            make = bolt_request if protocol == "bolt" else dubbo_request
            for round_ in range(3):
                for client, name in ((one, "one"), (two, "two")):
                    await client.stream.send(make("twice", 10 + round_).encode())
                    reply = await client.receive()
                    assert (reply.request_id, answer_of(reply)) == (10 + round_, "twice")
                    # A plain call next: its answer, not a copy of the last one.
                    reply = await client.call(make(f"{name}-{round_}", 100 + round_))
                    assert (reply.request_id, answer_of(reply)) == (100 + round_, f"{name}-{round_}")
            assert not one.frames
            assert not two.frames
            with anyio.move_on_after(0.2):  # nothing more arrives (a stray answer would be here by now)
                await one.receive(1)
            assert not one.frames
            [cluster] = proxy.clusters.values()
            assert cluster.connection_count() == 1  # the upstream connection stayed


async def test_bolt_status_is_retried_on_another_endpoint_when_configured() -> None:
    async with scripted() as busy_one, serving(BoltEchoDispatcher) as healthy:
        assert healthy.address is not None
        route = {"retry": {"attempts": 2, "retry_on": ["status"], "statuses": [4], "idempotent": True}}
        doc = document("bolt", [busy_one, healthy.address], route)
        async with proxy_for(doc) as proxy, raw_client(proxy, "bolt") as c:
            replies = [await c.call(bolt_request("busy", i)) for i in range(1, 5)]
    assert [(r.request_id, r.status, r.content) for r in replies] == [(i, 0, b"busy") for i in range(1, 5)]


async def test_heartbeats_are_answered_locally_and_ids_are_rewritten() -> None:
    async with (
        scripted() as upstream,
        proxy_for(document("bolt", [upstream])) as proxy,
        raw_client(proxy, "bolt") as c1,
        raw_client(proxy, "bolt") as c2,
    ):
        ack = await c1.call(bolt.heartbeat_request(99))
        assert (ack.request_id, ack.is_heartbeat, ack.is_response) == (99, True, True)
        assert proxy.clusters["up"].pools == []  # nothing went upstream
        # Two clients use the same id at once; each gets its own answer back.
        await c1.stream.send(bolt_request("one", 7).encode())
        await c2.stream.send(bolt_request("two", 7).encode())
        r1, r2 = await c1.receive(), await c2.receive()
    assert (r1.request_id, r1.content, r2.request_id, r2.content) == (7, b"one", 7, b"two")
    assert len(set(Scripted.seen)) == 2  # distinct upstream ids on the shared connection


async def test_oneway_is_forwarded_and_never_answered() -> None:
    async with scripted() as upstream, proxy_for(document("bolt", [upstream])) as proxy, raw_client(proxy, "bolt") as c:
        frame = bolt_request("fire", 5)
        oneway = bolt.BoltFrame(
            bolt.FrameType.ONEWAY,
            frame.cmdcode,
            5,
            codec=frame.codec,
            class_name=frame.class_name,
            header_bytes=frame.header_bytes,
            content=b"fire",
        )
        await c.stream.send(oneway.encode())
        reply = await c.call(bolt_request("after", 6))  # answered; the oneway got nothing
        assert (reply.request_id, reply.content) == (6, b"after")
    assert len(Scripted.seen) == 2


async def test_auto_listener_tells_bolt_from_dubbo() -> None:
    async with (
        scripted() as upstream,
        proxy_for(document("auto", [upstream])) as proxy,
        raw_client(proxy, "bolt") as b,
        raw_client(proxy, "dubbo") as d,
    ):
        assert (await b.call(bolt_request("b", 1))).content == b"b"
        assert hessian2.decode_all((await d.call(dubbo_request("d", 2))).body) == [1, "d"]


async def test_a_dubbo_event_that_is_no_heartbeat_gets_a_codec_error_reply() -> None:
    async with scripted() as upstream:
        route = {"match": [{"attribute": "service", "exact": INTERFACE}], "timeout": "2s"}
        async with proxy_for(document("dubbo", [upstream], route)) as proxy, raw_client(proxy, "dubbo") as c:
            flag = dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.FLAG_EVENT | dubbo.HESSIAN2
            event = dubbo.DubboFrame(flag, 0, 41, hessian2.encode("R"))  # a READONLY-style event
            expect_dubbo(await c.call(event), 41, 40, "400|codec error")
            reply = await c.call(dubbo_request("fine", 42))  # the connection stays
            assert (reply.request_id, reply.status) == (42, 20)


async def test_a_stalled_upstream_does_not_grow_the_proxys_buffers() -> None:
    # A listening socket nobody accepts from: the connect succeeds, the
    # kernel's buffers fill, then every write to it would queue up.
    with socket.socket() as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        port = stalled.getsockname()[1]
        doc = document("bolt", [f"127.0.0.1:{port}"], {"timeout": "100ms"})
        async with proxy_for(doc) as proxy, raw_client(proxy, "bolt") as c:
            request_id = 0
            for _ in range(10):
                frames = []
                for _ in range(100):
                    request_id += 1
                    frames.append(bolt_request("x" * 65536, request_id).encode())
                await c.stream.send(b"".join(frames))  # 6.5 MB a round, 65 MB in all
                for _ in range(100):
                    assert (await c.receive()).status == bolt.ResponseStatus.TIMEOUT
            [pool] = proxy.clusters["up"].pools
            queued = sum(connection.writer.pending for connection in pool.connections)
    assert queued < 1 << 20


async def test_a_reply_made_before_a_request_waits_for_room_leaves_at_once() -> None:
    # A heartbeat answered by the proxy, then a request its cluster has no
    # room for: the request waits (until its deadline, 4 s), the
    # heartbeat's answer does not wait with it.
    Scripted.seen = []
    async with scripted() as upstream:
        doc = document("bolt", [upstream], {"timeout": "4s"}, circuit_breakers={"max_requests": 1})
        async with proxy_for(doc) as proxy, raw_client(proxy, "bolt") as c:
            await c.stream.send(bolt_request("hold", 1).encode())  # takes the one place
            with anyio.fail_after(5):
                while not Scripted.seen:  # noqa: ASYNC110 - the scripted upstream sets no event
                    await anyio.sleep(0.01)
            await c.stream.send(bolt.heartbeat_request(2).encode() + bolt_request("x", 3).encode())
            with anyio.fail_after(2):
                reply = await c.receive()
            assert (reply.request_id, reply.is_heartbeat) == (2, True)


async def test_dubbo_overflow_is_status_40() -> None:
    async with scripted() as upstream:
        doc = document("dubbo", [upstream], {"timeout": "5s"}, pool={"max_requests": 1, "max_pending": 1})
        slow_route = {"match": [{"attribute": "service", "exact": "slow"}], "cluster": "up", "timeout": "300ms"}
        doc["listeners"][0]["routes"].insert(0, slow_route)
        async with proxy_for(doc) as proxy, raw_client(proxy, "dubbo") as c:
            await c.stream.send(dubbo_request("hold", 1, service="slow").encode())
            with anyio.fail_after(5):
                while not Scripted.seen:  # noqa: ASYNC110 - the scripted upstream sets no event
                    await anyio.sleep(0.01)
            await c.stream.send(dubbo_request("queued", 2).encode() + dubbo_request("over", 3).encode())
            expect_dubbo(await c.receive(), 3, 40, "503|upstream overflow")
            expect_dubbo(await c.receive(), 1, 31, "504|timeout")
            reply = await c.receive()  # 2 went out once 1 gave up its place
            assert (reply.request_id, reply.status, hessian2.decode_all(reply.body)) == (2, 20, [1, "queued"])


async def test_bolt_backend_killed_mid_load_then_back() -> None:
    Scripted.seen = []
    kill_b = anyio.CancelScope()

    async def run_b(*, task_status: TaskStatus[str]) -> None:
        with kill_b:
            await Server(Scripted, "127.0.0.1:0").serve(task_status=task_status)

    async with serving(BoltEchoDispatcher) as a, anyio.create_task_group() as group:
        b_address = await group.start(run_b)
        assert a.address is not None
        async with proxy_for(document("bolt", [a.address, b_address])) as proxy, raw_client(proxy, "bolt") as c:
            await c.stream.send(b"".join(bolt_request("hold", i).encode() for i in range(1, 11)))
            with anyio.fail_after(5):
                while len(Scripted.seen) < 5:  # noqa: ASYNC110 - the scripted upstream sets no event
                    await anyio.sleep(0.01)
            kill_b.cancel()  # B dies with its 5 requests in flight
            replies = {reply.request_id: reply for reply in [await c.receive() for _ in range(10)]}
            statuses = sorted(reply.status for reply in replies.values())
            assert statuses == [0] * 5 + [bolt.ResponseStatus.CONNECTION_CLOSED] * 5
            # Later requests all go to A; none fails.
            later = [await c.call(bolt_request("after", 100 + i)) for i in range(10)]
            assert [(r.status, r.content) for r in later] == [(0, b"after")] * 10
            # B comes back on its port and gets traffic again.
            Scripted.seen = []
            async with serving(Scripted, b_address):
                with anyio.fail_after(15):
                    request_id = 200
                    while not Scripted.seen:  # B's connect backoff is under 1 s
                        request_id += 1
                        assert (await c.call(bolt_request("probe", request_id))).status == 0
                        await anyio.sleep(0.05)  # pacing between probes, not a wait for state


async def test_bolt_heartbeat_health_checks() -> None:
    check = {"interval": "100ms", "timeout": "300ms", "unhealthy_threshold": 2}
    async with scripted() as silent, serving(BoltEchoDispatcher) as echo:
        assert echo.address is not None
        async with proxy_for(document("bolt", [echo.address, silent], health_check=check)) as proxy:
            cluster = proxy.clusters["up"]
            with anyio.fail_after(10):
                while not cluster.unhealthy:  # noqa: ASYNC110 - no event marks a health verdict
                    await anyio.sleep(0.02)
            # The scripted upstream never answers heartbeats; the echo service does.
            assert [endpoint.address for endpoint in cluster.unhealthy] == [silent]
            async with raw_client(proxy, "bolt") as c:
                replies = [await c.call(bolt_request("x", i)) for i in range(1, 5)]
            assert [(r.status, r.content) for r in replies] == [(0, b"x")] * 4
    assert Scripted.seen == []  # nothing but heartbeats ever reached it
