"""The attachment scan (sota_xprotocol.dubbo_scan) against decoding the call.

The scan may decline (CannotTell) wherever it likes; where it answers, the
answer must be what ``DubboFrame.call().attachments.get(key)`` gives on the
same body, and it must answer for the shape real clients send (else the
proxy's fast path would be dead code and these tests could not tell).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import REQUESTS, surrogate_text, values

from sota_dispatch import ProtocolError
from sota_xprotocol import hessian2
from sota_xprotocol.dubbo import FLAG_EVENT, FLAG_REQUEST, FLAG_TWOWAY, HESSIAN2, DubboDecoder, DubboFrame
from sota_xprotocol.dubbo_scan import CannotTell, attachment_text
from sota_xprotocol.semantics import dubbo_timeout

KEYS = ("timeout", "group", "path", "interface", "traceId", "missing", "")


def decoded(body: bytes, key: str) -> tuple[str, Any]:
    """What decoding the call says of ``key``: ("value", v) or ("error", None)."""
    frame = DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 0, 1, body)
    try:
        return "value", frame.call().attachments.get(key)
    except (ValueError, ProtocolError):
        return "error", None


def agrees(body: bytes, key: str) -> bool:
    """The scan declines or gives decoding's answer; True if it answered."""
    try:
        text = attachment_text(body, key.encode())
    except CannotTell:
        return False
    assert decoded(body, key) == ("value", text), (body.hex(), key)
    return True


def typed_map(entries: dict[Any, Any]) -> hessian2.TypedMap:
    typed = hessian2.TypedMap("java.util.HashMap")
    typed.update(entries)
    return typed


def body_of(*items: Any) -> bytes:
    return b"".join(hessian2.encode(item) for item in items)


# -- what real clients send ---------------------------------------------------------


def test_the_scan_answers_every_well_formed_call_dubbo_ssl_python_sends() -> None:
    declined = []
    for raw in REQUESTS:
        [frame] = DubboDecoder().feed(raw)
        results = {agrees(frame.body, key) for key in KEYS}
        assert len(results) == 1  # the shape decides, not the key
        if results == {False}:
            declined.append(frame.body)
    # The one it declines is the capture's truncated 70,000-character
    # string, which decoding rejects too.
    [truncated] = declined
    assert decoded(truncated, "group") == ("error", None)
    assert len(REQUESTS) == 16
    assert attachment_text(DubboDecoder().feed(REQUESTS[0])[0].body, b"group") == "g1"


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        # Java's shape: version may be null, long paths are medium strings,
        # an object argument goes through the skipper, a typed map.
        (("2.7.23", "p" * 300, None, "m", "Lcom/x/Pojo;[I", {"a": [1, {"b": 2}]}, [1, 2], {"timeout": "3000"}), "3000"),
        (("2.0.2", "S", "1.0", "m", "", {"x": "1", "timeout": "25", "y": None}), "25"),
        (("2.0.2", "S", "1.0", "m", "", typed_map({"timeout": "7"})), "7"),
        (("2.0.2", "S", "1.0", "m", "J", 5, {"timeout": None}), None),
        (("2.0.2", "S", "1.0", "m", "Ljava/lang/String;", "t" * 1000, {"group": "g"}), None),
        (("2.0.2", "S", "1.0", "m", "Ljava/lang/String;", "x"), None),  # no attachments at all
        (("2.0.2", "S", "1.0", "m", "II", 1, {"timeout": "1"}), None),  # the map is an argument
    ],
)
def test_the_scan_reads_the_common_shapes(items: tuple[Any, ...], expected: str | None) -> None:
    body = body_of(*items)
    assert attachment_text(body, b"timeout") == expected
    assert agrees(body, "timeout")


