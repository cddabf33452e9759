"""The frame semantics of bolt and dubbo (their classes) on captured frames."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xprotocol_support import REQUESTS, STREAMS

from sota_dispatch import PIECE_FROM, encoded_bytes
from sota_xprotocol import BoltDispatcher as BOLT
from sota_xprotocol import DubboDispatcher as DUBBO
from sota_xprotocol import Failure, bolt, dubbo, hessian2

#: Content sizes around the one from which a frame goes on in two pieces.
SIZES = st.one_of(st.integers(0, 40), st.integers(PIECE_FROM - 80, PIECE_FROM + 20), st.just(70_000))


def test_bolt_semantics() -> None:
    frame = BOLT.decoder(1 << 20).feed(STREAMS["c2s"])[0]
    assert BOLT.is_request(frame)
    assert not BOLT.is_oneway(frame)
    assert BOLT.timeout(frame) == 2.0
    assert BOLT.routing_attributes(frame)["service"] == "com.example.EchoService:1.0"
    rewritten = BOLT.with_request_id(frame, 77)
    assert BOLT.request_id(bolt.BoltDecoder().feed(rewritten)[0]) == 77
    [reply] = bolt.BoltDecoder().feed(BOLT.error_reply(frame, Failure.TIMEOUT))
    assert (reply.request_id, reply.status) == (frame.request_id, bolt.ResponseStatus.TIMEOUT)
    heartbeat = bolt.heartbeat_request(3)
    assert BOLT.is_heartbeat(heartbeat)
    assert bolt.BoltDecoder().feed(BOLT.heartbeat_reply(heartbeat))[0].is_heartbeat
    assert BOLT.id_bits == 32


def test_dubbo_semantics() -> None:
    frame = DUBBO.decoder(1 << 20).feed(REQUESTS[0])[0]
    assert DUBBO.is_request(frame)
    assert not DUBBO.is_oneway(frame)
    attributes = DUBBO.routing_attributes(frame)
    assert attributes["service"] == "com.example.EchoService"
    assert attributes["method"] == "echo"
    assert attributes["version"] == "1.0.0"
    assert attributes["group"] == "g1"
    assert attributes["traceId"] == "x-1"
    assert DUBBO.id_bits == 64
    rewritten = DUBBO.with_request_id(frame, 2**63)
    assert dubbo.DubboDecoder().feed(rewritten)[0].request_id == 2**63
    [reply] = dubbo.DubboDecoder().feed(DUBBO.error_reply(frame, Failure.NO_HEALTHY_UPSTREAM))
    assert reply.status == dubbo.DubboStatus.SERVICE_NOT_FOUND
    assert reply.body == b"\x17502|no healthy upstream"
    heartbeat = dubbo.heartbeat_request(9)
    assert DUBBO.is_heartbeat(heartbeat)
    assert DUBBO.heartbeat_reply(heartbeat).hex().startswith("dabb2214")


def dubbo_with_attachments(attachments: dict[str, Any], flag: int | None = None) -> dubbo.DubboFrame:
    body = b"".join(
        hessian2.encode(v)
        for v in ("2.7.23", "com.example.EchoService", "1.0.0", "echo", "Ljava/lang/String;", "x", attachments)
    )
    if flag is None:
        flag = dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2
    return dubbo.DubboDecoder().feed(dubbo.DubboFrame(flag, 0, 5, body).encode())[0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1500", 1.5),
        (250, 0.25),
        (0, None),
        ("-3", None),
        ("soon", None),
        (1.5e3, 1.5),
        # Hostile values a peer can put in a map: none may raise out of the
        # proxy's request path (an infinity made int() raise OverflowError).
        (float("inf"), None),
        (float("-inf"), None),
        (float("nan"), None),
        ([1, 2], None),
        (None, None),
        (2**62, 2**62 / 1000),
    ],
)
def test_a_dubbo_timeout_attachment_reads_as_seconds_or_none(value: Any, seconds: float | None) -> None:
    frame = dubbo_with_attachments({"timeout": value})
    assert DUBBO.timeout(frame) == seconds


def test_a_dubbo_request_with_an_unreadable_body_has_no_timeout_of_its_own() -> None:
    good = dubbo_with_attachments({"timeout": "100"})
    broken = dubbo.DubboFrame(good.flag, 0, 5, good.body[:-3])
    assert DUBBO.timeout(broken) is None
    event = dubbo.heartbeat_request(4)
    assert DUBBO.timeout(event) is None


@pytest.mark.parametrize(
    ("frame", "is_request", "oneway", "heartbeat", "response_id"),
    [
        (bolt.heartbeat_request(1), True, False, True, None),
        (bolt.heartbeat_ack(bolt.heartbeat_request(2)), False, False, True, 2),
        (bolt.BoltFrame(bolt.FrameType.ONEWAY, bolt.CmdCode.RPC_REQUEST, 3), True, True, False, None),
        (bolt.BoltFrame(bolt.FrameType.RESPONSE, bolt.CmdCode.RPC_RESPONSE, 4), False, False, False, 4),
        (dubbo.heartbeat_request(5), True, False, True, None),
        (dubbo.heartbeat_response(dubbo.heartbeat_request(6)), False, False, True, 6),
        (dubbo_with_attachments({}, dubbo.FLAG_REQUEST | dubbo.HESSIAN2), True, True, False, None),
        (dubbo.DubboFrame(dubbo.HESSIAN2, 20, 7, b""), False, False, False, 7),
    ],
)
def test_what_the_proxy_asks_of_each_kind_of_frame(
    frame: Any, is_request: bool, oneway: bool, heartbeat: bool, response_id: int | None
) -> None:
    protocol = BOLT if isinstance(frame, bolt.BoltFrame) else DUBBO
    bound = protocol.bound_semantics()
    for semantics in (protocol, bound):  # the classes' methods, and what the proxy calls
        assert semantics.is_request(frame) is is_request
        assert semantics.is_oneway(frame) is oneway
        assert semantics.is_heartbeat(frame) is heartbeat
        assert semantics.response_id(frame) == response_id


def test_a_subclass_overrides_a_compiled_semantics_function_with_a_classmethod() -> None:
    # The two classes' per-frame semantics are static methods (compiled
    # functions); a subclass's classmethod still wins, in the bound
    # semantics the proxy calls too.
    class EveryRequestOneway(BOLT):
        @classmethod
        def is_oneway(cls, frame: bolt.BoltFrame) -> bool:
            return BOLT.is_request(frame)

        @classmethod
        def timeout(cls, frame: bolt.BoltFrame) -> float | None:
            own = super().timeout(frame)
            return None if own is None else own * 2

    frame = BOLT.decoder(1 << 20).feed(STREAMS["c2s"])[0]
    bound = EveryRequestOneway.bound_semantics()
    assert bound.is_oneway(frame)
    assert not BOLT.is_oneway(frame)
    assert bound.timeout(frame) == 4.0
    assert bound.is_request is BOLT.is_request


def decoded_bolt(size: int, *, crc: bool = False) -> bolt.BoltFrame:
    frame = bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        1,
        content=b"c" * size,
        proto=bolt.BOLT_V2 if crc else bolt.BOLT_V1,
        ver1=2 if crc else 1,
        switch=1 if crc else 0,  # bolt v2's CRC switch
    )
    [decoded] = bolt.BoltDecoder().feed(frame.encode())
    assert decoded.has_crc is crc
    return decoded


def decoded_dubbo(size: int) -> dubbo.DubboFrame:
    frame = dubbo.DubboFrame(dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, 1, b"b" * size)
    [decoded] = dubbo.DubboDecoder().feed(frame.encode())
    return decoded


@given(size=SIZES, request_id=st.integers(0, 2**32 - 1), kind=st.sampled_from(["bolt", "bolt-crc", "dubbo"]))
def test_a_long_frame_goes_on_in_two_pieces_that_are_the_frame_with_the_new_id(
    size: int, request_id: int, kind: str
) -> None:
    frame: bolt.BoltFrame | dubbo.DubboFrame
    frame = decoded_dubbo(size) if kind == "dubbo" else decoded_bolt(size, crc=kind == "bolt-crc")
    protocol = DUBBO if kind == "dubbo" else BOLT
    expected = frame.with_request_id(request_id)
    for semantics in (protocol, protocol.bound_semantics()):
        for data in (semantics.encode_request(frame, request_id), semantics.encode_response(frame, frame)):
            # A frame with a CRC is patched whole: the CRC covers it all.
            pieces = len(frame.raw) >= PIECE_FROM and kind != "bolt-crc"
            assert isinstance(data, list) is pieces
            if isinstance(data, list):
                assert len(data) == 2
        assert encoded_bytes(semantics.encode_request(frame, request_id)) == expected
        assert encoded_bytes(semantics.encode_response(frame, frame)) == frame.with_request_id(frame.request_id)
