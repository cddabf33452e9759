"""Every example proxy config in examples/proxy runs: real backends, real requests.

Each example's listener addresses become free ports and its endpoints real
backends of the listener's protocol on 127.0.0.1 (for ``auto``, a bolt and
dubbo service), then a request takes each route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import attrs
import pytest
import zmq
from anyio.abc import SocketStream

from sota_dispatch import (
    BufferedReader,
    DispatcherFactory,
    EndpointConfig,
    Proxy,
    ProxyConfig,
    load_config,
)
from sota_dispatch.testing import running_proxy, serving
from sota_simple_line import SimpleLineDispatcher
from sota_xprotocol import (
    BoltClient,
    BoltEchoDispatcher,
    DubboClient,
    DubboEchoDispatcher,
    XProtocolEchoDispatcher,
    bolt,
    dubbo,
    hessian2,
)
from sota_zmtp import ZmtpEchoDispatcher

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "proxy"
BACKENDS: Mapping[str, DispatcherFactory] = {
    "simple_line": SimpleLineDispatcher,
    "zmtp": ZmtpEchoDispatcher,
    "bolt": BoltEchoDispatcher,
    "dubbo": DubboEchoDispatcher,
    "auto": XProtocolEchoDispatcher,
}


@asynccontextmanager
async def example(name: str) -> AsyncIterator[Proxy]:
    """Run examples/proxy/<name>.yaml on free ports with real backends."""
    config: ProxyConfig = load_config(EXAMPLES / f"{name}.yaml")
    protocol_of = {route.cluster: listener.protocol for listener in config.listeners for route in listener.routes}
    async with AsyncExitStack() as stack:
        clusters = []
        for cluster in config.clusters:
            endpoints = []
            for endpoint in cluster.endpoints:
                server = await stack.enter_async_context(serving(BACKENDS[protocol_of[cluster.name]]))
                assert server.address is not None
                endpoints.append(attrs.evolve(endpoint, address=server.address))
            clusters.append(attrs.evolve(cluster, endpoints=tuple[EndpointConfig, ...](endpoints)))
        listeners = tuple(attrs.evolve(listener, address="127.0.0.1:0") for listener in config.listeners)
        admin = None if config.admin is None else attrs.evolve(config.admin, address="127.0.0.1:0")
        proxy = await stack.enter_async_context(
            running_proxy(attrs.evolve(config, listeners=listeners, clusters=tuple(clusters), admin=admin))
        )
        yield proxy


async def connect(proxy: Proxy, listener: str) -> SocketStream:
    host, _, port = proxy.addresses[listener].rpartition(":")
    return await anyio.connect_tcp(host, int(port))


async def lines(proxy: Proxy, listener: str, *requests: bytes) -> list[bytes]:
    async with await connect(proxy, listener) as stream:
        await stream.send(b"".join(r + b"\r\n" for r in requests))
        reader = BufferedReader(stream)
        with anyio.fail_after(10):
            return [await reader.read_until(b"\r\n", max_bytes=65536) for _ in requests]


def bolt_request(service: str, content: bytes) -> bolt.BoltFrame:
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        1,
        codec=11,
        timeout=5000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        header_bytes=bolt.encode_header_map({"service": service}),
        content=content,
    )


def dubbo_request(service: str, argument: str, attachments: dict[str, str]) -> dubbo.DubboFrame:
    values = ("2.7.0", service, "1.0.0", "echo", "Ljava/lang/String;", argument, attachments)
    flag = dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2
    return dubbo.DubboFrame(flag, 0, 1, b"".join(hessian2.encode(v) for v in values))


async def test_simple_line_example() -> None:
    async with example("simple_line") as proxy:
        replies = await lines(proxy, "lines", b"service=orders&user=u1", b"a=1")
    assert replies == [b'receive:{"service":["orders"],"user":["u1"]}', b'receive:{"a":["1"]}']


async def test_envoy_example() -> None:
    async with example("envoy") as proxy:
        replies = await lines(proxy, "lines", b"service=orders&user=u1", b"a=1")
    assert replies == [b'receive:{"service":["orders"],"user":["u1"]}', b'receive:{"a":["1"]}']


async def test_zmtp_example() -> None:
    async with example("zmtp") as proxy:

        def call() -> list[list[bytes]]:
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            try:
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.RCVTIMEO, 10_000)
                sock.connect(f"tcp://{proxy.addresses['zmq']}")
                replies = []
                for message in ([b"report.daily"], [b"work", b"item"]):
                    sock.send_multipart(message)
                    replies.append(sock.recv_multipart())
                return replies
            finally:
                ctx.destroy(0)

        assert await anyio.to_thread.run_sync(call) == [[b"report.daily"], [b"work", b"item"]]


async def bolt_call(proxy: Proxy, listener: str, service: str, content: bytes) -> bolt.BoltFrame:
    async with await BoltClient.connect(proxy.addresses[listener]) as client:
        reply = await client.call(bolt_request(service, content), timeout=10)
    assert reply is not None
    return reply


async def dubbo_call(proxy: Proxy, listener: str, service: str, argument: str) -> dubbo.DubboFrame:
    async with await DubboClient.connect(proxy.addresses[listener]) as client:
        reply = await client.call(dubbo_request(service, argument, {"group": "g1"}), timeout=10)
    assert reply is not None
    return reply


async def test_bolt_example() -> None:
    async with example("bolt") as proxy:
        pay = await bolt_call(proxy, "bolt", "com.example.pay.Charge:1.0", b"charge")
        other = await bolt_call(proxy, "bolt", "com.example.Echo:1.0", b"echo")
    assert (pay.status, pay.content, other.status, other.content) == (0, b"charge", 0, b"echo")


async def test_dubbo_example() -> None:
    async with example("dubbo") as proxy:
        reply = await dubbo_call(proxy, "dubbo", "com.example.EchoService", "hello")
        fallback = await dubbo_call(proxy, "dubbo", "com.example.Other", "there")
    assert hessian2.decode_all(reply.body) == [1, "hello"]
    assert hessian2.decode_all(fallback.body) == [1, "there"]


async def test_auto_example_serves_several_protocols_in_one_process() -> None:
    async with example("auto") as proxy:
        assert (await bolt_call(proxy, "any", "com.example.Echo:1.0", b"b")).content == b"b"
        assert hessian2.decode_all((await dubbo_call(proxy, "any", "com.example.Echo", "d")).body) == [1, "d"]
        assert await lines(proxy, "lines", b"x=1") == [b'receive:{"x":["1"]}']
