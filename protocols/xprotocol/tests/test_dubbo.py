"""The dubbo codec against dubbo-ssl-python 0.9.6's requests and a provider's replies."""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import (
    DUBBO_ROWS,
    REQUESTS,
    SPELLINGS,
    decoded_date,
    header_spelling,
    java_millis,
    surrogate_text,
)

import sota_xprotocol.dubbo as dubbo_module
from sota_dispatch import LimitExceeded, ProtocolError
from sota_dispatch.config import MatchConfig
from sota_dispatch.config.matching import compile_match
from sota_xprotocol import DubboDispatcher, JavaDate, hessian2
from sota_xprotocol.dubbo import (
    FLAG_REQUEST,
    FLAG_TWOWAY,
    HESSIAN2,
    Call,
    DubboDecoder,
    DubboFrame,
    DubboStatus,
    count_arguments,
    encode_frames,
    error_response,
    heartbeat_request,
    heartbeat_response,
    value_response,
)
from sota_xprotocol.hessian2 import HessianObject

ROWS = DUBBO_ROWS
REPLIES = [bytes.fromhex(r["hex"]) for r in ROWS if r["kind"] == "server->client"]
# Each "decoded" row describes the request just before it.
DECODED = {
    i: json.loads(ROWS[j + 1]["extra"])  # the extra field holds JSON text
    for i, j in enumerate(k for k, r in enumerate(ROWS) if r["kind"] == "client->server")
    if j + 1 < len(ROWS) and ROWS[j + 1]["kind"] == "decoded"
}


