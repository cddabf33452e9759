"""Real third-party peers against our echo services (anthunder 0.8.1, dubbo-ssl-python 0.9.6).

Both libraries are blocking, so each runs in a worker thread while the
server runs in the test's event loop, on asyncio and on trio. Their quirks
(xprotocol-notes section 3) are avoided: anthunder's sync Client needs a
span context; dubbo-ssl-python cannot send maps or None, and must not be
asked for dubbo version 2.0.x.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest

from sota_dispatch import DispatcherFactory, testing
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, XProtocolEchoDispatcher

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(factory: DispatcherFactory) -> AsyncIterator[tuple[str, int]]:
    async with testing.serving(factory) as server:
        assert server.address is not None
        host, _, port = server.address.rpartition(":")
        yield host, int(port)


def anthunder_calls(host: str, port: int, bodies: list[bytes]) -> list[bytes]:
    from anthunder import SERVICE_MAP, Client
    from mytracer import SpanContext

    service = f"com.example.EchoService{port}:1.0"  # SERVICE_MAP entries cannot be changed
    SERVICE_MAP[service] = (host, port)
    client = Client("sota-tests")
    return [client.invoke_sync(service, "echo", body, spanctx=SpanContext(), timeout_ms=5000) for body in bodies]


@pytest.mark.parametrize("factory", [BoltEchoDispatcher, XProtocolEchoDispatcher], ids=["bolt", "xprotocol"])
async def test_anthunder_sync_client_gets_its_content_back(factory: DispatcherFactory) -> None:
    bodies = [b"hello bolt", b"", b"x" * 70_000]
    async with serving(factory) as (host, port):
        assert await anyio.to_thread.run_sync(anthunder_calls, host, port, bodies) == bodies


ARGUMENTS: list[Any] = ["hello", 42, -7, 2**40, 1.5, True, False, [1, 2, 3], ["a", "b"], "\u4e2d\u6587", "q" * 5000]


def dubbo_calls(host: str, port: int, arguments: list[Any], concurrency: int = 1) -> list[Any]:
    from dubbo_ssl.client import DubboClient

    client = DubboClient("com.example.EchoService", group="g1", version="1.0.0", host=f"{host}:{port}")
    try:
        if concurrency == 1:
            return [client.call("echo", (argument,)) for argument in arguments]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda a: client.call("echo", (a,)), arguments))
    finally:
        # The library keeps one connection per host in a global pool and
        # never closes it; close ours so the server need not wait for it.
        from dubbo_ssl.connection.connections import connection_pool

        connection = connection_pool._connection_pool.get(f"{host}:{port}")
        if connection is not None:
            connection_pool._delete_connection(connection)
            connection.close()


@pytest.mark.parametrize("factory", [DubboEchoDispatcher, XProtocolEchoDispatcher], ids=["dubbo", "xprotocol"])
async def test_dubbo_ssl_python_gets_each_argument_back(factory: DispatcherFactory) -> None:
    async with serving(factory) as (host, port):
        assert await anyio.to_thread.run_sync(dubbo_calls, host, port, ARGUMENTS) == ARGUMENTS


async def test_dubbo_ssl_python_50_concurrent_calls_on_one_connection() -> None:
    arguments = [f"call-{i}" for i in range(50)]
    connections = 0

    class Counting(DubboEchoDispatcher):
        async def on_connect(self) -> None:
            nonlocal connections
            connections += 1

    async with serving(Counting) as (host, port):
        assert await anyio.to_thread.run_sync(dubbo_calls, host, port, arguments, 50) == arguments
    assert connections == 1
