"""A connection to a local port nobody listens on that reaches itself.

TCP's simultaneous open connects a socket to itself when the kernel picks
the destination port as the source port: it happens now and then when a
test (or a config) points at a free port in the ephemeral range, and the
request sent there came back as its own answer (a proxy test saw a
timeout where "no healthy upstream" was due). Binding the source port makes
it happen every time here; the connect function is made to do that, the
sockets and the kernel's handling are real.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from sota_dispatch import Dispatcher
from sota_dispatch.config import parse_config
from sota_dispatch.io.tls import connected_to_itself, open_connection
from sota_dispatch.testing import EchoLines, connect, free_port, running_proxy, serving

pytestmark = pytest.mark.anyio


def self_connected(port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)  # never a hang, whatever the kernel makes of it
    sock.bind(("127.0.0.1", port))
    sock.connect(("127.0.0.1", port))  # simultaneous open with itself
    assert sock.getsockname() == sock.getpeername()
    return sock


@contextmanager
def connects_reach_themselves(monkeypatch: pytest.MonkeyPatch, port: int) -> Iterator[list[socket.socket]]:
    """Every connect to ``port`` picks ``port`` as its source port too;
    yields the list of the sockets that reached themselves."""
    real = anyio.connect_tcp
    seen: list[socket.socket] = []

    async def connect_tcp(host: str, remote_port: int, **kwargs: Any) -> SocketStream:
        if remote_port != port:
            stream: SocketStream = await real(host, remote_port, **kwargs)
            return stream
        seen.append(self_connected(port))
        return await SocketStream.from_socket(seen[-1])

    monkeypatch.setattr(anyio, "connect_tcp", connect_tcp)  # as open_connection reaches it
    yield seen


async def refused(connecting: Awaitable[Any]) -> None:
    """``connecting`` raises ConnectionRefusedError (what it returns
    otherwise is closed: a leaked uvloop transport can hang the test)."""
    try:
        connected = await connecting
    except ConnectionRefusedError as exc:
        error = str(exc)
    else:
        await anyio.aclose_forcefully(getattr(connected, "stream", connected))
        pytest.fail("connected to itself")
    assert "reached itself" in error


async def test_a_connection_to_itself_is_told_from_a_real_one() -> None:
    itself = await SocketStream.from_socket(self_connected(free_port()))
    async with itself:
        assert connected_to_itself(itself)
        await itself.send(b"ping")
        assert await itself.receive() == b"ping"  # what made a request its own answer
    async with serving(EchoLines) as server:
        assert server.address is not None
        host, port = server.address.rsplit(":", 1)
        async with await anyio.connect_tcp(host, int(port)) as real:
            assert not connected_to_itself(real)


async def test_open_connection_refuses_a_connection_to_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    with connects_reach_themselves(monkeypatch, port) as seen:
        await refused(open_connection("127.0.0.1", port))
    port = free_port()
    with connects_reach_themselves(monkeypatch, port) as more:
        await refused(Dispatcher.connect(f"127.0.0.1:{port}"))
    assert len(seen) == len(more) == 1
    assert seen[0].fileno() == more[0].fileno() == -1  # closed, not leaked


async def test_the_proxy_takes_a_connection_to_itself_for_a_connect_failure(
    monkeypatch: pytest.MonkeyPatch, echo_lines: str
) -> None:
    """The dead endpoint is a connect failure (retried on the live one).
    (Echoed lines would have answered themselves on it: the cluster's
    count tells.)"""
    dead = free_port()
    async with serving(EchoLines) as server:
        live = server.address
        document = {
            "listeners": [
                {
                    "name": "in",
                    "address": "127.0.0.1:0",
                    "protocol": "echo_lines",
                    "routes": [{"cluster": "c", "timeout": "30s", "retry": {"attempts": 2}}],
                }
            ],
            "clusters": [{"name": "c", "lb": "round_robin", "endpoints": [f"127.0.0.1:{dead}", live]}],
        }
        with connects_reach_themselves(monkeypatch, dead) as seen:
            async with running_proxy(parse_config(document)) as proxy, await connect(proxy.addresses["in"]) as c:
                with anyio.fail_after(10):
                    for i in range(4):
                        await c.send(b"echo:%d\n" % i)
                        assert await c.receive() == b"echo:%d\n" % i
                assert proxy.clusters["c"].stats.connect_failures >= 1
        assert seen
        assert all(sock.fileno() == -1 for sock in seen)
