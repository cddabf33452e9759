"""Stream filters in front of a ZMTP service: the rate limit and rbac, over real TCP.

A refused message gets the documented ZMTP error reply: its envelope and
one ``error:`` frame. The client is a DEALER spoken through the protocol's
own class (sota_dispatch.testing.pipelined); each message carries an empty
delimiter frame, so that an error reply keeps the envelope the answer is
matched by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import pipelined, running_with_backends
from sota_zmtp import ZmtpEchoDispatcher

pytestmark = pytest.mark.anyio

MESSAGE = [b"", b"x" * 64]


@asynccontextmanager
async def proxied(filters: list[dict[str, Any]]) -> AsyncIterator[Proxy]:
    """A proxy with ``filters`` in front of a local ZmtpEchoDispatcher."""
    listener = {"name": "zmq", "address": "127.0.0.1:0", "protocol": "zmtp", "stream_filters": filters}
    document = {
        "listeners": [{**listener, "routes": [{"cluster": "up"}]}],
        "clusters": [{"name": "up", "endpoints": ["127.0.0.1:1"]}],
    }
    async with running_with_backends(parse_config(document), {"up": ZmtpEchoDispatcher}) as proxy:
        yield proxy


def body(answer: list[bytes]) -> bytes:
    return answer[-1]


async def test_local_rate_limit_serves_its_rate_and_refuses_the_rest_at_once() -> None:
    limit = {"type": "local_rate_limit", "config": {"tokens_per_second": 200, "burst": 200}}
    count = 4000  # two seconds at 2,000/s
    async with proxied([limit]) as proxy:
        started = anyio.current_time()
        answers = await pipelined(proxy.addresses["zmq"], ZmtpEchoDispatcher, [MESSAGE] * count, rate=2000)
        took = anyio.current_time() - started
    bodies = [body(a) for a in answers]
    served = bodies.count(MESSAGE[-1])
    refused = sum(b.startswith(b"error:rate limited: over 200 requests/s; ref ") for b in bodies)
    assert served + refused == count  # every message answered, none queued
    # The burst, then the rate; the bucket's clock starts at the first request
    # the proxy reads, which a loaded machine can delay (up to 0.5 s allowed).
    assert 180 * (took - 0.5) <= served - 200 <= 220 * took, (served, took)


async def test_rbac_denies_by_client_address_with_an_error_frame() -> None:
    for config, denied in [({"source": "127.0.0.0/8"}, True), ({"source": "10.0.0.0/8"}, False)]:
        async with proxied([{"type": "rbac", "config": config}]) as proxy:
            answers = await pipelined(proxy.addresses["zmq"], ZmtpEchoDispatcher, [MESSAGE] * 2)
        for answer in answers:
            assert answer[-2] == b""  # the envelope came back
            assert body(answer).startswith(b"error:denied: ref ") is denied, (config, answer)
