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

pytestmark = pytest.mark.anyio


def two_clusters(first: str, second: str, route_to: str) -> dict[str, Any]:
    document = config([first])
    document["clusters"] = [
        {"name": "a", "endpoints": [first]},
        {"name": "b", "endpoints": [second]},
    ]
    document["listeners"][0]["routes"] = [{"cluster": route_to}]
    return document


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Poll a condition of the proxy's state (no event to wait on there)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_route_changes_live_and_a_request_in_flight_finishes_on_its_old_cluster() -> None:
    async with backends("A", "B") as ((a, a_address), (b, b_address)):
        async with proxy_for(two_clusters(a_address, b_address, "a")) as proxy, client(proxy) as c:
            assert tags(await c.call(b"first")) == [b"A"]
            await c.send(b"x=1&hold=1")  # held by backend A: in flight across the reload
            await a.wait_seen(2)
            old_a = proxy.clusters["a"]
            # The new config routes to b and drops cluster a altogether.
            document = two_clusters(a_address, b_address, "b")
            document["clusters"] = [document["clusters"][1]]
            plan = await proxy.apply(parse_config(document))
            assert plan.clusters_removed == ("a",) and plan.listeners_updated == ("lines",)
            assert "a" not in proxy.clusters and old_a.retired
            await c.send(b"after")
            await b.wait_seen(1)
            a.release.set()
            replies = await c.replies(2)
            # In order (simple_line answers in order): the held request from A, the new one from B.
            assert replies == [b"A:x=1&hold=1", b"B:after"]
            # The retired cluster closes its upstream connection once idle.
            await wait_until(lambda: old_a.connection_count() == 0)
            assert proxy.config_state.version == 2 and proxy.config_state.refused == 0
            assert tags(await c.call(b"again")) == [b"B"]  # the same client connection all along


async def test_new_endpoints_keep_the_connections_of_those_that_stay() -> None:
    async with backends("A", "B", "C") as ((a, a_address), (b, b_address), (cc, c_address)):
        async with proxy_for(config([a_address, b_address])) as proxy, client(proxy) as c:
            assert sorted(tags(await c.call(*[b"q=%d" % i for i in range(8)]))) == [b"A"] * 4 + [b"B"] * 4
            cluster = proxy.clusters["backends"]
            b_connections = b.connections
            plan = await proxy.apply(parse_config(config([b_address, c_address])))
            assert plan.endpoints_changed == ("backends",) and plan.clusters_replaced == ()
            assert proxy.clusters["backends"] is cluster  # the same cluster: counters and connections stay
            got = tags(await c.call(*[b"r=%d" % i for i in range(8)]))
            assert sorted(got) == [b"B"] * 4 + [b"C"] * 4
            assert b.connections == b_connections  # no new connection to the endpoint that stayed
            assert [e.address for e in cluster.endpoints] == [b_address, c_address]
            # A's idle upstream connection closed: the cluster holds B's and C's only.
            await wait_until(lambda: cluster.connection_count() == 2)
            assert cluster.stats.outcomes["success"] == 16


async def test_weights_change_and_the_balancer_follows() -> None:
    async with backends("A", "B") as ((a, a_address), (b, b_address)):
        document = config([{"address": a_address, "weight": 1}, {"address": b_address, "weight": 1}])
        async with proxy_for(document) as proxy, client(proxy) as c:
            assert sorted(tags(await c.call(*[b"q=%d" % i for i in range(4)]))) == [b"A", b"A", b"B", b"B"]
            heavier = config([{"address": a_address, "weight": 3}, {"address": b_address, "weight": 1}])
            await proxy.apply(parse_config(heavier))
            got = tags(await c.call(*[b"r=%d" % i for i in range(8)]))
            assert got.count(b"A") == 6 and got.count(b"B") == 2


async def test_a_config_that_cannot_be_applied_changes_nothing() -> None:
    async with backends("A", "B") as ((a, a_address), (b, b_address)):
        async with proxy_for(two_clusters(a_address, b_address, "a")) as proxy, client(proxy) as c:
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
                document["listeners"].append(
                    {
                        "name": "more",
                        "address": "%s:%d" % taken.getsockname(),
                        "protocol": "simple_line",
                        "routes": [{"cluster": "b"}],
                    }
                )
                with pytest.raises(ConfigError, match="cannot listen on"):
                    await proxy.apply(parse_config(document))
            assert proxy.config is before and proxy.clusters == clusters and list(proxy.addresses) == ["lines"]
            assert proxy.config_state.version == 1 and proxy.config_state.refused == 2
            assert "cannot listen" in str(proxy.config_state.last_error)
            assert tags(await c.call(b"still")) == [b"A"]


async def test_listeners_come_and_go() -> None:
    async with backends("A", "B") as ((a, a_address), (b, b_address)):
        document = two_clusters(a_address, b_address, "a")
        document["drain_timeout"] = 0.5
        async with proxy_for(document) as proxy, client(proxy) as old_client:
            added = two_clusters(a_address, b_address, "a")
            added["drain_timeout"] = 0.5
            added["listeners"].append(
                {"name": "more", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "b"}]}
            )
            plan = await proxy.apply(parse_config(added))
            assert plan.listeners_added == ("more",)
            async with client(proxy, "more") as new_client:
                assert tags(await new_client.call(b"m")) == [b"B"]
                assert tags(await old_client.call(b"l")) == [b"A"]
                # Now only "more" stays: "lines" stops accepting and drains its connection.
                only_more = two_clusters(a_address, b_address, "a")
                only_more["drain_timeout"] = 0.5
                only_more["listeners"] = [added["listeners"][1]]
                address = proxy.addresses["lines"]
                plan = await proxy.apply(parse_config(only_more))
                assert plan.listeners_removed == ("lines",) and "lines" not in proxy.addresses
                with anyio.fail_after(5):
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        while True:
                            await old_client.stream.receive()
                with pytest.raises(OSError):
                    await anyio.connect_tcp(*address.rsplit(":", 1))
                assert tags(await new_client.call(b"m2")) == [b"B"]
                assert [listener.name for listener in proxy.listeners] == ["more"]
