"""The proxy's idle client connections park (``limits.park_idle_after``).

A parked client connection gives back its task, buffers and its own
upstream connection (simple_line's pipelined pools are per client), and is
served from where it was when it speaks again. A request in flight is
never parked over; many clients pausing at random still get only their
own answers. The backends and helpers are those of test_line_proxy.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from simple_line_support import Client, backends, config, proxy_for, until

from sota_dispatch.cli.args import parser
from sota_dispatch.cli.build import ServicePlan, proxy_config
from sota_dispatch.config import parse_config
from sota_dispatch.protocol.server import DEFAULT_PARK_IDLE_AFTER
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import connect

pytestmark = pytest.mark.anyio


def parking(endpoint: str, after: str = "50ms") -> dict[str, Any]:
    document = config([endpoint])
    document["listeners"][0]["limits"] = {"park_idle_after": after}
    return document


def parked(proxy: Proxy, count: int = 1) -> Callable[[], bool]:
    server = proxy.listeners[0].server
    return lambda: server.parked_connections == count and not server.active_connections


async def test_a_parked_client_frees_its_upstream_connection_and_is_served_again() -> None:
    async with backends("A") as up, proxy_for(parking(up[0][1])) as proxy:
        backend = up[0][0]
        async with await connect(proxy.addresses["lines"]) as stream:
            c = Client(stream)
            assert await c.call(b"n=1") == [b"A:n=1"]
            await until(parked(proxy))
            await backend.wait_closed(1)  # its own upstream connection went with it
            assert await c.call(b"n=2", b"n=3") == [b"A:n=2", b"A:n=3"]  # on a new one
            assert backend.connections == 2
            described = proxy.listeners[0].describe("accepting")
            assert described["parks"] >= 1
            assert described["connections_total"] == 1  # one client connection all along
            await until(parked(proxy))
            assert proxy.listeners[0].describe("accepting")["connections_parked"] == 1


async def test_a_request_in_flight_is_never_parked_over() -> None:
    async with backends("A") as up, proxy_for(parking(up[0][1])) as proxy:
        backend = up[0][0]
        server = proxy.listeners[0].server
        async with await connect(proxy.addresses["lines"]) as stream:
            c = Client(stream)
            await c.send(b"hold=1")
            await backend.wait_seen(1)
            parking_ = server._parking
            assert parking_ is not None
            start = parking_.sweeps
            await until(lambda: parking_.sweeps >= start + 4)  # well past park_idle_after
            assert server.parked_connections == 0
            assert server.active_connections == 1
            backend.release.set()
            assert await c.replies(1) == [b"A:hold=1"]


async def test_clients_that_pause_at_random_get_only_their_own_answers() -> None:
    async with backends("A") as up, proxy_for(parking(up[0][1], "5ms")) as proxy:
        rng = random.Random(7)

        async def one(n: int) -> None:
            async with await connect(proxy.addresses["lines"]) as stream:
                c = Client(stream)
                for i in range(15):
                    if rng.random() < 0.5:
                        await anyio.sleep(rng.random() * 0.02)
                    lines = [b"c=%d&i=%d&k=%d" % (n, i, k) for k in range(rng.randint(1, 3))]
                    assert await c.call(*lines) == [b"A:" + line for line in lines]

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(one, n)
        assert proxy.listeners[0].server.connections_parked > 8


async def test_a_listener_parks_after_the_default_unless_told_never() -> None:
    async with backends("A") as up:
        async with proxy_for(config([up[0][1]])) as proxy:
            assert proxy.listeners[0].server.park_idle_after == DEFAULT_PARK_IDLE_AFTER == 30.0
        async with proxy_for(parking(up[0][1], "0")) as proxy:
            assert proxy.listeners[0].server.park_idle_after is None


def test_the_serve_command_parks_a_local_service_after_the_default_unless_told_never() -> None:
    def built(*flags: str) -> Any:
        return ServicePlan.from_args(parser().parse_args(["--protocol", "simple_line", *flags])).build()

    assert built().park_idle_after == DEFAULT_PARK_IDLE_AFTER
    assert built("--park-idle-after", "0").park_idle_after is None
    assert built("--park-idle-after", "2.5").park_idle_after == 2.5
    # Through the proxy the command builds: the listener's default, or never.
    upstream = ["--upstream", "127.0.0.1:1"]
    assert proxy_config(parser().parse_args(["--protocol", "simple_line", *upstream])) is not None
    for flags, limit in (([], None), (["--park-idle-after", "0"], 0.0)):
        document = proxy_config(parser().parse_args(["--protocol", "simple_line", *upstream, *flags]))
        assert document is not None
        assert document.listeners[0].limits.park_idle_after == limit


async def test_a_reload_turns_parking_on_and_off() -> None:
    async with backends("A") as up, proxy_for(parking(up[0][1], "0")) as proxy:
        server = proxy.listeners[0].server
        assert server.park_idle_after is None
        async with await connect(proxy.addresses["lines"]) as stream:
            c = Client(stream)
            assert await c.call(b"n=1") == [b"A:n=1"]
            await proxy.apply(parse_config(parking(up[0][1])))  # on: the open connection parks too
            await until(parked(proxy))
            assert await c.call(b"n=2") == [b"A:n=2"]
            await proxy.apply(parse_config(parking(up[0][1], "0")))  # off again
            assert server.park_idle_after is None
            parking_ = server._parking
            assert parking_ is not None
            start = parking_.sweeps
            assert await c.call(b"n=3") == [b"A:n=3"]
            with anyio.move_on_after(0.3):  # several former sweep periods: none runs, none parks
                await until(lambda: parking_.sweeps > start or server.parked_connections > 0)
            assert parking_.sweeps == start
            assert server.parked_connections == 0
            assert server.active_connections == 1
