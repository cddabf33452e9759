"""Clients and backends that reset at once: the proxy, its admin endpoint and
its upstream side each lose only that connection, on asyncio, uvloop and trio."""

from __future__ import annotations

import logging
import socket
import struct

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for

from sota_dispatch.testing import connect_and_reset

pytestmark = pytest.mark.anyio


async def http_get(address: str, path: str) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_resets_at_the_listener_and_the_admin_port_cost_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with backends("A") as up:
        document = config([up[0][1]])
        document["admin"] = {"address": "127.0.0.1:0"}
        async with proxy_for(document) as proxy:
            assert proxy.admin_address is not None
            for address in (proxy.addresses["lines"], proxy.admin_address) * 2:
                assert await anyio.to_thread.run_sync(connect_and_reset, address, 100) == 100
            async with client(proxy) as c:
                assert await c.call(b"a=1") == [b"A:a=1"]
            assert await http_get(proxy.admin_address, "/ready") == (200, b"ready\n")
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


async def test_a_backend_that_resets_each_connection_gets_error_replies_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def reset_each(stream: anyio.abc.SocketStream) -> None:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, reset_each)
        async with proxy_for(config([f"127.0.0.1:{port}"], route={"timeout": "5s"})) as proxy, client(proxy) as c:
            for _ in range(20):
                [reply] = await c.call(b"a=1")
                assert reply.startswith(b"error:"), reply
        tg.cancel_scope.cancel()
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info is not None]
    assert not tracebacks


async def test_a_client_is_served_throughout_a_storm_of_resets() -> None:
    async with (
        backends("A") as up,
        proxy_for(config([up[0][1]])) as proxy,
        client(proxy) as c,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(anyio.to_thread.run_sync, connect_and_reset, proxy.addresses["lines"], 200)
        for i in range(50):
            assert await c.call(f"n={i}".encode()) == [f"A:n={i}".encode()]
