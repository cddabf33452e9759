"""Real third-party peers against our echo services (anthunder 0.8.1, dubbo-ssl-python 0.9.6).

Both libraries are blocking, so each runs in a worker thread while the
server runs in the test's event loop, on asyncio and on trio. Their quirks
(xprotocol-notes section 3) are avoided: anthunder's sync Client needs a
span context; dubbo-ssl-python cannot send maps or None, and must not be
asked for dubbo version 2.0.x.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
from xprotocol_support import anthunder_calls, close_dubbo_connection, dubbo_calls, serving

from sota_dispatch import DispatcherFactory
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, XProtocolEchoDispatcher

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("factory", [BoltEchoDispatcher, XProtocolEchoDispatcher], ids=["bolt", "xprotocol"])
async def test_anthunder_sync_client_gets_its_content_back(factory: DispatcherFactory) -> None:
    bodies = [b"hello bolt", b"", b"x" * 70_000]
    async with serving(factory) as (host, port):
        assert await anyio.to_thread.run_sync(anthunder_calls, host, port, bodies) == bodies


ARGUMENTS: list[Any] = ["hello", 42, -7, 2**40, 1.5, True, False, [1, 2, 3], ["a", "b"], "\u4e2d\u6587", "q" * 5000]


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
    # The next connection goes to a second listener: the reader thread drops a
    # connection that reached end of stream by its address (`host:port`), and
    # when it gets round to the first one it would take a successor at the
    # same address out of the pool with it (the run that failed CI so: the
    # successor, unreferenced, was collected and its socket reset).
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_server(("127.0.0.1", 0)) as next_server:
        server.settimeout(10)
        next_server.settimeout(10)
        host, port = server.getsockname()[:2]
        next_port = next_server.getsockname()[1]
        address, next_address = f"{host}:{port}", f"{host}:{next_port}"
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
        pool._connection_pool = {next_address: Connection(host, next_port, None)}
        first_peer, _ = server.accept()
        second_peer, _ = next_server.accept()
        with first_peer, second_peer:
            second_peer.settimeout(10)
            second_peer.sendall(HEARTBEAT_REQUEST)
            answer = b""
            while len(answer) < len(HEARTBEAT_ANSWER):
                chunk = second_peer.recv(64)
                assert chunk, "dubbo-ssl-python closed the connection"
                answer += chunk
            assert answer == HEARTBEAT_ANSWER  # answered by the reader thread: it lives
        close_dubbo_connection(next_address, pool)
