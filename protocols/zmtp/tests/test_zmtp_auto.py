"""ZMTP behind ``protocol: auto``: recognised in every framing its real
clients use, however the first bytes are split; and a ZMTP client routed to
a cluster of another protocol costs only its own requests.

The core's tests check detection and isolation with its own test
protocols; these check ZMTP's sniffer against every installed one, and a
handshake that never completes upstream (the wrong service closes on the
greeting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import (
    EchoLines,
    check_sniff,
    connect,
    running_proxy,
    running_with_backends,
    send_bytewise,
    serving,
)
from sota_zmtp import Dealer, ZmtpEchoDispatcher, encode_message
from sota_zmtp.wire import encode_command, encode_properties, signature

pytestmark = pytest.mark.anyio

ZMTP_2 = signature() + b"\x01\x05" + b"\x00\x00" + encode_message([b"zmtp2"])
ZMTP_3 = (
    signature()
    + b"\x03\x01"
    + b"NULL".ljust(20, b"\x00")
    + bytes(32)
    + encode_command(b"READY", encode_properties([("Socket-Type", b"DEALER"), ("Identity", b"")]))
    + encode_message([b"zmtp3"])
)

#: (name, first bytes a real client sends, the answer's test)
FRAMINGS: list[tuple[str, bytes, Callable[[bytes], bool]]] = [
    ("zmtp-2.0", ZMTP_2, lambda a: a.endswith(encode_message([b"zmtp2"]))),
    ("zmtp-3.x", ZMTP_3, lambda a: a.endswith(encode_message([b"zmtp3"]))),
]
IDS = [name for name, *_ in FRAMINGS]

AUTO = {
    "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "zmq"}]}],
    "clusters": [{"name": "zmq", "endpoints": ["127.0.0.1:1"]}],
}


@pytest.mark.parametrize(("name", "data", "check"), FRAMINGS, ids=IDS)
def test_every_prefix_leads_to_zmtp(name: str, data: bytes, check: Callable[[bytes], bool]) -> None:
    check_sniff("zmtp", data)


@pytest.mark.parametrize(("name", "data", "check"), FRAMINGS, ids=IDS)
async def test_an_auto_listener_serves_each_framing_sent_a_byte_at_a_time(
    name: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    async with (
        running_with_backends(parse_config(AUTO), {"zmq": ZmtpEchoDispatcher}) as proxy,
        await connect(proxy.addresses["any"]) as stream,
    ):
        await send_bytewise(stream, data)
        reader = BufferedReader(stream)
        answer = b""
        with anyio.fail_after(10), contextlib.suppress(anyio.EndOfStream):
            while not check(answer):
                answer += await reader.read_some()
        assert check(answer), (name, answer[:200])


def auto_document(upstream: str) -> dict[str, object]:
    return {
        "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "lines"}]}],
        "clusters": [
            {
                "name": "lines",
                "endpoints": [upstream],
                "endpoint_breaker": {"consecutive_failures": 2, "min_requests": 1000},
                "outlier_detection": {"consecutive_failures": 2, "max_ejection_percent": 100},
            }
        ],
    }


async def echo_traffic(proxy: Proxy, stop: anyio.Event, errors: list[bytes]) -> int:
    answered = 0
    async with await connect(proxy.addresses["any"]) as stream:
        reader = BufferedReader(stream)
        while not stop.is_set():
            await stream.send(b"echo:ping\n")
            with anyio.fail_after(10):
                reply = await reader.read_until(b"\n", max_bytes=1024)
            if reply != b"echo:ping":
                errors.append(reply)
            answered += 1
    return answered


async def test_zmtp_clients_never_take_the_endpoint_from_the_right_protocols_clients(echo_lines: str) -> None:
    async with serving(EchoLines) as upstream:
        assert upstream.address is not None
        async with running_proxy(parse_config(auto_document(upstream.address))) as proxy:
            errors: list[bytes] = []
            answered = []
            stop = anyio.Event()

            async def traffic() -> None:
                answered.append(await echo_traffic(proxy, stop, errors))

            async with anyio.create_task_group() as tg:
                tg.start_soon(traffic)
                for _ in range(10):
                    # A ZMTP DEALER: its messages get error replies, not service.
                    async with Dealer(proxy.addresses["any"]) as zmq_client:
                        await zmq_client.send([b"", b"hello"])
                        with anyio.fail_after(10):
                            reply = await zmq_client.receive()
                        assert reply[-1].startswith(b"error:"), reply
                stop.set()
            assert answered[0] > 0
            assert errors == []  # not one echo_lines request failed meanwhile
            [endpoint] = proxy.clusters["lines"].describe()["endpoints"]
            assert endpoint["health"] == "healthy"
            assert endpoint["protocols"][echo_lines] == {"health": "healthy", "breaker": "closed"}
            # The ZMTP handshake never completes there: that is ZMTP's own business.
            assert endpoint["protocols"]["zmtp"]["health"] in ("unreachable", "healthy")
