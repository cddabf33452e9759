"""A client speaking the wrong protocol for a cluster loses its own requests
only (a security fix): it never marks the cluster's endpoints unhealthy for
anyone else.

An ``auto`` listener routes whatever it detects. A ZMTP (or simple_line)
client routed to a cluster of bolt/dubbo services cannot be served there;
once, each of its attempts put the endpoint in connect backoff, fed the
breaker and outlier ejection, and failed every bolt request meanwhile (one
ZMTP message caused 762 bolt errors in 0.25 s). An endpoint's passive
health is now judged per protocol spoken to it.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest

from sota_dispatch import Proxy, parse_config
from sota_dispatch.testing import running_proxy, serving
from sota_xprotocol import BoltClient, XProtocolEchoDispatcher, bolt
from sota_zmtp import Dealer

pytestmark = pytest.mark.anyio


def bolt_request(content: bytes) -> bolt.BoltFrame:
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        1,
        codec=11,
        timeout=5000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        header_bytes=bolt.encode_header_map({"service": "com.example.Echo:1.0"}),
        content=content,
    )


def auto_document(upstream: str) -> dict[str, object]:
    return {
        "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "rpc"}]}],
        "clusters": [
            {
                "name": "rpc",
                "endpoints": [upstream],
                "endpoint_breaker": {"consecutive_failures": 2, "min_requests": 1000},
                "outlier_detection": {"consecutive_failures": 2, "max_ejection_percent": 100},
            }
        ],
    }


async def line_client(proxy: Proxy, count: int) -> list[bytes]:
    host, _, port = proxy.addresses["any"].rpartition(":")
    replies = []
    async with await anyio.connect_tcp(host, int(port)) as stream:
        for i in range(count):
            await stream.send(b"n=%d\r\n" % i)
            data = b""
            with contextlib.suppress(anyio.EndOfStream):
                while not data.endswith(b"\n"):
                    data += await stream.receive()
            replies.append(data)
    return replies


async def test_wrong_protocol_clients_never_take_the_endpoint_from_bolt_clients() -> None:
    async with serving(XProtocolEchoDispatcher) as upstream:
        assert upstream.address is not None
        async with running_proxy(parse_config(auto_document(upstream.address))) as proxy:
            cluster = proxy.clusters["rpc"]
            errors: list[int] = []
            answered = 0
            stop = anyio.Event()

            async def bolt_traffic() -> None:
                nonlocal answered
                async with await BoltClient.connect(proxy.addresses["any"]) as client:
                    while not stop.is_set():
                        reply = await client.call(bolt_request(b"ping"), timeout=10)
                        assert reply is not None
                        if reply.status != 0:
                            errors.append(reply.status)
                        answered += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(bolt_traffic)
                for _ in range(10):
                    # A ZMTP DEALER: its messages get error replies, not service.
                    async with Dealer(proxy.addresses["any"]) as zmq_client:
                        await zmq_client.send([b"", b"hello"])
                        with anyio.fail_after(10):
                            reply = await zmq_client.receive()
                        assert reply[-1].startswith(b"error:"), reply
                    # A simple_line client: the bolt service closes on its line.
                    [line] = await line_client(proxy, 1)
                    assert line.startswith(b"error:"), line
                stop.set()
            assert answered > 0
            assert errors == []  # not one bolt request failed meanwhile
            [endpoint] = cluster.describe()["endpoints"]
            assert endpoint["health"] == "healthy"
            assert endpoint["protocols"]["bolt"] == {"health": "healthy", "breaker": "closed"}
            # The ZMTP handshake never completes there: that is ZMTP's own business.
            assert endpoint["protocols"]["zmtp"]["health"] in ("unreachable", "healthy")
