"""The bolt and dubbo example proxy configs (examples/proxy/bolt.yaml,
dubbo.yaml and auto.yaml) run with real backends on 127.0.0.1: a request
takes each route. auto.yaml has a simple_line listener too: its test runs
when that plugin is installed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.config import load_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import connect, running_with_backends
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

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "proxy"


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
    config = load_config(EXAMPLES / "bolt.yaml")
    async with running_with_backends(config, {c.name: BoltEchoDispatcher for c in config.clusters}) as proxy:
        pay = await bolt_call(proxy, "bolt", "com.example.pay.Charge:1.0", b"charge")
        other = await bolt_call(proxy, "bolt", "com.example.Echo:1.0", b"echo")
    assert (pay.status, pay.content, other.status, other.content) == (0, b"charge", 0, b"echo")


async def test_dubbo_example() -> None:
    config = load_config(EXAMPLES / "dubbo.yaml")
    async with running_with_backends(config, {c.name: DubboEchoDispatcher for c in config.clusters}) as proxy:
        reply = await dubbo_call(proxy, "dubbo", "com.example.EchoService", "hello")
        fallback = await dubbo_call(proxy, "dubbo", "com.example.Other", "there")
    assert hessian2.decode_all(reply.body) == [1, "hello"]
    assert hessian2.decode_all(fallback.body) == [1, "there"]


async def test_auto_example_serves_several_protocols_in_one_process() -> None:
    simple_line = pytest.importorskip("sota_simple_line")
    config = load_config(EXAMPLES / "auto.yaml")
    backends = {"mixed": XProtocolEchoDispatcher, "lines": simple_line.SimpleLineDispatcher}
    async with running_with_backends(config, backends) as proxy:
        assert (await bolt_call(proxy, "any", "com.example.Echo:1.0", b"b")).content == b"b"
        assert hessian2.decode_all((await dubbo_call(proxy, "any", "com.example.Echo", "d")).body) == [1, "d"]
        async with await connect(proxy.addresses["lines"]) as stream:
            await stream.send(b"x=1\r\n")
            with anyio.fail_after(10):
                assert await BufferedReader(stream).read_until(b"\r\n", max_bytes=65536) == b'receive:{"x":["1"]}'
