"""ZMTP through the bundled proxy: real libzmq (pyzmq) on both sides.

pyzmq DEALER and REQ clients talk to the proxy's ROUTER front end; the
proxy forwards over its own DEALER connections to pyzmq ROUTER and REP
backends (each in a worker thread, stopped by an event). Every error case
is asserted on the frames the client receives.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
import zmq
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from zmtp_support import RawPeer, connect, in_thread, ready, v3_greeting, zsocket

from sota_dispatch import PIECE_FROM
from sota_dispatch.cli.args import UsageError, parser
from sota_dispatch.cli.build import ServicePlan
from sota_dispatch.config import parse_config
from sota_dispatch.logs import JsonFormatter
from sota_dispatch.testing import running_proxy, without_ref
from sota_zmtp.wire import encode_command, encode_message

pytestmark = pytest.mark.anyio

Context = zmq.Context[zmq.Socket[bytes]]


@contextmanager
def zmq_backend(kind: int, handle: Callable[[list[bytes]], list[bytes] | None], **options: int) -> Iterator[str]:
    """A libzmq ROUTER or REP service in a thread; ``handle`` maps a received
    message to the one sent back (None: no answer; raising closes the socket).
    ``options`` are socket options set before binding."""
    ctx: Context = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                if not sock.poll(50):
                    continue
                message = sock.recv_multipart()
                try:
                    reply = handle(message)
                except ConnectionAbortedError:
                    return
                if reply is not None:
                    sock.send_multipart(reply)
        finally:
            sock.close(0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)
        ctx.term()


def router_echo(tag: bytes) -> Callable[[list[bytes]], list[bytes] | None]:
    """Echo with the backend's tag appended (the envelope comes back as is)."""
    return lambda message: [*message, tag]


def document(endpoints: list[str], route: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "zmq",
                "address": "127.0.0.1:0",
                "protocol": "zmtp",
                "routes": [{"cluster": "services", **(route or {})}],
            }
        ],
        "clusters": [{"name": "services", "endpoints": endpoints}],
    }


@asynccontextmanager
async def proxy_for(doc: dict[str, Any]) -> AsyncIterator[str]:
    async with running_proxy(parse_config(doc)) as proxy:
        yield proxy.addresses["zmq"]


async def test_50_dealers_with_identities_get_exactly_their_own_replies() -> None:
    def clients(address: str) -> dict[bytes, list[list[bytes]]]:
        ctx: Context = zmq.Context()
        try:
            socks = {
                b"client-%d" % i: zsocket(ctx, zmq.DEALER, address, ROUTING_ID=b"client-%d" % i) for i in range(50)
            }
            for name, sock in socks.items():
                for j in range(4):
                    sock.send_multipart([name, b"msg-%d" % j])
            return {name: [sock.recv_multipart() for _ in range(4)] for name, sock in socks.items()}
        finally:
            ctx.destroy(0)

    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as a, zmq_backend(zmq.ROUTER, router_echo(b"B")) as b:
        async with proxy_for(document([a, b])) as address:
            received = await in_thread(lambda: clients(address))
    tags: set[bytes] = set()
    for name, replies in received.items():
        assert sorted(r[:2] for r in replies) == [[name, b"msg-%d" % j] for j in range(4)], name
        tags.update(r[2] for r in replies)
    assert tags == {b"A", b"B"}


async def test_req_client_through_the_proxy_to_a_rep_service() -> None:
    def client(address: str) -> list[bytes]:
        ctx: Context = zmq.Context()
        try:
            req = zsocket(ctx, zmq.REQ, address)
            answers = []
            for word in (b"one", b"two", b"three"):
                req.send(word)
                answers.append(req.recv())
            return answers
        finally:
            ctx.destroy(0)

    with zmq_backend(zmq.REP, lambda message: [message[0].upper()]) as rep:
        async with proxy_for(document([rep])) as address:
            assert await in_thread(lambda: client(address)) == [b"ONE", b"TWO", b"THREE"]


def one_call(address: str, message: list[bytes], kind: int = zmq.DEALER) -> list[bytes]:
    ctx: Context = zmq.Context()
    try:
        sock = zsocket(ctx, kind, address)
        sock.send_multipart(message)
        return sock.recv_multipart()
    finally:
        ctx.destroy(0)


