"""The proxy on its bad days: stuck upstreams, floods of pipelined requests,
plugin bugs, clients that leave, shutdowns mid-frame (review regressions).

Each test failed before its fix; the backends and helpers are those of
test_line_proxy.py.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketStream, TaskStatus
from simple_line_support import Client, backends, client, config, proxy_for

from sota_dispatch import ConnectionContext, Dispatcher, Failure, ProtocolError
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy, ProxyConnection
from sota_dispatch.testing import without_ref
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio


class Accepted:
    """The client connections a proxy's first listener makes (wraps its factory)."""

    def __init__(self, proxy: Proxy) -> None:
        self.connections: list[ProxyConnection] = []
        self._arrived = anyio.Event()
        server = proxy.listeners[0].server
        original = server.factory

        def factory(stream: ByteStream, context: ConnectionContext) -> Dispatcher:
            connection = original(stream, context)
            assert isinstance(connection, ProxyConnection)
            self.connections.append(connection)
            self._arrived.set()
            return connection

        server.factory = factory

    async def first(self) -> ProxyConnection:
        with anyio.fail_after(5):
            await self._arrived.wait()
        return self.connections[0]


def two_routes(slow: str, fast: str, **listener: Any) -> dict[str, Any]:
    """``slow=...`` lines to cluster a, ``n=...`` lines to cluster b."""
    return {
        "listeners": [
            {
                "name": "lines",
                "address": "127.0.0.1:0",
                "protocol": "simple_line",
                "routes": [
                    {"match": [{"attribute": "slow", "present": True}], "cluster": "a"},
                    {"match": [{"attribute": "n", "present": True}], "cluster": "b"},
                ],
                **listener,
            }
        ],
        "clusters": [{"name": "a", "endpoints": [slow]}, {"name": "b", "endpoints": [fast]}],
    }


async def test_an_exclusive_connection_that_never_answers_is_replaced() -> None:
    async with backends("A") as up:
        pool = {"mode": "exclusive", "connections": 1}
        async with proxy_for(config([up[0][1]], pool=pool, route={"timeout": "300ms"})) as proxy, client(proxy) as c:
            assert [without_ref(r) for r in await c.call(b"hold=1")] == [b"error:timeout: no answer within 0.3s"]
            assert await c.call(b"n=2") == [b"A:n=2"]  # on a new connection
    assert up[0][0].connections == 2


async def test_a_stuck_pipelined_connection_is_replaced() -> None:
    async with (
        backends("A") as up,
        proxy_for(config([up[0][1]], route={"timeout": "300ms"})) as proxy,
        client(proxy) as c,
    ):
        assert [without_ref(r) for r in await c.call(b"hold=1")] == [b"error:timeout: no answer within 0.3s"]
        assert await c.call(*(b"n=%d" % i for i in range(5))) == [b"A:n=%d" % i for i in range(5)]


async def test_requests_that_timed_out_in_the_queue_do_not_count_as_waiting() -> None:
    async with backends("A") as up:
        document = two_routes(up[0][1], up[0][1])
        document["clusters"] = [
            {
                "name": "a",
                "endpoints": [up[0][1]],
                "pool": {"mode": "exclusive", "connections": 1, "max_pending": 1, "shared": True},
            }
        ]
        routes = document["listeners"][0]["routes"]
        routes[0].update(timeout="5s")
        routes[1].update(cluster="a", timeout="100ms")
        async with proxy_for(document) as proxy, client(proxy) as c1, client(proxy) as c2:
            await c1.send(b"slow=1&hold=1")  # holds the only connection
            await up[0][0].wait_seen(1)
            timed_out = [b"error:timeout: no answer within 0.1s"]
            assert [without_ref(r) for r in await c2.call(b"n=1")] == timed_out  # waited, then timed out
            assert [without_ref(r) for r in await c2.call(b"n=2")] == timed_out  # not an overflow
            up[0][0].release.set()
            assert await c1.replies(1) == [b"A:slow=1&hold=1"]


async def test_max_in_flight_holds_within_one_read_batch() -> None:
    async with backends("A") as up:
        document = config([up[0][1]])
        document["listeners"][0]["limits"] = {"max_in_flight": 4}
        async with proxy_for(document) as proxy, client(proxy) as c:
            replies = await c.call(*(b"n=%d" % i for i in range(3000)))
    assert replies == [b"A:n=%d" % i for i in range(3000)]


async def test_a_cold_proxy_takes_2000_pipelined_lines_with_default_limits() -> None:
    async with backends("A") as up, proxy_for(config([up[0][1]])) as proxy, client(proxy) as c:
        replies = await c.call(*(b"n=%d" % i for i in range(2000)))
    assert Counter(r[:2] for r in replies) == {b"A:": 2000}


@pytest.mark.parametrize("fast", [b"n=%d", b"x=%d"], ids=["answered", "no-route"])
async def test_replies_held_behind_a_slow_request_count_against_max_in_flight(fast: bytes) -> None:
    async with backends("A", "B") as up:
        (a, a_address), (b, b_address) = up
        async with proxy_for(two_routes(a_address, b_address, limits={"max_in_flight": 4})) as proxy:
            accepted = Accepted(proxy)
            async with client(proxy) as c:
                await c.send(b"slow=1&hold=1")
                await a.wait_seen(1)
                connection = await accepted.first()
                await c.send(*(fast % i for i in range(3000)))
                with anyio.move_on_after(0.5):  # give B the chance to overtake the limit
                    await b.wait_seen(3000)
                assert len(b.seen) <= 4
                assert connection.in_flight <= 4
                a.release.set()
                replies = await c.replies(3001)
    assert replies[0] == b"A:slow=1&hold=1"
    expected = [b"B:n=%d" % i if fast == b"n=%d" else b"error:no route" for i in range(3000)]
    assert [without_ref(r) for r in replies[1:]] == expected


