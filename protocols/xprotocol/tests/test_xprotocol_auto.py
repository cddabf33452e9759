"""bolt and dubbo behind ``protocol: auto``: recognised in every framing
their real clients use, however the first bytes are split.

The core's tests check detection with its own test protocols; these check
the bolt and dubbo sniffers against every installed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.config import parse_config
from sota_dispatch.testing import check_sniff, connect, running_with_backends, send_bytewise
from sota_xprotocol import XProtocolEchoDispatcher, bolt, dubbo, hessian2

pytestmark = pytest.mark.anyio


def bolt_request(proto: int) -> bytes:
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        7,
        codec=11,
        timeout=5000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        header_bytes=bolt.encode_header_map({"service": "com.example.Echo:1.0"}),
        content=b"bolt-content",
        proto=proto,
        ver1=1 if proto == bolt.BOLT_V2 else 0,
    ).encode()


def dubbo_request() -> bytes:
    values = ("2.0.2", "com.example.Echo", "1.0.0", "echo", "Ljava/lang/String;", "dubbo-arg", {"group": "g"})
    flag = dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2
    return dubbo.DubboFrame(flag, 0, 9, b"".join(hessian2.encode(v) for v in values)).encode()


#: (name, protocol auto should pick, first bytes a real client sends, the answer's test)
FRAMINGS: list[tuple[str, str, bytes, Callable[[bytes], bool]]] = [
    ("bolt-v1", "bolt", bolt_request(bolt.BOLT_V1), lambda a: b"bolt-content" in a and a[0] == bolt.BOLT_V1),
    ("bolt-v2", "bolt", bolt_request(bolt.BOLT_V2), lambda a: b"bolt-content" in a and a[0] == bolt.BOLT_V2),
    ("dubbo", "dubbo", dubbo_request(), lambda a: a[:2] == dubbo.MAGIC and b"dubbo-arg" in a),
]
IDS = [name for name, *_ in FRAMINGS]

AUTO = {
    "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "rpc"}]}],
    "clusters": [{"name": "rpc", "endpoints": ["127.0.0.1:1"]}],
}


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
def test_every_prefix_leads_to_the_right_protocol(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    check_sniff(protocol, data)


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
async def test_an_auto_listener_serves_each_framing_sent_a_byte_at_a_time(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    async with (
        running_with_backends(parse_config(AUTO), {"rpc": XProtocolEchoDispatcher}) as proxy,
        await connect(proxy.addresses["any"]) as stream,
    ):
        await send_bytewise(stream, data)
        reader = BufferedReader(stream)
        answer = b""
        with anyio.fail_after(10), contextlib.suppress(anyio.EndOfStream):
            while not check(answer):
                answer += await reader.read_some()
        assert check(answer), (name, answer[:200])
