"""Resilience through the proxy, with real backends on 127.0.0.1: the
per-endpoint breaker, outlier ejection, Envoy's cluster thresholds.

A backend fails a request by dropping its connection (``close=1``, or
every request while ``failing``): the client sees an upstream-reset reply,
and the proxy counts a failure for that endpoint.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for, tags, until

from sota_dispatch.cluster.health import BreakerState, EndpointBreaker
from sota_dispatch.testing import ManualClock, free_port, without_ref
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio


def state_of(breaker: EndpointBreaker) -> BreakerState:
    return breaker.state  # read through a call, so the type checker does not narrow it


NO_ENDPOINT = b"error:no healthy upstream"


async def test_breaker_closed_open_half_open_closed_open_again() -> None:
    breaker = {"consecutive_failures": 2, "min_requests": 100, "open_timeout": "300ms", "half_open_requests": 1}
    clock = ManualClock()  # the test moves the proxy's time
    async with backends("A") as up, proxy_for(config([up[0][1]], endpoint_breaker=breaker), clock) as proxy:
        cluster = proxy.clusters["backends"]
        breakers = cluster.health("simple_line").breakers
        assert breakers is not None
        [state] = breakers.values()
        async with client(proxy) as c:
            assert await c.call(b"n=1") == [b"A:n=1"]  # closed
            for _ in range(3):  # three failures in a row: more than 2
                [reply] = await c.call(b"close=1")
                assert reply.startswith(b"error:upstream reset")
            assert state_of(state) is BreakerState.OPEN
            start = anyio.current_time()
            assert [without_ref(r) for r in await c.call(b"n=2")] == [NO_ENDPOINT]  # open: refused at once
            assert anyio.current_time() - start < 0.2
            clock.advance(0.29)
            assert [without_ref(r) for r in await c.call(b"n=2")] == [NO_ENDPOINT]  # still open
            clock.advance(0.02)  # the open timeout passes
            assert await c.call(b"n=3") == [b"A:n=3"]  # the half-open probe succeeds ...
            assert state_of(state) is BreakerState.CLOSED  # ... and closes it
            for _ in range(3):
                await c.call(b"close=1")
            assert state_of(state) is BreakerState.OPEN
            clock.advance(0.31)
            [reply] = await c.call(b"close=1")  # the probe fails ...
            assert reply.startswith(b"error:upstream reset")
            assert state_of(state) is BreakerState.OPEN  # ... and opens it again
            assert [without_ref(r) for r in await c.call(b"n=4")] == [NO_ENDPOINT]
    assert state.transitions == {BreakerState.OPEN: 3, BreakerState.HALF_OPEN: 2, BreakerState.CLOSED: 1}


async def test_a_failing_backend_is_ejected_and_returns_after_it_recovers() -> None:
    outlier = {"consecutive_failures": 3, "base_ejection_time": "500ms", "max_ejection_percent": 50}
    retry = {"attempts": 2, "retry_on": ["reset"], "idempotent": True}
    async with backends("A", "B") as up:
        b = up[1][0]
        document = config([address for _, address in up], outlier_detection=outlier, route={"retry": retry})
        clock = ManualClock()
        async with proxy_for(document, clock) as proxy, client(proxy) as c:
            detector = proxy.clusters["backends"].health("simple_line").outliers
            assert detector is not None
            b.failing = True
            replies = [reply for i in range(20) for reply in await c.call(b"n=%d" % i)]
            assert tags(replies) == [b"A"] * 20  # B's failures were retried on A
            assert len(b.seen) == 3  # then B was ejected: no more traffic
            assert len(detector.ejected) == 1
            b.failing = False  # B recovers ...
            clock.advance(0.45)
            replies = [reply for i in range(4) for reply in await c.call(b"k=%d" % i)]
            assert tags(replies) == [b"A"] * 4  # still ejected
            clock.advance(0.1)  # ... and its ejection time passes
            replies = [reply for i in range(4) for reply in await c.call(b"m=%d" % i)]
            assert set(tags(replies)) == {b"A", b"B"}  # it gets traffic again


async def test_a_cluster_never_ejects_every_endpoint() -> None:
    outlier = {"consecutive_failures": 2, "base_ejection_time": "10s", "max_ejection_percent": 100}
    async with backends("A", "B") as up:
        document = config([address for _, address in up], outlier_detection=outlier)
        async with proxy_for(document) as proxy, client(proxy) as c:
            for backend, _ in up:
                backend.failing = True
            for i in range(12):
                [reply] = await c.call(b"n=%d" % i)
                assert reply.startswith(b"error:upstream reset")  # errors, but always an endpoint to try
            detector = proxy.clusters["backends"].health("simple_line").outliers
            assert detector is not None
            assert len(detector.ejected) == 1


def two_clusters(a: str, b: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "lines",
                "address": "127.0.0.1:0",
                "protocol": "simple_line",
                "routes": [
                    {"match": [{"attribute": "to", "exact": "a"}], "cluster": "a"},
                    {"cluster": "b"},
                ],
            }
        ],
        "clusters": [
            {"name": "a", "endpoints": [a], "circuit_breakers": thresholds},
            {"name": "b", "endpoints": [b]},
        ],
    }


async def test_at_max_requests_a_client_waits_its_turn_while_others_flow() -> None:
    # Envoy's max_requests guards the upstream: a client over it is not
    # refused but not read from until there is room (or its deadline).
    async with backends("A", "B") as up:
        (a, a_address), (_, b_address) = up
        async with (
            proxy_for(two_clusters(a_address, b_address, {"max_requests": 2})) as proxy,
            client(proxy) as c1,
            client(proxy) as c2,
            client(proxy) as c3,
        ):
            await c1.send(b"to=a&hold=1&n=1", b"to=a&hold=1&n=2")  # two in flight on cluster a
            await a.wait_seen(2)
            await c2.send(b"to=a&n=3")  # waits for room on cluster a
            assert await c3.call(*(b"n=%d" % i for i in range(10))) == [b"B:n=%d" % i for i in range(10)]
            with anyio.move_on_after(0.3):
                await c2.replies(1)
                pytest.fail("a request over max_requests was answered before there was room")
            assert len(a.seen) == 2  # and not sent
            a.release.set()
            assert await c1.replies(2) == [b"A:to=a&hold=1&n=1", b"A:to=a&hold=1&n=2"]
            assert await c2.replies(1) == [b"A:to=a&n=3"]  # its turn came: a real answer
        assert proxy.clusters["a"].overflows == 0


async def test_at_max_requests_a_request_overflows_only_at_its_deadline() -> None:
    async with backends("A", "B") as up:
        (a, a_address), (_, b_address) = up
        document = two_clusters(a_address, b_address, {"max_requests": 1})
        routes = document["listeners"][0]["routes"]
        routes[0]["timeout"] = "400ms"
        routes.insert(0, {"match": [{"attribute": "slow", "present": True}], "cluster": "a", "timeout": "10s"})
        async with proxy_for(document) as proxy, client(proxy) as c1, client(proxy) as c2:
            await c1.send(b"slow=1&hold=1")  # takes cluster a's one slot for long
            await a.wait_seen(1)
            start = anyio.current_time()
            assert [without_ref(r) for r in await c2.call(b"to=a&n=2")] == [b"error:overflow"]
            assert 0.3 < anyio.current_time() - start < 3  # at its deadline, not at once
            a.release.set()
            assert await c1.replies(1) == [b"A:slow=1&hold=1"]
            assert await c2.call(b"to=a&n=3") == [b"A:to=a&n=3"]
        assert proxy.clusters["a"].overflows == 1


async def test_max_pending_requests_overflow_at_once() -> None:
    async with backends("A", "B") as up:
        (a, a_address), (_, b_address) = up
        document = two_clusters(a_address, b_address, {"max_pending_requests": 1, "max_connections": 1})
        document["clusters"][0]["pool"] = {"mode": "exclusive", "shared": True}
        async with proxy_for(document) as proxy, client(proxy) as c1, client(proxy) as c2, client(proxy) as c3:
            await c1.send(b"to=a&hold=1")  # the one connection allowed is busy
            await a.wait_seen(1)
            await c2.send(b"to=a&n=2")  # waits: the one pending request allowed
            # Queued before n=3 is sent (trio runs ready tasks in a random order).
            await until(lambda: proxy.clusters["a"].queued_requests() == 1)
            assert [without_ref(r) for r in await c3.call(b"to=a&n=3")] == [b"error:overflow"]
            a.release.set()
            assert await c1.replies(1) == [b"A:to=a&hold=1"]
            assert await c2.replies(1) == [b"A:to=a&n=2"]


async def test_active_protocol_checks_take_a_failing_endpoint_out_and_back_in() -> None:
    check = {
        "interval": "100ms",
        "timeout": "500ms",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
        "send": "health=1",
    }
    async with backends("A", "B") as up:
        b = up[1][0]
        document = config([address for _, address in up], health_check=check)
        async with proxy_for(document) as proxy, client(proxy) as c:
            cluster = proxy.clusters["backends"]
            await until(lambda: len(b.seen) >= 2, 10)  # B answers its probes: healthy
            assert not cluster.unhealthy
            b.failing = True  # B still accepts connections, but fails every request
            await until(lambda: bool(cluster.unhealthy), 10)
            seen = len(b.seen)
            replies = await c.call(*(b"n=%d" % i for i in range(20)))
            assert tags(replies) == [b"A"] * 20  # no client request reached B
            assert all(line == b"health=1" for line in b.seen[seen:])
            assert cluster.describe()["endpoints"][1]["health"] == "unhealthy"
            b.failing = False
            await until(lambda: not cluster.unhealthy, 10)
            assert set(tags(await c.call(*(b"m=%d" % i for i in range(4))))) == {b"A", b"B"}
            assert cluster.stats.health_check_failures >= 2


async def test_tcp_checks_find_an_endpoint_nobody_listens_on() -> None:
    check = {"kind": "tcp", "interval": "100ms", "timeout": "300ms", "unhealthy_threshold": 1}
    async with backends("A") as up:
        dead = f"127.0.0.1:{free_port()}"
        async with proxy_for(config([up[0][1], dead], health_check=check)) as proxy, client(proxy) as c:
            cluster = proxy.clusters["backends"]
            await until(lambda: len(cluster.unhealthy) == 1, 10)
            assert [e.address for e in cluster.unhealthy] == [dead]
            assert cluster.stats.connect_failures == 0  # no request found it dead: the check did
            assert tags(await c.call(*(b"n=%d" % i for i in range(6)))) == [b"A"] * 6


async def test_a_busy_endpoint_cannot_starve_another_of_connections() -> None:
    async with backends("A", "B") as up:
        endpoints = [{"address": up[0][1], "weight": 8}, {"address": up[1][1], "weight": 1}]
        document = config(
            endpoints, circuit_breakers={"max_connections": 2}, route={"timeout": "2s"}, pool={"mode": "exclusive"}
        )
        async with proxy_for(document) as proxy, client(proxy) as c:
            replies = await c.call(*(b"n=%d" % i for i in range(18)))
    assert set(tags(replies)) == {b"A", b"B"}  # B got its connection despite the cap


async def test_a_plugin_bug_in_a_health_probe_fails_the_check_not_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: object, frame: bytes) -> bool:
        raise UnicodeDecodeError("utf-8", frame, 0, 1, "a plugin bug")

    monkeypatch.setattr(SimpleLineDispatcher, "health_probe_ok", classmethod(broken))
    check = {"interval": "100ms", "send": "ping=1", "unhealthy_threshold": 1}
    async with backends("A") as up, proxy_for(config([up[0][1]], health_check=check)) as proxy:
        cluster = proxy.clusters["backends"]
        await until(lambda: bool(cluster.unhealthy), 10)  # the check failed, the proxy lives
        async with client(proxy) as c:
            assert [without_ref(r) for r in await c.call(b"n=1")] == [NO_ENDPOINT]
