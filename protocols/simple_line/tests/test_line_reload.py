"""Reloading a running proxy's configuration (``Proxy.apply``), in process.

Tagged backends say which cluster answered; held answers keep requests in
flight across a reload. What must hold: a request keeps the route and
cluster it started with; new requests take the new ones; connections of
clients stay open; endpoints that stay keep their upstream connections; a
config that cannot be applied changes nothing at all.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for, tags

from sota_dispatch import ConfigError
from sota_dispatch.config import parse_config
from sota_dispatch.testing import connect

pytestmark = pytest.mark.anyio


def two_clusters(first: str, second: str, route_to: str) -> dict[str, Any]:
    document = config([first])
    document["clusters"] = [{"name": "a", "endpoints": [first]}, {"name": "b", "endpoints": [second]}]
    document["listeners"][0]["routes"] = [{"cluster": route_to}]
    document["drain_timeout"] = 0.5
    return document


async def test_a_route_changes_live_and_a_request_in_flight_finishes_on_its_old_cluster() -> None:
    async with (
        backends("A", "B") as ((a, a_address), (b, b_address)),
        proxy_for(two_clusters(a_address, b_address, "a")) as proxy,
        client(proxy) as c,
    ):
        assert tags(await c.call(b"first")) == [b"A"]
        await c.send(b"x=1&hold=1")  # held by backend A: in flight across the reload
        await a.wait_seen(2)
        old_a = proxy.clusters["a"]
        # The new config routes to b and drops cluster a altogether.
        document = two_clusters(a_address, b_address, "b")
        document["clusters"] = [document["clusters"][1]]
        plan = await proxy.apply(parse_config(document))
        assert plan.clusters_removed == ("a",)
        assert plan.listeners_updated == ("lines",)
        assert "a" not in proxy.clusters
        assert old_a.retired
        await c.send(b"after")
        await b.wait_seen(1)
        a.release.set()
        # In order (simple_line answers in order): the held request from A, the new one from B.
        assert await c.replies(2) == [b"A:x=1&hold=1", b"B:after"]
        await a.wait_closed(1)  # the retired cluster closes its upstream connection once idle
        assert old_a.connection_count() == 0
        assert proxy.config_state.version == 2
        assert proxy.config_state.refused == 0
        assert tags(await c.call(b"again")) == [b"B"]  # the same client connection all along


async def test_new_limits_apply_to_clients_that_connect_after_the_reload() -> None:
    async with backends("A") as ((_, address),), proxy_for(config([address])) as proxy:
        server = proxy.listeners[0].server
        assert server.first_bytes_timeout == 30  # the default frame timeout
        document = config([address])
        document["listeners"][0]["limits"] = {"frame_timeout": "300ms", "max_connections": 5}
        await proxy.apply(parse_config(document))
        assert (server.first_bytes_timeout, server.max_connections) == (0.3, 5)
        async with await connect(proxy.addresses["lines"]) as silent:
            with anyio.fail_after(5):  # closed by the new first-byte deadline, not the old 30 s
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError)):
                    await silent.receive()
        assert server.first_byte_timeouts == 1


async def test_new_endpoints_keep_the_connections_of_those_that_stay() -> None:
    async with (
        backends("A", "B", "C") as ((a, a_address), (b, b_address), (_, c_address)),
        proxy_for(config([a_address, b_address])) as proxy,
        client(proxy) as c,
    ):
        assert sorted(tags(await c.call(*[b"q=%d" % i for i in range(8)]))) == [b"A"] * 4 + [b"B"] * 4
        cluster = proxy.clusters["backends"]
        b_connections = b.connections
        plan = await proxy.apply(parse_config(config([b_address, c_address])))
        assert plan.endpoints_changed == ("backends",)
        assert plan.clusters_replaced == ()
        assert proxy.clusters["backends"] is cluster  # the same cluster: counters and connections stay
        got = tags(await c.call(*[b"r=%d" % i for i in range(8)]))
        assert sorted(got) == [b"B"] * 4 + [b"C"] * 4
        assert b.connections == b_connections  # no new connection to the endpoint that stayed
        assert [e.address for e in cluster.endpoints] == [b_address, c_address]
        await a.wait_closed(1)  # A's idle upstream connection closes
        assert cluster.connection_count() == 2
        assert cluster.stats.outcomes["success"] == 16


async def test_weights_change_and_the_balancer_follows() -> None:
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        document = config([{"address": a_address, "weight": 1}, {"address": b_address, "weight": 1}])
        async with proxy_for(document) as proxy, client(proxy) as c:
            assert sorted(tags(await c.call(*[b"q=%d" % i for i in range(4)]))) == [b"A", b"A", b"B", b"B"]
            heavier = config([{"address": a_address, "weight": 3}, {"address": b_address, "weight": 1}])
            await proxy.apply(parse_config(heavier))
            got = tags(await c.call(*[b"r=%d" % i for i in range(8)]))
            assert (got.count(b"A"), got.count(b"B")) == (6, 2)


async def test_a_retry_of_a_request_from_before_the_reload_stays_on_its_old_cluster() -> None:
    """The retry of a request routed before a reload picks an endpoint of the
    cluster the request started on, even once the reload replaced that
    cluster; the connection it opens there closes after the answer."""
    async with backends("A1", "A2", "B") as ((a1, a1_address), (a2, a2_address), (_, b_address)):
        retry = {"attempts": 2, "retry_on": ["reset"], "idempotent": True}
        document = two_clusters(a1_address, b_address, "a")
        document["clusters"][0]["endpoints"] = [a1_address, a2_address]
        document["listeners"][0]["routes"][0]["retry"] = retry
        async with proxy_for(document) as proxy, client(proxy) as c:
            await c.send(b"x=1&hold=1")  # round robin's first pick: A1, which holds it
            await a1.wait_seen(1)
            old_a = proxy.clusters["a"]
            changed = two_clusters(a1_address, b_address, "b")
            changed["clusters"][0].update(endpoints=[a1_address, a2_address], lb="random")  # a replaced
            changed["listeners"][0]["routes"][0]["retry"] = retry
            plan = await proxy.apply(parse_config(changed))
            assert plan.clusters_replaced == ("a",)
            assert old_a.retired
            a2.release.set()
            a1.reset_all()  # the request's try fails: retried on the old cluster's other endpoint
            assert await c.replies(1) == [b"A2:x=1&hold=1"]
            await a2.wait_closed(1)  # the retired cluster's new connection closes once answered
            assert old_a.connection_count() == 0
            assert tags(await c.call(b"new")) == [b"B"]


async def test_a_config_that_cannot_be_applied_changes_nothing() -> None:
    async with (
        backends("A", "B") as ((_, a_address), (_, b_address)),
        proxy_for(two_clusters(a_address, b_address, "a")) as proxy,
        client(proxy) as c,
    ):
        before = proxy.config
        clusters = dict(proxy.clusters)
        # A listener's protocol belongs to its connections: refused, with the field named.
        document = two_clusters(a_address, b_address, "b")
        document["listeners"][0]["protocol"] = "auto"
        with pytest.raises(ConfigError) as refused:
            await proxy.apply(parse_config(document))
        assert refused.value.errors[0].path == "listeners[0].protocol"
        # A new listener on a port that is taken: nothing else of that config applies either.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            document = two_clusters(a_address, b_address, "b")
            host, port = taken.getsockname()
            more = {
                "name": "more",
                "address": f"{host}:{port}",
                "protocol": "simple_line",
                "routes": [{"cluster": "b"}],
            }
            document["listeners"].append(more)
            with pytest.raises(ConfigError, match="cannot listen on"):
                await proxy.apply(parse_config(document))
        assert proxy.config is before
        assert proxy.clusters == clusters
        assert list(proxy.addresses) == ["lines"]
        assert (proxy.config_state.version, proxy.config_state.refused) == (1, 2)
        assert "cannot listen" in str(proxy.config_state.last_error)
        assert tags(await c.call(b"still")) == [b"A"]


async def test_listeners_come_and_go() -> None:
    async with (
        backends("A", "B") as ((_, a_address), (_, b_address)),
        proxy_for(two_clusters(a_address, b_address, "a")) as proxy,
        client(proxy) as old_client,
    ):
        added = two_clusters(a_address, b_address, "a")
        more = {"name": "more", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "b"}]}
        added["listeners"].append(more)
        plan = await proxy.apply(parse_config(added))
        assert plan.listeners_added == ("more",)
        async with client(proxy, "more") as new_client:
            assert tags(await new_client.call(b"m")) == [b"B"]
            assert tags(await old_client.call(b"l")) == [b"A"]
            # Now only "more" stays: "lines" stops accepting and drains its connection.
            only_more = two_clusters(a_address, b_address, "a")
            only_more["listeners"] = [more]
            host, _, port = proxy.addresses["lines"].rpartition(":")
            plan = await proxy.apply(parse_config(only_more))
            assert plan.listeners_removed == ("lines",)
            assert "lines" not in proxy.addresses
            with (
                anyio.fail_after(5),
                pytest.raises((anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError)),
            ):
                await old_client.reader.read_until(b"\r\n", max_bytes=100)  # closed by the drain
            with pytest.raises(OSError):  # noqa: PT011 - refused: the message varies by backend
                await anyio.connect_tcp(host, int(port))
            assert tags(await new_client.call(b"m2")) == [b"B"]
            assert [listener.name for listener in proxy.listeners] == ["more"]


async def test_reloads_at_once_take_turns_and_a_web_page_cannot_ask_for_one() -> None:
    """Twenty reloads started together (SIGHUP and admin requests can
    cross), half of them adding a listener (which awaits its bind) and half
    removing it, apply one after another: the listeners at the end are the
    last applied config's. A cross-origin POST from a browser page is
    refused before it reaches the proxy."""
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        document = two_clusters(a_address, b_address, "a")
        document["admin"] = {"address": "127.0.0.1:0"}
        more = {"name": "more", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "b"}]}
        configs = []
        for i in range(20):
            variant = {**two_clusters(a_address, b_address, "ab"[i % 2]), "admin": document["admin"]}
            if i % 2 == 0:
                variant["listeners"] = [*variant["listeners"], more]
            configs.append(parse_config(variant))
        async with proxy_for(document) as proxy, client(proxy) as c:
            async with anyio.create_task_group() as tg:
                for config in configs:
                    tg.start_soon(proxy.apply, config)
                for i in range(10):  # traffic meanwhile, answered by one cluster or the other
                    assert tags(await c.call(b"i=%d" % i))[0] in (b"A", b"B")
            assert proxy.config_state.version == 21
            names = [listener.name for listener in proxy.config.listeners]
            assert [listener.name for listener in proxy.listeners] == names
            assert sorted(proxy.addresses) == sorted(names)
            host, _, port = str(proxy.admin_address).rpartition(":")
            async with await anyio.connect_tcp(host, int(port)) as admin:
                await admin.send(
                    f"POST /reload HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: http://evil.example\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                answer = b""
                with anyio.fail_after(5):
                    try:
                        while True:
                            answer += await admin.receive()
                    except anyio.EndOfStream:
                        pass
            assert answer.startswith(b"HTTP/1.1 403"), answer[:100]
            assert proxy.config_state.version == 21


async def test_a_client_keeps_the_limits_it_connected_under_after_a_reload() -> None:
    async with backends("A") as ((a, address),):
        document = config([address])
        document["listeners"][0]["limits"] = {"max_in_flight": 1}
        async with proxy_for(document) as proxy, client(proxy) as c:
            assert await c.call(b"warm") == [b"A:warm"]
            await proxy.apply(parse_config(config([address])))  # the default max_in_flight from now on
            await c.send(b"x=1&hold=1", b"x=2")
            await a.wait_seen(2)
            with anyio.move_on_after(0.3):
                await a.wait_seen(3)
                pytest.fail("a client accepted under max_in_flight 1 had two requests out after a reload")
            a.release.set()
            assert await c.replies(2) == [b"A:x=1&hold=1", b"A:x=2"]