async def test_a_plugin_bug_in_an_error_reply_closes_one_client_not_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SimpleLineDispatcher.error_reply

    def broken(cls: object, request: bytes, failure: Failure, detail: str = "") -> bytes:
        if b"boom" in request:
            raise RuntimeError("a bug in error_reply")
        return original(request, failure, detail)

    monkeypatch.setattr(SimpleLineDispatcher, "error_reply", classmethod(broken))
    async with (
        backends("A") as up,
        proxy_for(config([up[0][1]], route={"timeout": "200ms"})) as proxy,
        client(proxy) as c1,
        client(proxy) as c2,
    ):
        await c1.send(b"boom=1&hold=1")
        with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):  # no reply possible: the close says it
            await c1.reader.read_some()
        assert await c2.call(b"n=2") == [b"A:n=2"]


@pytest.mark.parametrize(
    ("error", "reply"),
    [
        (RuntimeError("a bug in timeout"), b"error:codec error"),  # a plugin's bug: the log has it
        (ProtocolError("an unreadable timeout"), b"error:codec error: an unreadable timeout"),
    ],
)
async def test_a_request_whose_timeout_cannot_be_read_fails_alone(
    monkeypatch: pytest.MonkeyPatch, error: Exception, reply: bytes
) -> None:
    # A request's own timeout is read from its content (a dubbo attachment):
    # an error there was raised out of the request path and lost the client
    # connection with everything in flight on it.
    def broken(cls: object, frame: bytes) -> float | None:
        if b"boom" in frame:
            raise error
        return None

    SimpleLineDispatcher.bound_semantics()  # made once per class: swap it while the test runs
    monkeypatch.setattr(SimpleLineDispatcher, "timeout", classmethod(broken))
    monkeypatch.delattr(SimpleLineDispatcher, "_bound")
    async with (
        backends("A") as up,
        proxy_for(config([up[0][1]], route={"timeout": "5s"})) as proxy,
        client(proxy) as c,
    ):
        await c.send(b"hold=1&n=0")  # in flight when the bad one comes
        await up[0][0].wait_seen(1)
        await c.send(b"boom=1", b"n=2")
        up[0][0].release.set()
        replies = [without_ref(r) for r in await c.replies(3)]
    assert replies == [b"A:hold=1&n=0", reply, b"A:n=2"]


async def test_a_client_gone_with_requests_in_flight_is_cleaned_up() -> None:
    async with backends("A") as up, proxy_for(config([up[0][1]], route={"timeout": "30s"})) as proxy:
        accepted = Accepted(proxy)
        async with client(proxy) as c:
            await c.send(b"hold=1")
            await up[0][0].wait_seen(1)
            connection = await accepted.first()
        start = anyio.current_time()
        with anyio.fail_after(10):
            await connection.wait_closed()
        assert anyio.current_time() - start < 5  # the linger time (2 s), not the 30 s route timeout
        assert connection.closed
        assert not connection._exchanges


async def close_at_eof(stream: SocketStream) -> None:
    """A well-behaved silent client: it closes when the server does."""
    async with stream:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                await stream.receive()


async def drain_time(protocol: str, *, spoke: bool) -> float:
    """Seconds a shutdown takes with a silent client connected: one that
    never sent (held as a bare socket) or one idle after a request (served)."""
    async with backends("A") as up:
        document = config([up[0][1]])
        document["listeners"][0]["protocol"] = protocol
        document["drain_timeout"] = 5
        proxy = Proxy(parse_config(document))
        done = anyio.Event()

        async def run(*, task_status: TaskStatus[dict[str, str]]) -> None:
            await proxy.serve(task_status=task_status)
            done.set()

        async with anyio.create_task_group() as tg:
            await tg.start(run)
            host, _, port = proxy.addresses["lines"].rpartition(":")
            server = proxy.listeners[0].server
            stream = await anyio.connect_tcp(host, int(port))  # connected
            if spoke:
                c = Client(stream)
                await stream.send(b"n=1\r\n")
                assert await c.replies(1) == [b"A:n=1"]
            tg.start_soon(close_at_eof, stream)  # then silent
            async with await anyio.connect_tcp(host, int(port)) as probe:  # accepted after it
                await probe.send(b"n=2\r\n")
                assert await Client(probe).replies(1) == [b"A:n=2"]
            assert server.waiting_connections == (0 if spoke else 1)
            start = anyio.current_time()
            proxy.shutdown()
            with anyio.fail_after(10):
                await done.wait()
            return anyio.current_time() - start
    raise AssertionError("unreachable")


@pytest.mark.parametrize("spoke", [False, True], ids=["never-spoke", "idle-after-a-request"])
@pytest.mark.parametrize("protocol", ["simple_line", "auto"])
async def test_a_silent_connection_does_not_hold_up_shutdown(protocol: str, spoke: bool) -> None:
    assert await drain_time(protocol, spoke=spoke) < 2


async def test_drain_finishes_the_request_being_received() -> None:
    async with backends("A") as up:
        document = config([up[0][1]])
        document["drain_timeout"] = 5
        proxy = Proxy(parse_config(document))
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.serve)
            host, _, port = proxy.addresses["lines"].rpartition(":")
            async with await anyio.connect_tcp(host, int(port)) as stream:
                c = Client(stream)
                await stream.send(b"n=1\r\nservice=pay&amount=")  # one request, and half of the next
                assert await c.replies(1) == [b"A:n=1"]
                proxy.shutdown()
                await stream.send(b"10\r\n")
                assert await c.replies(1) == [b"A:service=pay&amount=10"]
                with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
                    await c.reader.read_some()