@pytest.fixture(scope="module", autouse=True, params=SPELLINGS)
def spelling(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test with each spelling of the fixed header (``struct`` in the
    interpreter, byte arithmetic when compiled)."""
    with header_spelling(dubbo_module, request.param):
        yield


def plain(value: Any) -> Any:
    """The reference decoder's shapes: objects as dicts with '$class'."""
    if isinstance(value, HessianObject):
        return {"$class": value.type, **{k: plain(v) for k, v in value.fields.items()}}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("stream", [REQUESTS, REPLIES], ids=["requests", "replies"])
def test_captured_frames_round_trip_byte_exact(stream: list[bytes]) -> None:
    data = b"".join(stream)
    frames = DubboDecoder().feed(data)
    assert [f.raw for f in frames] == stream
    for frame in frames:
        raw, frame.raw = frame.raw, b""
        assert frame.encode() == raw


@pytest.mark.parametrize("index", sorted(DECODED))
def test_invocations_match_the_reference_decoder(index: int) -> None:
    expected = DECODED[index]
    [frame] = DubboDecoder().feed(REQUESTS[index])
    invocation = frame.invocation()
    assert invocation.dubbo_version == expected["dubbo"]
    assert invocation.path == expected["path"]
    assert invocation.version == expected["version"]
    assert invocation.method == expected["method"]
    assert invocation.descriptor == expected["desc"]
    assert plain(list(invocation.arguments)) == ast.literal_eval(expected["args"])
    assert plain(dict(invocation.attachments)) == ast.literal_eval(expected["attachments"])
    assert invocation.group == "g1"
    assert invocation.interface == "com.example.EchoService"


def test_dubbo_ssl_pythons_truncated_long_string_is_a_protocol_error() -> None:
    # The client writes a 70,000-char string with a 16-bit 'S' length (its bug):
    # the body no longer parses, and that must be a clean ProtocolError.
    [frame] = DubboDecoder().feed(next(r for r in REQUESTS if len(r) > 60000))
    with pytest.raises(ProtocolError):
        frame.invocation()


def test_value_responses_reproduce_the_providers_bytes() -> None:
    frames = DubboDecoder().feed(b"".join(REQUESTS))
    by_id = {f.request_id: f for f in DubboDecoder().feed(b"".join(REPLIES))}
    checked = 0
    for request in frames:
        reply = by_id.get(request.request_id)
        if reply is None or reply.status != DubboStatus.OK or request.invocation().method not in ("echo", "slow"):
            continue
        invocation = request.invocation()
        if not isinstance(invocation.arguments[0], str):
            continue
        ours = value_response(request, invocation.arguments[0], dubbo_version=invocation.dubbo_version)
        assert ours.encode() == reply.raw, invocation
        checked += 1
    assert checked >= 10  # type 1 for 2.4.10/2.7.23, type 4 with attachments for 2.0.2


def test_error_response_reproduces_the_providers_bytes() -> None:
    replies = DubboDecoder().feed(b"".join(REPLIES))
    failed = next(r for r in replies if r.status == DubboStatus.SERVICE_ERROR)
    [request] = [f for f in DubboDecoder().feed(b"".join(REQUESTS)) if f.request_id == failed.request_id]
    ours = error_response(request, DubboStatus.SERVICE_ERROR, "70|simulated service error")
    assert ours.encode() == failed.raw


def test_heartbeats_are_canonical() -> None:
    request = heartbeat_request(5)
    assert request.encode().hex() == "dabbe200" + "0000000000000005" + "00000001" + "4e"
    [decoded] = DubboDecoder().feed(request.raw)
    assert decoded.is_heartbeat
    assert heartbeat_response(decoded).encode().hex() == "dabb2214" + "0000000000000005" + "00000001" + "4e"


def test_request_id_rewrite_patches_eight_bytes() -> None:
    [frame] = DubboDecoder().feed(REQUESTS[0])
    patched = frame.with_request_id(2**64 - 1)
    assert patched[4:12] == b"\xff" * 8
    assert patched[:4] + patched[12:] == frame.raw[:4] + frame.raw[12:]


def test_magic_is_checked_on_every_frame() -> None:
    decoder = DubboDecoder()
    assert len(decoder.feed(REQUESTS[0])) == 1
    with pytest.raises(ProtocolError, match="magic"):
        decoder.feed(b"\xda\xbc" + REQUESTS[1][2:])


@pytest.mark.parametrize("prefix", [b"\x00", b"\xda\x00", b"GET / HTTP/1.1\r\n"])
def test_a_wrong_first_byte_fails_at_once(prefix: bytes) -> None:
    with pytest.raises(ProtocolError, match="not a dubbo frame"):
        DubboDecoder().feed(prefix)


def test_body_length_is_checked_on_the_header() -> None:
    with pytest.raises(LimitExceeded):
        DubboDecoder().feed(b"\xda\xbb\xc2\x00" + bytes(8) + (9 * 1024 * 1024).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="negative"):
        DubboDecoder().feed(b"\xda\xbb\xc2\x00" + bytes(8) + b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("descriptor", "count"),
    [("", 0), ("Ljava/lang/String;IZD", 4), ("[I[[Ljava/lang/String;J", 3), ("Lcom/example/Req;", 1)],
)
def test_count_arguments(descriptor: str, count: int) -> None:
    assert count_arguments(descriptor) == count


@pytest.mark.parametrize("descriptor", ["Ljava/lang/String", "[", "Q", "I["])
def test_bad_descriptors(descriptor: str) -> None:
    with pytest.raises(ProtocolError, match="descriptor"):
        count_arguments(descriptor)


# -- properties -------------------------------------------------------------

frames_strategy = st.builds(
    DubboFrame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
)


@settings(max_examples=150)
@given(st.lists(frames_strategy, min_size=1, max_size=5), st.integers(min_value=0))
def test_generated_streams_round_trip_at_any_split(frames: list[DubboFrame], cut: int) -> None:
    data = encode_frames(frames)
    cut %= len(data) + 1
    decoder = DubboDecoder()
    decoded = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    assert encode_frames(decoded) == data
    assert [f.request_id for f in decoded] == [f.request_id for f in frames]


def test_captured_requests_split_at_every_offset() -> None:
    data = b"".join(REQUESTS[:3])
    for cut in range(len(data) + 1):
        decoder = DubboDecoder()
        assert [f.raw for f in decoder.feed(data[:cut]) + decoder.feed(data[cut:])] == REQUESTS[:3]


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    try:
        frames = DubboDecoder().feed(b"\xda\xbb\xc2\x00" + bytes(8) + len(data).to_bytes(4, "big") + data)
    except ProtocolError:
        return
    with contextlib.suppress(ProtocolError):
        frames[0].invocation()
    with contextlib.suppress(ProtocolError):
        frames[0].call()


def test_a_frame_matches_positionally_and_shows_its_fields_as_the_attrs_class_did() -> None:
    frame = DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 0, 9, b"N")
    match frame:
        case DubboFrame(flag, 0, request_id, body):
            assert (flag, request_id, body) == (FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 9, b"N")
        case _:
            pytest.fail("no match")
    assert repr(frame) == "DubboFrame(flag=194, status=0, request_id=9, body=b'N', raw=b'')"


