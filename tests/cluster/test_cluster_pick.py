"""Cluster.pick's quick paths must exclude exactly what the full path does.

The common case (one endpoint, or nothing to exclude) skips the exclusion
set and, with one endpoint, the balancer; these check that every reason
to skip an endpoint still applies there: connect backoff, a failed active
health check, an open breaker, a retry's tried endpoints. And Cluster.pool
must never hand out a retiring pool from its last-used shortcut.
"""

from __future__ import annotations

from sota_dispatch.cluster.balancers import Endpoint
from sota_dispatch.cluster.cluster import Cluster
from sota_dispatch.config.health import BreakerConfig
from sota_dispatch.config.model import ClusterConfig, EndpointConfig
from sota_dispatch.protocol.semantics import BoundSemantics
from sota_simple_line import SimpleLineDispatcher

A, B = "127.0.0.1:7001", "127.0.0.1:7002"


def cluster(*addresses: str, **config: object) -> Cluster:
    return Cluster(ClusterConfig("c", tuple(EndpointConfig(a) for a in addresses), **config))  # type: ignore[arg-type]


def test_one_endpoint_is_picked_unless_something_excludes_it() -> None:
    c = cluster(A)
    health = c.health("simple_line")
    (only,) = c.endpoints
    assert c.pick(None, [], 0.0, health) is only
    assert c.pick(None, [only], 0.0, health) is only  # a retry: tried, but there is no other

    health.connect_failed(only, 0.0)  # in backoff
    assert c.pick(None, [], 0.0, health) is None
    assert c.pick(None, [], 1000.0, health) is only  # the backoff ran out

    c.unhealthy.add(only)  # failing its active health checks
    assert c.pick(None, [], 1000.0, health) is None


def test_an_open_breaker_excludes_the_only_endpoint() -> None:
    c = cluster(A, endpoint_breaker=BreakerConfig(consecutive_failures=1))
    health = c.health("simple_line")
    (only,) = c.endpoints
    assert c.pick(None, [], 0.0, health) is only
    for _ in range(3):
        health.outcome(only, False, 0.0)
    assert c.pick(None, [], 0.0, health) is None


def test_several_endpoints_rotate_and_skip_the_excluded() -> None:
    c = cluster(A, B)
    health = c.health("simple_line")
    a, b = c.endpoints
    assert {c.pick(None, [], 0.0, health) for _ in range(4)} == {a, b}
    assert c.pick(None, [a], 0.0, health) is b  # a retry prefers an endpoint not tried
    health.connect_failed(b, 0.0)
    assert {c.pick(None, [], 0.0, health) for _ in range(4)} == {a}


def test_the_last_pool_shortcut_never_returns_a_retiring_pool() -> None:
    c = cluster(A, B)
    semantics = BoundSemantics(SimpleLineDispatcher)
    a, _ = c.endpoints
    first = c.pool(a, semantics)
    assert c.pool(a, semantics) is first
    assert c.set_endpoints([EndpointConfig(B)])  # A leaves: its pool retires
    assert first.retiring
    again = c.pool(a, semantics)  # a retry of a request routed before the change
    assert again is not first
    assert c.pool(Endpoint(A, 1, 0), semantics) is again  # an equal endpoint finds it by key
    c.retire()
    (b,) = c.endpoints
    late = c.pool(b, semantics)
    assert late.retiring  # a retired cluster's new pool serves once, then closes
