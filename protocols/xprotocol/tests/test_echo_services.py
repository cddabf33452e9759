"""The echo services in memory: heartbeats, oneway, bad input, auto-detection."""

from __future__ import annotations

import anyio
import pytest
from xprotocol_support import EDGES, REQUESTS

from sota_dispatch import LimitExceeded, ProtocolError
from sota_dispatch.testing import check_garbage, check_split_invariance, exchange
from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher, XProtocolEchoDispatcher, bolt, dubbo, hessian2

pytestmark = pytest.mark.anyio


def bolt_request(request_id: int, content: bytes, kind: bolt.FrameType = bolt.FrameType.REQUEST) -> bytes:
    return bolt.BoltFrame(kind, bolt.CmdCode.RPC_REQUEST, request_id, class_name=b"cls", content=content).encode()


async def test_bolt_echo_heartbeat_and_oneway() -> None:
    data = bolt_request(1, b"a") + bolt.heartbeat_request(2).encode() + bolt_request(3, b"x", bolt.FrameType.ONEWAY)
    data += bolt_request(4, b"b")
    result = await exchange(BoltEchoDispatcher, [data])
    replies = bolt.BoltDecoder().feed(result.output)
    assert [(r.request_id, r.is_heartbeat, r.content, r.class_name) for r in replies] == [
        (1, False, b"a", b"cls"),
        (2, True, b"", b""),
        (4, False, b"b", b"cls"),
    ]
    assert all(r.status == bolt.ResponseStatus.SUCCESS for r in replies)
    assert result.close_reason is None


async def test_dubbo_echo_heartbeat_oneway_and_bad_body() -> None:
    bad_body = dubbo.DubboFrame(0xC2, 0, 9, b"\x05short").encode()  # not a whole invocation
    oneway = dubbo.DubboFrame(0x82, 0, 8, REQUESTS[0][16:]).encode()
    data = REQUESTS[0] + dubbo.heartbeat_request(7).encode() + oneway + bad_body
    result = await exchange(DubboEchoDispatcher, [data])
    replies = dubbo.DubboDecoder().feed(result.output)
    assert [r.request_id for r in replies] == [0, 7, 9]
    assert replies[1].raw == dubbo.heartbeat_response(dubbo.heartbeat_request(7)).encode()
    assert replies[2].status == dubbo.DubboStatus.BAD_REQUEST  # answered; the connection stays
    assert result.close_reason is None


async def test_dubbo_echo_answers_far_dates_and_lone_surrogates_byte_exact() -> None:
    # Java's edge values (dates beyond datetime, strings with lone
    # surrogates) as arguments, with a lone surrogate in the header and the
    # attachments too: each call is answered with its argument's own bytes.
    header = b"".join(
        hessian2.encode(v) for v in ("2.7.23", "com.example.S\ud800", "1.0.0", "echo", "Ljava/util/Date;")
    )
    attachments = hessian2.encode({"group": "g\udfff", "deadline": hessian2.JavaDate(2**62)})
    arguments = [bytes.fromhex(EDGES[label]) for label in sorted(EDGES)]
    requests = [
        dubbo.DubboFrame(0xC2, 0, request_id, header + argument + attachments).encode()
        for request_id, argument in enumerate(arguments)
    ]
    result = await exchange(DubboEchoDispatcher, [b"".join(requests)])
    replies = dubbo.DubboDecoder().feed(result.output)
    assert [(r.request_id, r.status, r.body) for r in replies] == [
        (request_id, dubbo.DubboStatus.OK, b"\x91" + argument) for request_id, argument in enumerate(arguments)
    ]


class QuickClose(XProtocolEchoDispatcher):
    linger_timeout = 0.05  # the test peer never closes: do not wait 2 s for it


@pytest.mark.parametrize("first", [b"\x03", b"GET / HTTP/1.1\r\n", b"\xff"])
async def test_xprotocol_refuses_other_first_bytes_at_once(first: bytes) -> None:
    # No EOF and only 1 byte: the decision must not wait for a full header.
    with anyio.fail_after(5):
        result = await exchange(QuickClose, [first], close_input=False)
    assert isinstance(result.close_reason, ProtocolError)
    assert result.output == b""


async def test_xprotocol_serves_both_protocols() -> None:
    bolt_reply = await exchange(XProtocolEchoDispatcher, [bolt_request(5, b"hi")])
    assert bolt.BoltDecoder().feed(bolt_reply.output)[0].content == b"hi"
    dubbo_reply = await exchange(XProtocolEchoDispatcher, [REQUESTS[0]])
    assert dubbo.DubboDecoder().feed(dubbo_reply.output)[0].body == b"\x91\x05hello"


async def test_wrong_magic_mid_stream_closes_the_connection_after_answering_what_came_before() -> None:
    result = await exchange(DubboEchoDispatcher, [REQUESTS[0] + b"\xda\xbc" + REQUESTS[1][2:]])
    assert isinstance(result.close_reason, ProtocolError)
    assert len(dubbo.DubboDecoder().feed(result.output)) == 1


async def test_frame_size_option() -> None:
    result = await exchange(BoltEchoDispatcher, [bolt_request(1, b"z" * 2000)], options={"max_frame_size": "1000"})
    assert isinstance(result.close_reason, LimitExceeded)


async def test_split_invariance_and_garbage() -> None:
    assert await check_split_invariance(XProtocolEchoDispatcher, REQUESTS[0] + REQUESTS[1])
    assert await check_split_invariance(BoltEchoDispatcher, bolt_request(1, b"a") + bolt_request(2, b"b"))
    for garbage in (b"\x01" + bytes(30), b"\xda\xbb" + b"\xff" * 40, b"\x02\x02\x01" + bytes(40)):
        await check_garbage(XProtocolEchoDispatcher, garbage)