def test_a_call_is_read_only_and_compares_by_its_fields() -> None:
    call = request_frame("2.0.2", "com.example.S", "1.0", "m", "I", 5, {"group": "g"}).call()
    same = request_frame("2.0.2", "com.example.S", "1.0", "m", "I", 7, {"group": "g"}).call()
    assert call == same  # the argument's value is not part of it; its count is
    assert call != request_frame("2.0.2", "com.example.S", "1.0", "n", "I", 5, {"group": "g"}).call()
    with pytest.raises(AttributeError):
        call.path = "other"  # type: ignore[misc]
    match call:
        case Call(version, path, service_version, method, descriptor, count, attachments):
            assert (version, path, service_version, method, descriptor, count) == (
                "2.0.2",
                "com.example.S",
                "1.0",
                "m",
                "I",
                1,
            )
            assert attachments == {"group": "g"}
        case _:
            pytest.fail("no match")
    assert repr(call) == (
        "Call(dubbo_version='2.0.2', path='com.example.S', version='1.0', method='m', descriptor='I',"
        " argument_count=1, attachments={'group': 'g'})"
    )
    assert (call.interface, call.group) == ("com.example.S", "g")


# -- call(): the arguments walked over -------------------------------------------


def request_frame(*values: Any) -> DubboFrame:
    body = b"".join(hessian2.encode(v) for v in values)
    return DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 0, 1, body)


def same_call(frame: DubboFrame) -> None:
    invocation = DubboFrame(frame.flag, frame.status, frame.request_id, frame.body).invocation()
    call = frame.call()
    assert (call.dubbo_version, call.path, call.version, call.method, call.descriptor) == (
        invocation.dubbo_version,
        invocation.path,
        invocation.version,
        invocation.method,
        invocation.descriptor,
    )
    assert call.argument_count == len(invocation.arguments)
    assert call.attachments == invocation.attachments
    assert (call.interface, call.group) == (invocation.interface, invocation.group)
    assert frame.argument_bytes() == invocation.argument_bytes  # walked over, the same bytes
    decoded_first = DubboFrame(frame.flag, frame.status, frame.request_id, frame.body)
    decoded_first.invocation()
    assert decoded_first.argument_bytes() == invocation.argument_bytes


@pytest.mark.parametrize("index", sorted(DECODED))
def test_call_agrees_with_the_full_invocation_on_captured_requests(index: int) -> None:
    [frame] = DubboDecoder().feed(REQUESTS[index])
    same_call(frame)


def test_call_of_the_truncated_long_string_is_a_protocol_error_too() -> None:
    [frame] = DubboDecoder().feed(next(r for r in REQUESTS if len(r) > 60000))
    with pytest.raises(ProtocolError):
        frame.call()


arguments = st.lists(
    st.recursive(
        st.none()
        | st.integers(-(2**31), 2**31 - 1)
        | st.text(max_size=30)
        | surrogate_text
        | java_millis.map(decoded_date)
        | st.binary(max_size=30),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=12,
    ),
    max_size=4,
)


@settings(max_examples=200)
@given(arguments, st.dictionaries(st.text(max_size=8), st.text(max_size=8) | surrogate_text, max_size=4), st.booleans())
def test_call_agrees_with_the_full_invocation(args: list[Any], attachments: dict[str, str], attach: bool) -> None:
    descriptor = "Ljava/lang/Object;" * len(args)
    values = ["2.0.2", "com.example.S", "1.0", "m", descriptor, *args]
    same_call(request_frame(*values, attachments) if attach else request_frame(*values))


