"""The bolt codec against frames captured from anthunder 0.8.1 (client and server)."""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import SPELLINGS, STREAMS, header_spelling

import sota_xprotocol.bolt as bolt_module
from sota_dispatch import LimitExceeded, ProtocolError
from sota_xprotocol.bolt import (
    BOLT_V1,
    BOLT_V2,
    BoltDecoder,
    BoltFrame,
    CmdCode,
    FrameType,
    decode_header_map,
    encode_frames,
    encode_header_map,
    encode_reply,
    heartbeat_ack,
    heartbeat_request,
)


@pytest.fixture(scope="module", autouse=True, params=SPELLINGS)
def spelling(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test with each spelling of the fixed headers (``struct`` in the
    interpreter, byte arithmetic when compiled)."""
    with header_spelling(bolt_module, request.param):
        yield


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_captured_frames_decode_and_reencode_byte_exact(direction: str) -> None:
    frames = BoltDecoder().feed(STREAMS[direction])
    assert frames
    assert encode_frames(frames) == STREAMS[direction]
    for frame in frames:
        raw = frame.raw
        frame.raw = b""
        frame.header  # decode the header map, so encode() re-encodes it too  # noqa: B018
        assert frame.encode() == raw


def test_captured_request_fields() -> None:
    first = BoltDecoder().feed(STREAMS["c2s"])[0]
    assert first.type is FrameType.REQUEST
    assert first.cmdcode == CmdCode.RPC_REQUEST
    assert first.request_id == 0x5ADED729
    assert first.codec == 11  # protobuf, anthunder's default
    assert first.timeout == 2000
    assert first.class_name == b"com.alipay.sofa.rpc.core.request.SofaRequest"
    assert first.header["service"] == "com.example.EchoService:1.0"
    assert first.header["sofa_head_target_app"] == ""  # empty values are legal


def test_captured_responses_include_error_statuses_and_out_of_order_ids() -> None:
    requests = BoltDecoder().feed(STREAMS["c2s"])
    responses = BoltDecoder().feed(STREAMS["s2c"])
    statuses = {r.status for r in responses}
    assert statuses - {0}, "the capture has error replies"
    assert [r.request_id for r in responses] != sorted(r.request_id for r in responses)
    assert {r.request_id for r in responses} <= {q.request_id for q in requests}


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_split_at_every_offset_gives_the_same_frames(direction: str) -> None:
    data = STREAMS[direction]
    whole = [f.raw for f in BoltDecoder().feed(data)]
    for cut in range(len(data) + 1):
        decoder = BoltDecoder()
        got = [f.raw for f in decoder.feed(data[:cut]) + decoder.feed(data[cut:])]
        assert got == whole, cut


def test_heartbeat_bytes_match_mosn_and_java() -> None:
    # xprotocol-notes 1.1: "01 01 0000 01 <id4> 01 ffffffff 0000 0000 00000000"
    # and the ack "01 00 0000 01 <id4> 01 0000 0000 0000 00000000".
    request = heartbeat_request(7)
    assert request.encode().hex() == "0101000001" + "00000007" + "01" + "ffffffff" + "0000" + "0000" + "00000000"
    ack = heartbeat_ack(request).encode()
    assert ack.hex() == "0100000001" + "00000007" + "01" + "0000" + "0000" + "0000" + "00000000"
    assert BoltDecoder().feed(ack)[0].is_heartbeat


def test_request_id_rewrite_patches_only_four_bytes() -> None:
    frame = BoltDecoder().feed(STREAMS["c2s"])[0]
    patched = frame.with_request_id(0xFFFFFFFF)
    assert patched[:5] == frame.raw[:5]
    assert patched[5:9] == b"\xff\xff\xff\xff"
    assert patched[9:] == frame.raw[9:]
    assert BoltDecoder().feed(patched)[0].request_id == 0xFFFFFFFF


def v2_frame(*, crc: bool, content: bytes = b"hello") -> BoltFrame:
    return BoltFrame(
        FrameType.REQUEST,
        CmdCode.RPC_REQUEST,
        42,
        codec=1,
        timeout=3000,
        class_name=b"cls",
        header_bytes=encode_header_map({"service": "a.B:1.0"}),
        content=content,
        proto=BOLT_V2,
        ver1=2 if crc else 1,
        switch=1 if crc else 0,
    )


def test_bolt_v2_with_crc_round_trip_and_id_rewrite() -> None:
    frame = v2_frame(crc=True)
    data = frame.encode()
    body = data[:-4]
    assert struct.unpack(">i", data[-4:])[0] == struct.unpack(">i", struct.pack(">I", zlib.crc32(body)))[0]
    [decoded] = BoltDecoder().feed(data)
    assert decoded.header == {"service": "a.B:1.0"}
    assert decoded.content == b"hello"
    rewritten = decoded.with_request_id(99)
    assert BoltDecoder().feed(rewritten)[0].request_id == 99  # the CRC was recomputed


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("first", ["class_name", "header_bytes", "content", None])
def test_a_decoded_frames_parts_are_cut_out_when_first_used_and_stay_its_own(first: str | None, crc: bool) -> None:
    """class_name, header_bytes and content are cut out of the decoded bytes
    on first use: setting one keeps the others, replacing ``raw`` (to make
    ``encode`` run again) keeps all three, a v2 CRC is never part of the content."""
    made = v2_frame(crc=crc) if crc else BoltFrame(FrameType.REQUEST, CmdCode.RPC_REQUEST, 7, content=b"hello")
    made.class_name, made.header_bytes = b"com.example.Req", encode_header_map({"service": "a.B:1.0"})
    stream = made.encode() + made.encode()  # two in one read: each cuts its own bytes only
    decoded, other = BoltDecoder().feed(stream)
    if first is not None:
        setattr(decoded, first, b"new")
    decoded.raw = b"garbage"
    expected = {"class_name": b"com.example.Req", "header_bytes": made.header_bytes, "content": made.content}
    if first is not None:
        expected[first] = b"new"
    assert {name: getattr(decoded, name) for name in expected} == expected
    assert (other.content, other.class_name) == (made.content, made.class_name)
    decoded.raw = b""
    again = BoltDecoder().feed(decoded.encode())[0]
    assert (again.class_name, again.header_bytes, again.content) == tuple(expected.values())


def test_bolt_v2_without_crc_id_rewrite_patches_bytes_6_to_10() -> None:
    frame = v2_frame(crc=False)
    data = frame.encode()
    [decoded] = BoltDecoder().feed(data)
    rewritten = decoded.with_request_id(0x01020304)
    assert rewritten == data[:6] + b"\x01\x02\x03\x04" + data[10:]
    again = BoltDecoder().feed(rewritten)[0]
    assert (again.request_id, again.proto, again.timeout, again.content) == (0x01020304, BOLT_V2, 3000, b"hello")


def test_a_frame_matches_positionally_and_shows_its_fields_as_the_attrs_class_did() -> None:
    # A plain class since 0.2 (a native one in the compiled build): what the
    # attrs class gave its users stays: keywords, positional patterns, repr.
    frame = BoltFrame(FrameType.REQUEST, CmdCode.RPC_REQUEST, 7, timeout=30, content=b"hi")
    match frame:
        case BoltFrame(FrameType.REQUEST, CmdCode.RPC_REQUEST, request_id, 1, timeout):
            assert (request_id, timeout) == (7, 30)
        case _:
            pytest.fail("no match")
    # (cmdcode is an int field: the compiled build keeps CmdCode's int value.)
    assert repr(frame).startswith("BoltFrame(type=<FrameType.REQUEST: 1>, cmdcode=")
    assert repr(frame).endswith(
        ", request_id=7, codec=1, timeout=30, status=0, class_name=b'', header_bytes=b'', content=b'hi',"
        " proto=1, ver1=1, switch=0, ver2=1, raw=b'')"
    )
    assert frame != BoltFrame(FrameType.REQUEST, CmdCode.RPC_REQUEST, 7, timeout=30, content=b"hi")  # identity


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_id_rewrite_hands_back_bytes_whatever_raw_is(kind: type) -> None:
    frame = BoltDecoder().feed(STREAMS["c2s"])[0]
    expected = frame.with_request_id(5)
    frame.raw = kind(frame.raw)
    rewritten = frame.with_request_id(5)
    assert type(rewritten) is bytes
    assert rewritten == expected


def test_bolt_v2_crc_mismatch_is_a_protocol_error() -> None:
    data = bytearray(v2_frame(crc=True).encode())
    data[-5] ^= 0xFF  # a content byte
    with pytest.raises(ProtocolError, match="CRC"):
        BoltDecoder().feed(bytes(data))


def test_v1_and_v2_frames_on_one_connection() -> None:
    data = v2_frame(crc=False).encode() + heartbeat_request(1).encode() + v2_frame(crc=True).encode()
    frames = BoltDecoder().feed(data)
    assert [f.proto for f in frames] == [BOLT_V2, BOLT_V1, BOLT_V2]


def test_null_header_pairs_are_dropped_without_desynchronising() -> None:
    null = b"\xff\xff\xff\xff"
    data = (
        struct.pack(">I", 1)
        + b"a"
        + null  # null value: the pair is dropped
        + null
        + struct.pack(">I", 1)
        + b"x"  # null key: dropped too
        + struct.pack(">I", 7)
        + b"service"
        + struct.pack(">I", 3)
        + b"a.B"
    )
    assert decode_header_map(data) == {"service": "a.B"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x03", "protocol byte 0x03"),
        (b"\x01\x05", "frame type 5"),
        (bytes.fromhex("0101000901") + bytes(17), "cmdcode 9"),
    ],
)
def test_garbage_fails_at_once(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        BoltDecoder().feed(data)


def test_frame_size_is_checked_on_the_header() -> None:
    header = bytes.fromhex("01010001010000000101ffffffff") + struct.pack(">HHI", 0, 0, 9 * 1024 * 1024)
    with pytest.raises(LimitExceeded):
        BoltDecoder().feed(header)  # no body needed


def test_bad_header_map_is_a_protocol_error() -> None:
    frame = v2_frame(crc=False)
    frame.header_bytes = b"\x00\x00\x00\x09abc"
    [decoded] = BoltDecoder().feed(frame.encode())
    with pytest.raises(ProtocolError, match="past the end"):
        _ = decoded.header


# -- properties -------------------------------------------------------------

headers = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)
frames_strategy = st.builds(
    lambda kind, cmd, rid, codec, timeout, status, cls, header, content, proto, crc: BoltFrame(
        kind,
        cmd,
        rid,
        codec=codec,
        timeout=timeout,
        status=status,
        class_name=cls,
        header_bytes=encode_header_map(header),
        content=content,
        proto=proto,
        ver1=2 if crc and proto == BOLT_V2 else 1,
        switch=1 if crc and proto == BOLT_V2 else 0,
    ),
    st.sampled_from(list(FrameType)),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 0xFFFF),
    st.binary(max_size=50),
    headers,
    st.binary(max_size=300),
    st.sampled_from([BOLT_V1, BOLT_V2]),
    st.booleans(),
)


@settings(max_examples=150)
@given(st.lists(frames_strategy, min_size=1, max_size=5), st.integers(min_value=0))
def test_generated_streams_round_trip_at_any_split(frames: list[BoltFrame], cut: int) -> None:
    data = encode_frames(frames)
    cut %= len(data) + 1
    decoder = BoltDecoder()
    decoded = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    assert encode_frames(decoded) == data
    for original, copy in zip(frames, decoded, strict=True):
        assert copy.request_id == original.request_id
        assert copy.content == original.content
        assert copy.header == decode_header_map(original.header_bytes)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors_or_needs_more(data: bytes) -> None:
    try:
        frames = BoltDecoder().feed(data)
    except ProtocolError:
        return
    for frame in frames:
        with contextlib.suppress(ProtocolError):
            _ = frame.header


@settings(max_examples=200)
@given(frames_strategy, st.integers(0, 0xFFFF), st.binary(max_size=20), headers, st.binary(max_size=100))
def test_a_reply_is_the_response_to_its_request(
    request: BoltFrame, status: int, class_name: bytes, header: dict[str, str], content: bytes
) -> None:
    header_bytes = encode_header_map(header)
    reply = encode_reply(request, status=status, class_name=class_name, header_bytes=header_bytes, content=content)
    (decoded,) = BoltDecoder().feed(reply)  # whole, alone, and a v2 CRC checks out
    assert (decoded.type, decoded.cmdcode, decoded.status) == (FrameType.RESPONSE, CmdCode.RPC_RESPONSE, status)
    assert (decoded.class_name, decoded.header_bytes, decoded.content) == (class_name, header_bytes, content)
    kept = ("request_id", "codec", "proto", "ver1", "switch", "ver2")
    assert [getattr(decoded, name) for name in kept] == [getattr(request, name) for name in kept]
