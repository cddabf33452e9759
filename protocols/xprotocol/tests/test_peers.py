"""Real third-party peers against our echo services (anthunder 0.8.1, dubbo-ssl-python 0.9.6).

Both libraries are blocking, so each runs in a worker thread while the
server runs in the test's event loop, on asyncio and on trio. Their quirks
(xprotocol-notes section 3) are avoided: anthunder's sync Client needs a
span context; dubbo-ssl-python cannot send maps or None, and must not be
asked for dubbo version 2.0.x.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import threading
import weakref
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


#: Seconds a dubbo-ssl-python call may wait for its answer. The library's
#: default is forever: were its reader thread ever lost, a test would hang
#: (a worker thread cannot be cancelled) instead of failing.
DUBBO_CALL_TIMEOUT = 30


def close_dubbo_connection(address: str, pool: Any = None) -> None:
    """Close dubbo-ssl-python's pooled connection to ``address`` (``host:port``)
    in a way its reader thread survives.

    The library (0.9.6) keeps one connection per address in a pool (by
    default its global ``connection_pool``) and never closes them. One
    thread per pool reads them all, forever: it select()s on the pool's
    connections and reads the ready ones. Closing a socket that thread is
    about to select() on kills it: select() gets -1 from the closed
    socket's fileno() (a ValueError) or a descriptor closed under it (EBADF,
    on which the loop quietly ends). Every later call in the process then
    waits for an answer nobody reads (a run of the suite hung so).

    So: take the connection out of the pool (in a new dict: the library's
    heartbeat thread may be iterating the old one), shut the socket down,
    which wakes a select() holding it with the end of stream the library's
    own close path handles, and close its descriptor only once nothing
    refers to the connection any more, the reader thread included.
    """
    if pool is None:
        from dubbo_ssl.connection.connections import connection_pool

        pool = connection_pool
    with pool._conn_lock:
        connection = pool._connection_pool.get(address)
        if connection is None:
            return
        pool._connection_pool = {key: value for key, value in pool._connection_pool.items() if key != address}
    sock: socket.socket = connection._Connection__sock
    weakref.finalize(connection, sock.close)
    with contextlib.suppress(OSError):  # the peer may have gone already
        sock.shutdown(socket.SHUT_RDWR)


def dubbo_calls(host: str, port: int, arguments: list[Any], concurrency: int = 1) -> list[Any]:
    from dubbo_ssl.client import DubboClient

    address = f"{host}:{port}"
    client = DubboClient("com.example.EchoService", group="g1", version="1.0.0", host=address)

    def call(argument: Any) -> Any:
        return client.call("echo", (argument,), timeout=DUBBO_CALL_TIMEOUT)

    try:
        if concurrency == 1:
            return [call(argument) for argument in arguments]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(call, arguments))
    finally:
        close_dubbo_connection(address)  # so the server need not wait for it


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


#: A dubbo heartbeat request (id 7) and the answer dubbo-ssl-python gives it.
HEARTBEAT_REQUEST = bytes.fromhex("dabbe200" + "0000000000000007" + "00000001" + "4e")
HEARTBEAT_ANSWER = bytes.fromhex("dabb2214" + "0000000000000007" + "00000001" + "4e")


def test_closing_a_dubbo_connection_leaves_the_librarys_reader_thread_alive() -> None:
    # The race that hung the suite, forced: the connection is closed while
    # the reader thread is inside select() with it. The thread must live on
    # and serve the pool's next connection. A pool of the test's own, with
    # its own threads: the global one is not put at risk.
    from dubbo_ssl.connection.connections import Connection, SelectConnectionPool

    pool = SelectConnectionPool()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        host, port = server.getsockname()[:2]
        address = f"{host}:{port}"
        first = Connection(host, port, None)
        in_select, closed = threading.Event(), threading.Event()
        real_fileno = first.fileno

        def fileno() -> int:  # select() asks each connection for its descriptor
            if not in_select.is_set():
                in_select.set()
                closed.wait(10)
            descriptor: int = real_fileno()
            return descriptor

        first.fileno = fileno
        pool._connection_pool = {address: first}
        assert in_select.wait(10)
        close_dubbo_connection(address, pool)
        closed.set()
        pool._connection_pool = {address: Connection(host, port, None)}
        first_peer, _ = server.accept()
        second_peer, _ = server.accept()
        with first_peer, second_peer:
            second_peer.settimeout(10)
            second_peer.sendall(HEARTBEAT_REQUEST)
            answer = b""
            while len(answer) < len(HEARTBEAT_ANSWER):
                chunk = second_peer.recv(64)
                assert chunk, "dubbo-ssl-python closed the connection"
                answer += chunk
            assert answer == HEARTBEAT_ANSWER  # answered by the reader thread: it lives
        close_dubbo_connection(address, pool)