def test_attachments_referring_into_an_argument_are_read_by_decoding_everything() -> None:
    shared = {"k": "v"}
    body = b"".join(hessian2.encode(v) for v in ("2.0.2", "S", None, "m", "Ljava/util/Map;", shared))
    body += b"H" + hessian2.encode("shared") + b"\x51\x90" + hessian2.encode("group") + hessian2.encode("g") + b"Z"
    frame = DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 0, 1, body)
    call = frame.call()
    assert call.attachments == {"shared": {"k": "v"}, "group": "g"}
    assert call.group == "g"
    assert frame.argument_bytes() == (hessian2.encode(shared),)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("2.0.2", "S", None, "m"), "fewer than 5"),
        (("2.0.2", "S", None, "m", "II", 1), "wants 2 arguments, the body has 1"),
        (("2.0.2", "S", None, "m", "I", 1, {}, 2), "the body has more values"),
        (("2.0.2", "S", None, "m", "I", 1, [1]), "attachments are not a map"),
        (("2.0.2", 5, None, "m", "I", 1), "not strings"),
    ],
)
def test_call_rejects_malformed_bodies(values: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        request_frame(*values).call()
    with pytest.raises(ProtocolError, match=message):
        request_frame(*values).argument_bytes()


# -- what Java may send that Python's types are narrower for ---------------------


def test_lone_surrogates_and_far_dates_are_read_where_a_proxy_routes() -> None:
    # A Java String may hold a lone surrogate, a Date any long of milliseconds:
    # in the header values, the arguments walked over and the attachments.
    far = JavaDate(2**62)
    before_year_1 = decoded_date(-(2**40) * 60000)
    attachments = {"group": "g\udfff", "traceId": "t-\ud83d", "deadline": far, "since": before_year_1}
    descriptor = "Ljava/lang/String;Ljava/util/Date;"
    frame = request_frame("2.7.23", "com.example.S\ud800", "1.0", "m", descriptor, "arg\udc00", far, attachments)
    call = frame.call()
    assert (call.path, call.group, call.argument_count, dict(call.attachments)) == (
        "com.example.S\ud800",
        "g\udfff",
        2,
        attachments,
    )
    assert frame.invocation().arguments == ("arg\udc00", far)
    attributes = DubboDispatcher.routing_attributes(frame)
    assert (attributes["service"], attributes["group"], attributes["traceId"]) == (
        "com.example.S\ud800",
        "g\udfff",
        "t-\ud83d",
    )
    # A route's regex and exact matches work on such text as on any other.
    assert compile_match(MatchConfig("traceId", regex="t-."))(attributes)
    assert compile_match(MatchConfig("group", exact="g\udfff"))(attributes)
    assert not compile_match(MatchConfig("group", regex="g"))(attributes)


@pytest.mark.parametrize(
    ("dubbo_version", "with_attachments"),
    [
        ("2.0.2", True),
        ("2.0.002", True),
        ("2.0.99-SNAPSHOT", True),
        ("2.0.100", False),
        ("2.7.23", False),
        ("2.0." + "9" * 5000, False),  # int() refuses 4,300+ digits
        ("2.0." + "0" * 5000 + "2", True),
    ],
    ids=lambda v: v if len(str(v)) < 20 else "5000-digits",
)
def test_the_response_type_follows_the_callers_version_and_a_hostile_one_is_answered(
    dubbo_version: str, with_attachments: bool
) -> None:
    from sota_xprotocol.service import echo_dubbo

    values: tuple[object, ...] = (dubbo_version, "com.example.S", "1.0", "echo", "Ljava/lang/String;", "hi", {})
    request = DubboFrame(0xC2, 0, 7, b"".join(hessian2.encode(v) for v in values))
    [reply] = DubboDecoder().feed(echo_dubbo(request) or b"")
    kind, *rest = hessian2.decode_all(reply.body)
    assert (reply.status, reply.request_id) == (DubboStatus.OK, 7)
    assert kind == (4 if with_attachments else 1)
    assert rest == (["hi", {"dubbo": "2.0.2"}] if with_attachments else ["hi"])


def test_the_table_of_versions_seen_stays_bounded() -> None:
    from sota_xprotocol import dubbo

    for i in range(1000):
        assert dubbo._supports_response_attachments(f"2.0.{i}") == (2 <= i <= 99)
    assert len(dubbo._ATTACHMENT_VERSIONS) <= 64
