"""Every request the proxy read gets an answer or an error reply, also at shutdown.

With ``--drain-timeout 0.5``, 200 requests held by a backend were once
closed without a word; and the default drain timeout (10 s) was shorter
than the default route timeout (15 s).
"""

from __future__ import annotations

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for

from sota_dispatch.config import config_from_upstreams, parse_config
from sota_dispatch.testing import without_ref

pytestmark = pytest.mark.anyio


async def test_requests_cut_off_by_the_drain_timeout_get_a_timeout_reply() -> None:
    async with backends("A") as up:
        backend, address = up[0]
        document = config([address], route={"timeout": "30s"})
        document["drain_timeout"] = "500ms"
        async with proxy_for(document) as proxy, client(proxy) as c1, client(proxy) as c2:
            await c1.send(b"n=1", *(b"hold=1&n=%d" % i for i in range(2, 101)))
            await c2.send(*(b"hold=1&m=%d" % i for i in range(100)))
            with anyio.fail_after(10):
                while len(backend.seen) < 200:
                    await backend.arrived.wait()
                    backend.arrived = anyio.Event()
            proxy.shutdown()
            start = anyio.current_time()
            first = await c1.replies(100, timeout=10)
            second = await c2.replies(100, timeout=10)
            assert 0.4 < anyio.current_time() - start < 5
    cut = b"error:timeout: the proxy shut down first (drain timeout 0.5s)"
    assert first[0] == b"A:n=1"
    assert [without_ref(r) for r in first[1:]] == [cut] * 99  # in order, each its own reply
    assert [without_ref(r) for r in second] == [cut] * 100


def test_the_default_drain_timeout_outlasts_every_route_timeout() -> None:
    default = config_from_upstreams("simple_line", "127.0.0.1:0", ["127.0.0.1:1"])
    assert default.drain_timeout > default.listeners[0].routes[0].timeout == 15
    document = config(["127.0.0.1:1"], route={"timeout": "40s"})
    assert parse_config(document).drain_timeout == 41
    document["drain_timeout"] = "2s"
    assert parse_config(document).drain_timeout == 2  # what the file says, if it says
