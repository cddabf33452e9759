"""bolt and dubbo over TLS, on 127.0.0.1, with real clients.

dubbo-ssl-python speaks dubbo over TLS itself (it verifies the server
against a CA file); for bolt, Python's ``ssl`` socket carries frames our
codec writes and reads. Served directly (the echo services) and through a
proxy that terminates TLS and originates it to a TLS backend.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import anyio
import anyio.to_thread
import pytest
from xprotocol_support import dubbo_calls

from sota_dispatch import ServerTLS
from sota_dispatch.config import parse_config
from sota_dispatch.testing import running_proxy, serving
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, XProtocolEchoDispatcher, bolt

pytestmark = pytest.mark.anyio

#: What dubbo-ssl-python can send: its encoder never chunks a string, so one over
#: 65,535 characters goes out with its length wrapped (a garbled call).
ARGUMENTS: list[Any] = ["hello", 42, -7, 2**40, 1.5, True, ["a", "b"], "\u4e2d\u6587", "q" * 5000]


def bolt_over_ssl(address: str, ca_file: str, contents: list[bytes]) -> list[tuple[int, int, bytes]]:
    """bolt requests pipelined on one Python ``ssl`` socket; (id, status, content) of each answer."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    frames = [
        bolt.BoltFrame(bolt.FrameType.REQUEST, bolt.CmdCode.RPC_REQUEST, i + 1, class_name=b"cls", content=c).encode()
        for i, c in enumerate(contents)
    ]
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"".join(frames))
        decoder = bolt.BoltDecoder()
        answers: list[bolt.BoltFrame] = []
        while len(answers) < len(frames):
            data = tls.recv(65536)
            assert data, "closed before every answer came"
            answers += decoder.feed(data)
    return [(a.request_id, int(a.status), a.content) for a in answers]


def tls_of(files: Any) -> ServerTLS:
    return ServerTLS([(files.cert_chain, files.private_key, ())])


@pytest.mark.parametrize("factory", [BoltEchoDispatcher, XProtocolEchoDispatcher], ids=["bolt", "xprotocol"])
async def test_a_python_ssl_client_reaches_a_bolt_listener_over_tls(tls_files: Any, factory: Any) -> None:
    contents = [b"hello bolt", b"", b"x" * 70_000, bytes(range(256)) * 64]
    async with serving(factory, tls=tls_of(tls_files)) as server:
        assert server.address is not None
        answers = await anyio.to_thread.run_sync(bolt_over_ssl, server.address, tls_files.ca_file, contents)
    assert answers == [(i + 1, int(bolt.ResponseStatus.SUCCESS), c) for i, c in enumerate(contents)]


@pytest.mark.parametrize("factory", [DubboEchoDispatcher, XProtocolEchoDispatcher], ids=["dubbo", "xprotocol"])
async def test_dubbo_ssl_python_reaches_a_dubbo_listener_over_tls(tls_files: Any, factory: Any) -> None:
    async with serving(factory, tls=tls_of(tls_files)) as server:
        assert server.address is not None
        host, port = server.address.rsplit(":", 1)
        calls = await anyio.to_thread.run_sync(
            lambda: dubbo_calls(host, int(port), ARGUMENTS, 1, verify=tls_files.ca_file)
        )
    assert calls == ARGUMENTS


def proxy_config(protocol: str, backend: str, files: Any) -> Any:
    return parse_config(
        {
            "listeners": [
                {
                    "name": "in",
                    "address": "127.0.0.1:0",
                    "protocol": protocol,
                    "tls": {"certificates": [{"cert_chain": files.cert_chain, "private_key": files.private_key}]},
                    "routes": [{"cluster": "echo"}],
                }
            ],
            "clusters": [
                {
                    "name": "echo",
                    "endpoints": [backend],
                    "tls": {"ca_file": files.ca_file, "server_name": "localhost"},
                }
            ],
        }
    )


async def test_bolt_and_dubbo_through_a_proxy_with_tls_on_both_sides(tls_files: Any) -> None:
    contents = [b"through", b"y" * 100_000]
    async with serving(BoltEchoDispatcher, tls=tls_of(tls_files)) as backend:
        assert backend.address is not None
        async with running_proxy(proxy_config("bolt", backend.address, tls_files)) as proxy:
            answers = await anyio.to_thread.run_sync(bolt_over_ssl, proxy.addresses["in"], tls_files.ca_file, contents)
    assert [(status, content) for _, status, content in answers] == [(0, c) for c in contents]
    async with serving(DubboEchoDispatcher, tls=tls_of(tls_files)) as backend:
        assert backend.address is not None
        async with running_proxy(proxy_config("dubbo", backend.address, tls_files)) as proxy:
            host, port = proxy.addresses["in"].rsplit(":", 1)
            calls = await anyio.to_thread.run_sync(
                lambda: dubbo_calls(host, int(port), ARGUMENTS, 1, verify=tls_files.ca_file)
            )
    assert calls == ARGUMENTS