@pytest.mark.parametrize("size", [PIECE_FROM - 1, PIECE_FROM, 1024, 70_000])
async def test_long_bodies_cross_the_proxy_whole_and_are_counted_as_sent(
    size: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Long last parts leave the proxy as pieces of their own (sota_zmtp.semantics):
    # a DEALER's one part and a REQ's delimiter and body, there and back.
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    def req_call(address: str) -> list[bytes]:
        return one_call(address, [body + b"?"], zmq.REQ)

    with zmq_backend(zmq.ROUTER, lambda message: message) as echo, zmq_backend(zmq.REP, lambda m: m) as rep:
        for backend, call, sent in (
            (echo, lambda address: one_call(address, [body]), [body]),
            (rep, req_call, [b"", body + b"?"]),
        ):
            doc = document([backend])
            doc["listeners"][0]["access_log"] = True
            caplog.clear()
            async with proxy_for(doc) as address:
                assert await in_thread(functools.partial(call, address)) == sent[-1:]
            [record] = [r for r in caplog.records if r.name == "sota_dispatch.access"]
            assert json.loads(JsonFormatter().format(record))["bytes_sent"] == len(encode_message(sent))


async def test_no_route_keeps_the_envelope_and_adds_an_error_frame() -> None:
    route = {"match": [{"attribute": "body", "exact": "ping"}]}
    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as a:
        async with proxy_for(document([a], route)) as address:
            reply = await in_thread(lambda: one_call(address, [b"", b"pong", b"x"]))
            assert [*reply[:-1], without_ref(reply[-1])] == [b"", b"error:no route"]
            reply = await in_thread(lambda: one_call(address, [b"pong"]))
            assert [without_ref(f) for f in reply] == [b"error:no route"]
            assert await in_thread(lambda: one_call(address, [b"", b"ping"])) == [b"", b"ping", b"A"]


async def test_no_healthy_upstream_is_an_error_message() -> None:
    def refused_port() -> str:
        ctx: Context = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        sock.close(0)
        ctx.term()
        return f"127.0.0.1:{port}"

    async with proxy_for(document([refused_port()])) as address:
        [reply] = await in_thread(lambda: one_call(address, [b"hello"]))
        assert reply.startswith(b"error:no healthy upstream")
        [again] = await in_thread(lambda: one_call(address, [b"hello"], zmq.REQ))  # REQ: envelope handled
        assert again.startswith(b"error:no healthy upstream")


async def test_timeout_is_an_error_message_and_the_late_reply_is_dropped() -> None:
    held: list[list[bytes]] = []

    def hold_first(message: list[bytes]) -> list[bytes] | None:
        if message[-1] == b"slow":
            held.append(message)
            return None
        return [*message, b"A"]

    with zmq_backend(zmq.ROUTER, hold_first) as a:
        async with proxy_for(document([a], {"timeout": "300ms"})) as address:

            def calls() -> list[list[bytes]]:
                ctx: Context = zmq.Context()
                try:
                    sock = zsocket(ctx, zmq.DEALER, address)
                    sock.send_multipart([b"slow"])
                    first = sock.recv_multipart()
                    sock.send_multipart([b"fast"])
                    return [first, sock.recv_multipart()]
                finally:
                    ctx.destroy(0)

            replies = await in_thread(calls)
            expected = [[b"error:timeout: no answer within 0.3s"], [b"fast", b"A"]]
            assert [[without_ref(f) for f in r] for r in replies] == expected


async def test_upstream_reset_is_an_error_message() -> None:
    def close_on_request(message: list[bytes]) -> list[bytes] | None:
        if message[-1] == b"die":
            raise ConnectionAbortedError
        return [*message, b"A"]

    with zmq_backend(zmq.ROUTER, close_on_request) as a:
        async with proxy_for(document([a])) as address:
            [reply] = await in_thread(lambda: one_call(address, [b"die"]))
    assert without_ref(reply) == b"error:upstream reset"  # the address is for the log


async def _pipe(source: ByteStream, sink: ByteStream) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)
    await sink.aclose()


