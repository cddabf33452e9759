"""Well-behaved pipelining clients are never refused, and none starves the others.

Through the README's default proxy (``--upstream``), 20 connections
pipelining 500 requests each once got ``overflow: max_requests reached``
for more than half of them: a client's own in-flight bound equalled the
cluster's ``max_requests``, so one deep client took the whole cluster. Now
each client has a bound well below the cluster's, and a cluster at its
limit stops reading from the clients that want it (backpressure, in turn)
instead of refusing them.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from simple_line_support import client, proxy_for

from sota_dispatch.config import config_from_upstreams
from sota_dispatch.logs import RateLimitedLog
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import running_proxy, serving
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio


async def pipeline_all(proxy: Proxy, clients: int, requests: int) -> dict[int, list[bytes]]:
    answers: dict[int, list[bytes]] = {}

    async def one(k: int) -> None:
        async with client(proxy, "main") as c:
            await c.send(*(b"c=%d&n=%d" % (k, i) for i in range(requests)))
            answers[k] = await c.replies(requests, timeout=60)

    async with anyio.create_task_group() as tg:
        for k in range(clients):
            tg.start_soon(one, k)
    return answers


def expected(k: int, requests: int) -> list[bytes]:
    return [b'receive:{"c":["%d"],"n":["%d"]}' % (k, i) for i in range(requests)]


@pytest.mark.parametrize("clients", [20, 200])
async def test_pipelining_clients_through_the_default_proxy_all_get_their_answers(
    clients: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(SimpleLineDispatcher) as backend:
        assert backend.address is not None
        config = config_from_upstreams("simple_line", "127.0.0.1:0", [backend.address])
        async with running_proxy(config) as proxy:
            answers = await pipeline_all(proxy, clients, 500)
            cluster = proxy.clusters["upstream"]
            assert cluster.overflows == 0
            assert cluster.stats.outcomes == {"success": clients * 500}
    for k in range(clients):
        assert answers[k] == expected(k, 500), k
    assert "overflow" not in caplog.text


async def test_a_deep_client_does_not_starve_the_others() -> None:
    async with serving(SimpleLineDispatcher) as backend:
        assert backend.address is not None
        config = config_from_upstreams("simple_line", "127.0.0.1:0", [backend.address])
        async with running_proxy(config) as proxy, client(proxy, "main") as deep:
            # A client that pipelines 20,000 requests and reads nothing yet.
            await deep.send(*(b"deep=%d" % i for i in range(20_000)))
            with anyio.fail_after(10):
                others = await pipeline_all(proxy, 20, 50)
            assert all(others[k] == expected(k, 50) for k in range(20))
            replies = await deep.replies(20_000, timeout=60)
            assert replies[-1] == b'receive:{"deep":["19999"]}'


async def test_overflow_is_logged_at_warning_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(SimpleLineDispatcher) as backend:
        assert backend.address is not None
        document = {
            "listeners": [
                {"name": "main", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "c"}]}
            ],
            "clusters": [
                {
                    "name": "c",
                    "endpoints": [backend.address],
                    "pool": {"shared": True, "connections": 1, "max_pending": 1},
                    "connect_timeout": "5s",
                }
            ],
        }
        async with proxy_for(document) as proxy:
            async with client(proxy, "main") as c:
                replies = await c.call(*(b"n=%d" % i for i in range(200)))
            overflowed = [r for r in replies if r.startswith(b"error:overflow")]
            assert overflowed  # the one pending slot cannot take a burst before the connect
            assert proxy.clusters["c"].overflows == 0  # a pool's queue, not a cluster threshold
    warnings = [r for r in caplog.records if "overflow" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one line for the storm
    assert warnings[0].levelno == logging.WARNING


def test_a_rate_limited_log_counts_what_it_did_not_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limited = RateLimitedLog(logging.getLogger("test.limited"), logging.INFO, interval=60, burst=2)
    assert [limited.log("k", "event %d", i) for i in range(5)] == [True, True, False, False, False]
    assert limited.log("other", "another key") is True
    assert [r.getMessage() for r in caplog.records] == ["event 0", "event 1", "another key"]
    limited.interval = 0  # the next window: the suppressed ones are reported with the next line
    assert limited.log("k", "event %d", 5) is True
    assert caplog.records[-1].getMessage() == "event 5 (and 3 more like it not logged)"
