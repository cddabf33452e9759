"""The built-in stream filters in front of bolt and dubbo services, over real TCP.

Each request refused by a filter gets the protocol's own error status (the
statuses sota_xprotocol.failures documents); the rest are served by the
echo service behind the proxy. The client is the protocols' own classes
(sota_dispatch.testing.pipelined), many requests in flight on one connection.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from xprotocol_support import dubbo_request, request

from sota_dispatch import FrameSemantics, get_protocol
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import pipelined, running_with_backends
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, bolt, dubbo

pytestmark = pytest.mark.anyio


def bolt_frame() -> bolt.BoltFrame:
    return request(b"x" * 64)


def dubbo_frame() -> dubbo.DubboFrame:
    frame = dubbo_request("x" * 64)
    frame.encode()
    return frame


#: protocol -> (its local echo service, a request, the served status, the status of each refusal)
CASES: dict[str, tuple[Any, Callable[[], Any], int, dict[str, int]]] = {
    "bolt": (
        BoltEchoDispatcher,
        bolt_frame,
        bolt.ResponseStatus.SUCCESS,
        {
            "internal": bolt.ResponseStatus.SERVER_EXCEPTION,
            "rate_limited": bolt.ResponseStatus.SERVER_THREADPOOL_BUSY,
            "denied": bolt.ResponseStatus.ERROR,
        },
    ),
    "dubbo": (
        DubboEchoDispatcher,
        dubbo_frame,
        dubbo.DubboStatus.OK,
        {
            "internal": dubbo.DubboStatus.SERVER_ERROR,
            "rate_limited": dubbo.DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR,
            "denied": dubbo.DubboStatus.BAD_REQUEST,
        },
    ),
}


@pytest.fixture(params=sorted(CASES))
def protocol(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@asynccontextmanager
async def proxied(protocol: str, filters: list[dict[str, Any]]) -> AsyncIterator[Proxy]:
    """A proxy with ``filters`` in front of the protocol's local echo service."""
    listener = {"name": "rpc", "address": "127.0.0.1:0", "protocol": protocol, "stream_filters": filters}
    document = {
        "listeners": [{**listener, "routes": [{"cluster": "up"}]}],
        "clusters": [{"name": "up", "endpoints": ["127.0.0.1:1"]}],
    }
    async with running_with_backends(parse_config(document), {"up": CASES[protocol][0]}) as proxy:
        yield proxy


def semantics(protocol: str) -> type[FrameSemantics]:
    cls = get_protocol(protocol).protocol_class
    assert cls is not None
    return cls


async def test_fault_inject_aborts_20_percent_with_the_protocols_error_status(protocol: str) -> None:
    _, make, served, refused = CASES[protocol]
    count = 10_000
    async with proxied(protocol, [{"type": "fault_inject", "config": {"abort_percent": 20}}]) as proxy:
        answers = await pipelined(proxy.addresses["rpc"], semantics(protocol), [make()] * count, window=200)
    statuses = [answer.status for answer in answers]
    aborted = statuses.count(refused["internal"])
    assert aborted + statuses.count(served) == count
    assert 0.18 * count <= aborted <= 0.22 * count, aborted


async def test_fault_inject_delays_by_the_configured_time(protocol: str) -> None:
    _, make, served, _ = CASES[protocol]
    fault = {"type": "fault_inject", "config": {"delay_percent": 100, "delay": "100ms"}}
    took = []
    async with proxied(protocol, [fault]) as proxy:
        for _ in range(11):
            started = anyio.current_time()
            [answer] = await pipelined(proxy.addresses["rpc"], semantics(protocol), [make()])
            took.append(anyio.current_time() - started)
            assert answer.status == served
    # At least the delay, and far from twice it: each round trip opens a
    # connection too, which a loaded machine (CI's two test processes) can
    # slow by more than 10 ms (one run: a p50 of 111 ms).
    assert 0.1 <= statistics.median(took) <= 0.15, took


async def test_local_rate_limit_serves_its_rate_and_refuses_the_rest_at_once(protocol: str) -> None:
    _, make, served, refused = CASES[protocol]
    limit = {"type": "local_rate_limit", "config": {"tokens_per_second": 200, "burst": 200}}
    count, rate = 4000, 2000.0  # two seconds at 2,000/s
    async with proxied(protocol, [limit]) as proxy:
        started = anyio.current_time()
        answers = await pipelined(proxy.addresses["rpc"], semantics(protocol), [make()] * count, rate=rate)
        took = anyio.current_time() - started
    statuses = [answer.status for answer in answers]
    ok = statuses.count(served)
    assert ok + statuses.count(refused["rate_limited"]) == count  # every request answered, none queued
    # The burst, then the rate. The bucket's clock starts at the first
    # request the proxy reads, which a loaded machine (CI, two test
    # processes) can delay by a few hundred ms after the client starts: the
    # lower bound allows half a second of that (one run saw 551 in 2.0 s).
    assert 180 * (took - 0.5) <= ok - 200 <= 220 * took, (ok, took)


async def test_rbac_denies_by_attribute_and_by_client_address(protocol: str) -> None:
    _, make, served, refused = CASES[protocol]
    cases = [
        ({"attribute": "service", "prefix": "com.example."}, refused["denied"]),
        ({"attribute": "service", "prefix": "org.other."}, served),
        ({"source": "127.0.0.0/8"}, refused["denied"]),
        ({"action": "allow", "source": "127.0.0.1,::1"}, served),
    ]
    for config, status in cases:
        async with proxied(protocol, [{"type": "rbac", "config": config}]) as proxy:
            answers = await pipelined(proxy.addresses["rpc"], semantics(protocol), [make()] * 3)
        assert [answer.status for answer in answers] == [status] * 3, config