async def test_a_failed_extra_connection_does_not_mark_a_serving_endpoint_down() -> None:
    """The endpoint (a forwarder in front of a pyzmq ROUTER) takes one
    connection and closes any further one, like a service at its limit."""
    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as backend:
        host, _, port = backend.rpartition(":")
        accepted = 0

        async def handle(stream: SocketStream) -> None:
            nonlocal accepted
            accepted += 1
            if accepted > 1:
                await stream.aclose()
                return
            upstream = await anyio.connect_tcp(host, int(port))
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(_pipe, stream, upstream)
                tg.start_soon(_pipe, upstream, stream)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        front = listener.extra(SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            doc = document([f"127.0.0.1:{front}"])
            doc["clusters"][0]["pool"] = {"connections": 2}
            async with proxy_for(doc) as address:

                def calls() -> list[list[bytes]]:
                    ctx: Context = zmq.Context()
                    try:
                        sock = zsocket(ctx, zmq.DEALER, address)
                        replies = []
                        for round_ in range(20):  # bounded: until a second connection was tried
                            words = [b"%d-%d" % (round_, i) for i in range(8)]  # 8 at once: a busy pool
                            for word in words:
                                sock.send_multipart([word])
                            replies += [sock.recv_multipart() for _ in words]
                            if accepted >= 2:
                                break
                        return replies
                    finally:
                        ctx.destroy(0)

                replies = await in_thread(calls)
            tg.cancel_scope.cancel()
    assert all(reply[-1] == b"A" for reply in replies), replies
    assert accepted >= 2  # the extra connection was tried, and failed


async def test_overflow_is_an_error_message_at_once() -> None:
    held = threading.Event()

    def hold_slow(message: list[bytes]) -> list[bytes] | None:
        if message[-1] == b"slow":
            held.set()  # the proxy's one request slot is taken
            return None
        return [*message, b"A"]

    with zmq_backend(zmq.ROUTER, hold_slow) as a:
        doc = document([a], {"timeout": "5s"})
        slow_route = {"match": [{"attribute": "body", "exact": "slow"}], "cluster": "services", "timeout": "500ms"}
        doc["listeners"][0]["routes"].insert(0, slow_route)
        doc["clusters"][0]["pool"] = {"max_requests": 1, "max_pending": 1}
        async with proxy_for(doc) as address:

            def calls() -> list[list[bytes]]:
                ctx: Context = zmq.Context()
                try:
                    sock = zsocket(ctx, zmq.DEALER, address)
                    sock.send_multipart([b"slow"])
                    assert held.wait(10)
                    sock.send_multipart([b"queued"])
                    sock.send_multipart([b"over"])
                    return [sock.recv_multipart() for _ in range(3)]
                finally:
                    ctx.destroy(0)

            replies = await in_thread(calls)
    assert [[without_ref(f) for f in r] for r in replies] == [
        [b"error:overflow"],
        [b"error:timeout: no answer within 0.5s"],
        [b"queued", b"A"],  # sent once the slow one gave up its place
    ]


async def test_zmtp_health_checks_ping_a_libzmq_peer() -> None:
    """libzmq answers the check's PING with a PONG; a peer that accepts but
    never completes the handshake fails its checks."""

    async def mute(stream: SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive()

    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as healthy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        silent = f"127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, mute)
            doc = document([healthy, silent])
            doc["clusters"][0]["health_check"] = {"interval": "100ms", "timeout": "300ms", "unhealthy_threshold": 2}
            async with running_proxy(parse_config(doc)) as proxy:
                cluster = proxy.clusters["services"]
                with anyio.fail_after(10):
                    while cluster.stats.health_checks < 6:  # noqa: ASYNC110 - no event marks a health verdict
                        await anyio.sleep(0.02)
                assert [endpoint.address for endpoint in cluster.unhealthy] == [silent]
                assert cluster.stats.health_check_failures == cluster.stats.health_checks // 2  # only the silent one
                replies = await in_thread(lambda: [one_call(proxy.addresses["zmq"], [b"x%d" % i]) for i in range(4)])
                assert replies == [[b"x%d" % i, b"A"] for i in range(4)]
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("split", [True, False], ids=["greeting-in-pieces", "greeting-at-once"])
async def test_a_client_idle_after_its_handshake_is_not_taken_for_a_slowloris(split: bool) -> None:
    """libzmq sends its greeting in pieces: the handshake's partial bytes
    must not leave a frame clock running once the handshake is done."""
    mechanism = b"NULL".ljust(20, b"\0")
    ready = b"\x05READY" + b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    signature, rest = (
        b"\xff" + b"\0" * 8 + b"\x7f",
        b"\x03\x01" + mechanism + b"\0" * 32 + b"\x04" + bytes([len(ready)]),
    )
    doc = document(["127.0.0.1:1"])
    doc["listeners"][0]["limits"] = {"frame_timeout": "300ms", "idle_timeout": "30s"}
    async with running_proxy(parse_config(doc)) as proxy:
        host, _, port = proxy.addresses["zmq"].rpartition(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            if split:
                await stream.send(signature)
                await stream.receive()  # the proxy's signature: it has read ours
                await stream.send(rest + ready)
            else:
                await stream.send(signature + rest + ready)
            received = b""
            with anyio.move_on_after(1):  # three frame timeouts, idle
                while True:
                    received += await stream.receive()  # EndOfStream here would be the bug
            assert b"READY" in received


async def test_park_idle_after_on_a_zmtp_listener_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The proxy greets a ZMTP client first: its connections cannot wait at
    the doorstep, so they cannot park; the operator is told, not ignored."""
    document = {
        "listeners": [
            {
                "name": "zmtp",
                "address": "127.0.0.1:0",
                "protocol": "zmtp",
                "limits": {"park_idle_after": "30s"},
                "routes": [{"cluster": "echo"}],
            }
        ],
        "clusters": [{"name": "echo", "endpoints": ["127.0.0.1:1"]}],
    }
    with caplog.at_level("WARNING", logger="sota_dispatch.proxy.listener"):
        async with running_proxy(parse_config(document)) as proxy:
            assert proxy.listeners[0].server.park_idle_after is None
    assert "park_idle_after ignored: zmtp's server speaks first" in caplog.text


async def test_a_zmtp_listener_left_at_the_default_does_not_park_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Parking is on by default where connections can park; a ZMTP
    listener cannot, and its operator asked for nothing: no warning."""
    document = {
        "listeners": [{"name": "zmtp", "address": "127.0.0.1:0", "protocol": "zmtp", "routes": [{"cluster": "echo"}]}],
        "clusters": [{"name": "echo", "endpoints": ["127.0.0.1:1"]}],
    }
    with caplog.at_level("WARNING", logger="sota_dispatch.proxy.listener"):
        async with running_proxy(parse_config(document)) as proxy:
            assert proxy.listeners[0].server.park_idle_after is None
    assert "park_idle_after" not in caplog.text


def test_the_serve_command_does_not_park_zmtp_and_refuses_to_be_told_to() -> None:
    def built(*flags: str) -> Any:
        return ServicePlan.from_args(parser().parse_args(["--protocol", "zmtp", *flags])).build()

    assert built().park_idle_after is None
    assert built("--park-idle-after", "0").park_idle_after is None
    with pytest.raises(UsageError, match="cannot park"):
        built("--park-idle-after", "5")


async def test_an_idle_clients_ping_gets_its_pong_from_the_proxy() -> None:
    # The PONG is the codec's own output from a read that completes no
    # frame: it must leave at once, not wait for the connection's next
    # request (a batch taken where its bytes arrive has no task read to
    # flush it first).
    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as a:
        async with proxy_for(document([a])) as address, await connect(address) as peer:
            await peer.send(v3_greeting() + ready(b"pinger"))
            await peer.receive_exactly(64)
            flags, size = await peer.receive_exactly(2)
            assert flags == 0x04  # a short command: the proxy's READY
            await peer.receive_exactly(size)
            for context in (b"first", b"second"):
                await peer.send(encode_command(b"PING", b"\x00\x00" + context))
                pong = encode_command(b"PONG", context)
                assert await peer.receive_exactly(len(pong)) == pong


async def test_an_upstreams_ping_gets_its_pong_from_the_proxy() -> None:
    # The same for the proxy's own connection to a backend: a backend that
    # heartbeats (libzmq's ZMQ_HEARTBEAT_IVL does) must hear back.
    pong = encode_command(b"PONG", b"backend")
    heard = anyio.Event()

    async def backend(stream: SocketStream) -> None:
        async with stream:
            peer = RawPeer(stream)
            await peer.send(v3_greeting() + ready(b"", b"ROUTER"))
            await peer.receive_exactly(64)  # the proxy's greeting
            flags, size = await peer.receive_exactly(2)
            assert flags == 0x04
            await peer.receive_exactly(size)  # its READY
            await peer.send(encode_command(b"PING", b"\x00\x00backend"))
            data = b""
            with anyio.fail_after(10):
                while pong not in data:  # after the forwarded request, if it came first
                    data += await peer.reader.read_some()
            heard.set()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, backend)
        port = listener.extra(SocketAttribute.local_port)
        async with proxy_for(document([f"127.0.0.1:{port}"])) as address, await connect(address) as client:
            await client.send(v3_greeting() + ready(b"asker"))
            await client.send(encode_message([b"open the upstream connection"]))
            with anyio.fail_after(10):
                await heard.wait()
        tg.cancel_scope.cancel()
