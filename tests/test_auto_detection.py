"""``protocol: auto`` recognises every protocol in every framing its real
clients use, however the first bytes are split.

Detection grows the prefix one byte at a time (the proxy peeks ``n + 1``
bytes after ``n`` were not enough), so the verdicts for every prefix of a
real first request decide it whatever the TCP segments were: the first
property checks exactly that. The end-to-end test then sends each framing
to a real auto listener one byte per write. simple_line lines ending in
CRLF were once never recognised (a trailing ``\\r`` looked unprintable).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from sota_dispatch import BufferedReader, Match, Proxy, parse_config
from sota_dispatch.proxy.listener import auto_candidates
from sota_dispatch.testing import running_proxy, serving
from sota_simple_line import SimpleLineDispatcher
from sota_xprotocol import XProtocolEchoDispatcher, bolt, dubbo, hessian2
from sota_zmtp import ZmtpEchoDispatcher, encode_message
from sota_zmtp.wire import encode_command, encode_properties, signature

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


ZMTP_2 = signature() + b"\x01\x05" + b"\x00\x00" + encode_message([b"zmtp2"])
ZMTP_3 = (
    signature()
    + b"\x03\x01"
    + b"NULL".ljust(20, b"\x00")
    + bytes(32)
    + encode_command(b"READY", encode_properties([("Socket-Type", b"DEALER"), ("Identity", b"")]))
    + encode_message([b"zmtp3"])
)

#: (name, protocol auto should pick, first bytes a real client sends, the answer's test)
FRAMINGS: list[tuple[str, str, bytes, Callable[[bytes], bool]]] = [
    ("lines-crlf", "simple_line", b"line=crlf\r\n", lambda a: a == b'receive:{"line":["crlf"]}\r\n'),
    ("lines-lf", "simple_line", b"line=lf\n", lambda a: a == b'receive:{"line":["lf"]}\r\n'),
    ("bolt-v1", "bolt", bolt_request(bolt.BOLT_V1), lambda a: b"bolt-content" in a and a[0] == bolt.BOLT_V1),
    ("bolt-v2", "bolt", bolt_request(bolt.BOLT_V2), lambda a: b"bolt-content" in a and a[0] == bolt.BOLT_V2),
    ("dubbo", "dubbo", dubbo_request(), lambda a: a[:2] == dubbo.MAGIC and b"dubbo-arg" in a),
    ("zmtp-2.0", "zmtp", ZMTP_2, lambda a: a.endswith(encode_message([b"zmtp2"]))),
    ("zmtp-3.x", "zmtp", ZMTP_3, lambda a: a.endswith(encode_message([b"zmtp3"]))),
]
IDS = [name for name, *_ in FRAMINGS]


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
def test_every_prefix_leads_to_the_right_protocol(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    candidates = {info.name: info for _, info in auto_candidates()}
    assert protocol in candidates
    for size in range(1, len(data) + 1):
        verdicts = {n: info.sniff(data[:size]) for n, info in candidates.items()}
        claimed = [n for n, v in verdicts.items() if v is Match.YES]
        if claimed:
            assert claimed == [protocol], (size, verdicts)
            return
        # Nothing claimed yet: the right one must still be waiting for more.
        assert verdicts[protocol] is Match.NEED_MORE, (size, verdicts)
    pytest.fail(f"{name}: never recognised in {len(data)} bytes")


@asynccontextmanager
async def auto_proxy() -> AsyncIterator[Proxy]:
    async with AsyncExitStack() as stack:
        lines = await stack.enter_async_context(serving(SimpleLineDispatcher))
        rpc = await stack.enter_async_context(serving(XProtocolEchoDispatcher))
        zmq = await stack.enter_async_context(serving(ZmtpEchoDispatcher))
        document = {
            "listeners": [
                {
                    "name": "any",
                    "address": "127.0.0.1:0",
                    "protocol": "auto",
                    "routes": [  # each protocol's own routing attributes tell them apart
                        {"match": [{"attribute": "parts", "present": True}], "cluster": "zmq"},
                        {"match": [{"attribute": "method", "present": True}], "cluster": "rpc"},
                        {"match": [{"attribute": "service", "present": True}], "cluster": "rpc"},
                        {"match": [{"attribute": "line", "present": True}], "cluster": "lines"},
                    ],
                }
            ],
            "clusters": [
                {"name": "lines", "endpoints": [lines.address]},
                {"name": "rpc", "endpoints": [rpc.address]},
                {"name": "zmq", "endpoints": [zmq.address]},
            ],
        }
        yield await stack.enter_async_context(running_proxy(parse_config(document)))


async def byte_by_byte(stream: SocketStream, data: bytes) -> None:
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a segment per byte, as far as TCP allows
    for i in range(len(data)):
        await stream.send(data[i : i + 1])


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
async def test_an_auto_listener_serves_each_framing_sent_a_byte_at_a_time(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    async with auto_proxy() as proxy:
        host, _, port = proxy.addresses["any"].rpartition(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await byte_by_byte(stream, data)
            reader = BufferedReader(stream)
            answer = b""
            with anyio.fail_after(10), contextlib.suppress(anyio.EndOfStream):
                while not check(answer):
                    answer += await reader.read_some()
            assert check(answer), (name, answer[:200])