def test_a_later_duplicate_key_wins_as_in_the_decoded_map() -> None:
    head = body_of("2.0.2", "S", "1.0", "m", "")
    pair = hessian2.encode("timeout")
    body = head + b"H" + pair + hessian2.encode("10") + pair + hessian2.encode("20") + b"Z"
    assert attachment_text(body, b"timeout") == "20"
    assert agrees(body, "timeout")
    nulled = head + b"H" + pair + hessian2.encode("10") + pair + b"NZ"
    assert attachment_text(nulled, b"timeout") is None
    assert agrees(nulled, "timeout")


@pytest.mark.parametrize(
    "items",
    [
        ("2.0.2", "S", "1.0", "m", "", {"timeout": 3000}),  # an int value: decoding says
        ("2.0.2", "S", "1.0", "m", "", {"timeout": "é"}),  # not ASCII
        ("2.0.2", "Sé", "1.0", "m", "", {"timeout": "1"}),  # a header string not ASCII
        # Non-ASCII text whose bytes, if its length counted bytes, would read
        # on as other values (found by a random search against a scan
        # without its ASCII checks: it answered None, None and "t").
        ("5", "timeouté\x00", "a", "ZI", "", {"timeout": "5Zt"}),
        ("2", "S", None, "m", "", {"é\x00": "", "timeout": "éN"}),
        ("2", "S", None, "m", "", {"€\x07\x04\x07": None, "\x04\x07timeout": "t"}),
        ("2.0.2", "S", "1.0", "m", "", {1: "1"}),  # a key that is not a string
        ("2.0.2", "S", "1.0", "m", "", {"k" * 40: "1"}),  # a long key
        ("2.0.2", "S", "1.0", "m", "I", 1, {"timeout": "1"}, {}),  # a value after the map
        ("2.0.2", "S", "1.0", "m", "V", {"timeout": "1"}),  # not a descriptor letter
        ("2.0.2", "S", 5, "m", "", {"timeout": "1"}),  # a header value not a string
        ("2.0.2", None, "1.0", "m", "", {"timeout": "1"}),  # only the version may be null
        ("2.0.2", "S", "1.0", "m", "X", 1, {"timeout": "1"}),  # not a descriptor letter
        ("2.0.2", "S", "1.0", "m", "[", 2**20, {"timeout": "1"}),  # ends after '[' (the int's tag is I)
        ("2.0.2", "S", "1.0", "m", "", ["timeout", "1"]),  # attachments not a map
        ("2.0.2", "S", "1.0"),  # too short
    ],
)
def test_the_scan_declines_what_only_decoding_can_answer(items: tuple[Any, ...]) -> None:
    body = body_of(*items)
    with pytest.raises(CannotTell):
        attachment_text(body, b"timeout")


def test_a_reference_to_an_argument_or_a_chunked_string_is_left_to_decoding() -> None:
    head = body_of("2.0.2", "S", None, "m", "Ljava/util/Map;", {"k": "v"})
    referring = head + b"H" + hessian2.encode("timeout") + b"\x51\x90Z"
    chunked = head + b"H" + hessian2.encode("timeout") + b"R\x00\x01" + b"1" + b"\x01" + b"2Z"
    for body in (referring, chunked):
        with pytest.raises(CannotTell):
            attachment_text(body, b"timeout")
    assert decoded(chunked, "timeout") == ("value", "12")


# -- properties --------------------------------------------------------------------

ascii_text = st.text(st.characters(max_codepoint=0x7F), max_size=300)
#: Text whose non-ASCII characters, counted as one byte each, leave bytes
#: that read as hessian2 tags (empty and short strings, an int, a map, the
#: end, null): a scan that trusted such lengths would read on out of step.
misleading_text = st.text(
    st.sampled_from(["é", "€", "\x00", "\x01", "\x02", "\x05", "I", "H", "Z", "N", "a"]), max_size=8
)
header_text = st.one_of(ascii_text, st.text(max_size=40), surrogate_text, misleading_text)
descriptors = st.lists(
    st.sampled_from(["I", "J", "Z", "D", "[I", "[[B", "Ljava/lang/String;", "Ljava/lang/Object;", "V", "L", "["])
    | st.text("IJZDBCSFLV[;aX", max_size=3),
    max_size=4,
).map("".join)
java_longs = st.integers(-(2**63), 2**63 - 1)
attachment_values = st.one_of(
    st.none(), ascii_text, st.text(max_size=20), misleading_text, java_longs, st.floats(), values
)
attachment_maps = st.dictionaries(
    st.sampled_from(KEYS[:-2]) | st.text(max_size=40) | misleading_text, attachment_values, max_size=6
)


