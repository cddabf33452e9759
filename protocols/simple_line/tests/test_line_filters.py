"""The built-in stream filters in front of a simple_line service, over real TCP.

Refused requests get simple_line's own ``error:`` line naming the failure
(and a reference to quote); the rest are served by the query service behind
the proxy. The client pipelines many queries on one connection
(sota_dispatch.testing.pipelined): answers come back in request order.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import pipelined, running_with_backends
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio

QUERY = b"service=orders&user=u1\r\n"
SERVED = b'receive:{"service":["orders"],"user":["u1"]}\r\n'


@asynccontextmanager
async def proxied(filters: list[dict[str, Any]]) -> AsyncIterator[Proxy]:
    """A proxy with ``filters`` in front of a local SimpleLineDispatcher."""
    listener = {"name": "lines", "address": "127.0.0.1:0", "protocol": "simple_line", "stream_filters": filters}
    document = {
        "listeners": [{**listener, "routes": [{"cluster": "up"}]}],
        "clusters": [{"name": "up", "endpoints": ["127.0.0.1:1"]}],
    }
    async with running_with_backends(parse_config(document), {"up": SimpleLineDispatcher}) as proxy:
        yield proxy


async def test_fault_inject_aborts_20_percent_with_error_lines() -> None:
    count = 10_000
    async with proxied([{"type": "fault_inject", "config": {"abort_percent": 20}}]) as proxy:
        answers = await pipelined(proxy.addresses["lines"], SimpleLineDispatcher, [QUERY] * count, window=200)
    aborted = sum(a.startswith(b"error:internal error: fault injected; ref ") for a in answers)
    assert aborted + answers.count(SERVED) == count
    assert 0.18 * count <= aborted <= 0.22 * count, aborted


async def test_fault_inject_delays_by_the_configured_time() -> None:
    took = []
    async with proxied([{"type": "fault_inject", "config": {"delay_percent": 100, "delay": "100ms"}}]) as proxy:
        for _ in range(11):
            started = anyio.current_time()
            assert await pipelined(proxy.addresses["lines"], SimpleLineDispatcher, [QUERY]) == [SERVED]
            took.append(anyio.current_time() - started)
    # The p50 within 25% of the delay: applied once, not skipped, not doubled
    # (a busy CI machine adds a few ms of scheduling).
    assert 0.1 <= statistics.median(took) <= 0.125, took


async def test_local_rate_limit_serves_its_rate_and_refuses_the_rest_at_once() -> None:
    limit = {"type": "local_rate_limit", "config": {"tokens_per_second": 200, "burst": 200}}
    count = 4000  # two seconds at 2,000/s
    async with proxied([limit]) as proxy:
        started = anyio.current_time()
        answers = await pipelined(proxy.addresses["lines"], SimpleLineDispatcher, [QUERY] * count, rate=2000)
        took = anyio.current_time() - started
    refused = sum(a.startswith(b"error:rate limited: over 200 requests/s; ref ") for a in answers)
    served = answers.count(SERVED)
    assert served + refused == count  # every request answered, none queued
    # The burst, then the rate; the bucket's clock starts at the first request
    # the proxy reads, which a loaded machine can delay (up to 0.5 s allowed).
    assert 180 * (took - 0.5) <= served - 200 <= 220 * took, (served, took)


async def test_rbac_denies_by_query_key_and_by_client_address() -> None:
    for config, denied in [
        ({"attribute": "service", "exact": "orders"}, True),
        ({"attribute": "service", "regex": "pay.*"}, False),
        ({"attribute": "user", "present": "true"}, True),
        ({"source": "127.0.0.1"}, True),
        ({"action": "allow", "source": "10.0.0.0/8"}, True),
        ({"action": "allow", "source": "127.0.0.0/8"}, False),
    ]:
        async with proxied([{"type": "rbac", "config": config}]) as proxy:
            answers = await pipelined(proxy.addresses["lines"], SimpleLineDispatcher, [QUERY] * 2)
        expected = [a.startswith(b"error:denied: ref ") for a in answers]
        assert expected == [denied, denied], (config, answers)
        if not denied:
            assert answers == [SERVED, SERVED]
