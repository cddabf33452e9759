"""Long-lived bolt and dubbo clients across a park of their idle connection.

dubbo-ssl-python 0.9.6 keeps one connection per address and reuses it
call after call (so does a SOFA client; anthunder's sync client does not,
so the core's bolt client plays one); between calls the echo service parks
it (``park_idle_after``), and the next call is served on the same TCP
connection from the parked state, as if nothing happened. Through the
proxy too (its listener parks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from xprotocol_support import DUBBO_CALL_TIMEOUT, close_dubbo_connection, request

from sota_dispatch import DispatcherFactory, Server
from sota_dispatch.config import parse_config
from sota_dispatch.testing import running_proxy
from sota_xprotocol import BoltDispatcher, BoltEchoDispatcher, DubboEchoDispatcher

pytestmark = pytest.mark.anyio

PARK = 0.05


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Bounded wait for state the server reaches on its own clock (its parking sweeps)."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - no event to wait on, by design
            await anyio.sleep(0.005)


def parked(server: Server) -> Callable[[], bool]:
    return lambda: server.parked_connections == 1 and not server.active_connections


@asynccontextmanager
async def echo(factory: DispatcherFactory, protocol: str, via_proxy: bool) -> AsyncIterator[tuple[str, Server]]:
    """The echo service (parking), or a proxy (parking) in front of one;
    the address to call and the server whose connection parks."""
    async with anyio.create_task_group() as tg:
        service = Server(factory, "127.0.0.1:0", drain_timeout=1, park_idle_after=None if via_proxy else PARK)
        address = await tg.start(service.serve)
        if not via_proxy:
            yield address, service
        else:
            document = {
                "listeners": [
                    {
                        "name": "rpc",
                        "address": "127.0.0.1:0",
                        "protocol": protocol,
                        "limits": {"park_idle_after": PARK},
                        "routes": [{"cluster": "echo"}],
                    }
                ],
                "clusters": [{"name": "echo", "endpoints": [address]}],
            }
            async with running_proxy(parse_config(document)) as proxy:
                yield proxy.addresses["rpc"], proxy.listeners[0].server
        service.shutdown()


@pytest.mark.parametrize("via_proxy", [False, True], ids=["service", "proxy"])
async def test_a_long_lived_bolt_connection_calls_across_parks(via_proxy: bool) -> None:
    """A SOFA-style client: one connection, requests multiplexed by id, idle
    between calls (anthunder's sync client opens a connection per call, so
    the core's own bolt client plays it)."""
    async with (
        echo(BoltEchoDispatcher, "bolt", via_proxy) as (address, server),
        await BoltDispatcher.connect(address) as client,
    ):
        for n in range(3):
            bodies = [b"call %d.%d " % (n, k) + b"x" * (k * 3000) for k in range(n + 1)]
            async with anyio.create_task_group() as calls:  # several in flight at once

                async def call(body: bytes) -> None:
                    answer = await client.request(request(body))
                    assert answer.content == body

                for body in bodies:
                    calls.start_soon(call, body)
            await until(parked(server))
        assert server.connections_total == 1  # the same connection, parked three times
        assert server.connections_parked >= 3


@pytest.mark.parametrize("via_proxy", [False, True], ids=["service", "proxy"])
async def test_dubbo_ssl_python_calls_across_parks_on_one_connection(via_proxy: bool) -> None:
    from dubbo_ssl.client import DubboClient

    async with echo(DubboEchoDispatcher, "dubbo", via_proxy) as (address, server):
        client = DubboClient("com.example.EchoService", group="g1", version="1.0.0", host=address)

        def call(argument: Any) -> Any:
            return client.call("echo", (argument,), timeout=DUBBO_CALL_TIMEOUT)

        try:
            for argument in ["first", 42, ["a", "b"]]:
                answer = await anyio.to_thread.run_sync(call, argument)
                assert answer == argument
                await until(parked(server))
            assert server.connections_total == 1
        finally:
            await anyio.to_thread.run_sync(close_dubbo_connection, address)