@st.composite
def calls(draw: st.DrawFn) -> bytes:
    """A dubbo call's body: often well formed, sometimes off by a value."""
    strings = header_text | st.none() if draw(st.integers(0, 9)) == 0 else header_text  # null: only the version
    version = draw(st.none() | header_text)
    header = [draw(strings), draw(strings), version, draw(strings), draw(descriptors)]
    arguments = draw(st.lists(values | ascii_text, max_size=4))
    items: list[Any] = [*header, *arguments]
    attachments = draw(st.none() | attachment_maps)
    if attachments is not None:
        typed = draw(st.booleans())
        items.append(typed_map(attachments) if typed else attachments)
    return body_of(*items)


@settings(max_examples=300)
@given(calls(), st.sampled_from(KEYS))
def test_where_the_scan_answers_it_agrees_with_decoding(body: bytes, key: str) -> None:
    agrees(body, key)


@settings(max_examples=150)
@given(calls(), st.integers(0, 2**16), st.binary(max_size=3), st.sampled_from(KEYS))
def test_damaged_calls_and_garbage_only_ever_decline(body: bytes, where: int, junk: bytes, key: str) -> None:
    at = where % (len(body) + 1)
    for damaged in (body[:at], body[:at] + junk + body[at + len(junk) :], junk + body, body + junk):
        agrees(damaged, key)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.sampled_from(KEYS))
def test_random_bytes_only_ever_decline_or_agree(body: bytes, key: str) -> None:
    agrees(body, key)


short_ascii = st.text(st.characters(max_codepoint=0x7F), max_size=127)


@settings(max_examples=200)
@given(
    st.lists(short_ascii, min_size=4, max_size=4),
    st.booleans(),
    st.lists(java_longs | ascii_text, max_size=3),
    st.dictionaries(st.sampled_from(KEYS[:-1]) | short_ascii.filter(lambda k: len(k) < 32), st.none() | short_ascii),
)
def test_the_scan_answers_calls_of_ascii_strings(
    header: list[str], null_version: bool, arguments: list[Any], attachments: dict[str, str | None]
) -> None:
    # Strings under 128 characters: a medium string's length byte stays
    # ASCII (longer ones may go to decoding, whose answer is checked above).
    version = None if null_version else header[2]
    descriptor = "Ljava/lang/Object;" * len(arguments)
    body = body_of(header[0], header[1], version, header[3], descriptor, *arguments, attachments)
    for key in KEYS:
        assert agrees(body, key)


# -- the proxy's timeout ---------------------------------------------------------------


def test_the_timeout_is_read_alike_before_and_after_the_call_is_decoded() -> None:
    body = body_of("2.7.23", "S", "1.0", "m", "", {"timeout": "1500", "group": "g"})
    fresh = DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2, 0, 1, body)
    assert not fresh.decoded
    assert dubbo_timeout(fresh) == 1.5
    assert not fresh.decoded  # read by the scan, nothing decoded
    assert fresh.call().group == "g"
    assert fresh.decoded
    assert dubbo_timeout(fresh) == 1.5
    # An event or another serialization never goes to the scan.
    event = DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | FLAG_EVENT | HESSIAN2, 0, 1, body)
    assert dubbo_timeout(event) is None
    assert dubbo_timeout(DubboFrame(FLAG_REQUEST | FLAG_TWOWAY | 6, 0, 1, body)) is None
