"""Our Hessian 2 subset against Java's own encodings (Caucho 4.0.38, OpenJDK 17)."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import (
    EDGES,
    decoded_date,
    java_millis,
    surrogate_text,
    values,
)

from sota_dispatch import ProtocolError
from sota_xprotocol.hessian2 import (
    Hessian2Error,
    HessianObject,
    JavaDate,
    NeedMoreData,
    Reader,
    SkippedReference,
    TypedMap,
    decode,
    decode_all,
    decode_spans,
    encode,
    encode_long,
    skip,
)

VECTORS = dict(
    line.rstrip("\n").split("\t")
    for line in (Path(__file__).parent / "vectors" / "hessian2_java.tsv").read_text().splitlines()
    if line.strip()
)

EXPECTED: dict[str, Any] = {
    "string:a\\U0001F600": "a\U0001f600",
    "string:z*70000": "z" * 70000,
    "string:x*32767+\\U0001F600+tail": "x" * 32767 + "\U0001f600" + "tail",
    "string:~*40000": "~" * 40000,
    "string:empty": "",
    "string:1023 chars": "q" * 1023,
    "string:1024 chars": "q" * 1024,
    "map:HashMap{path:a.B}": {"path": "a.B"},
    "map:TreeMap{path:a.B}": {"path": "a.B"},
    "list:int[]{0,1}": [0, 1],
    "list:ArrayList[a,b]": ["a", "b"],
    "list:String[]{a,b}": ["a", "b"],
    "int:1": 1,
    "int:-2049": -2049,
    "int:262144": 262144,
    "long:300": 300,
    "long:-9223372036854775808": -(2**63),
    "double:1.5": 1.5,
    "double:3.14159": 3.14159,
    "date:0": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
    "binary:16 bytes": bytes(16),
    "binary:70000 bytes": bytes(70000),
    "null": None,
    "bool:true": True,
}


def test_every_vector_has_an_expectation() -> None:
    assert set(VECTORS) == set(EXPECTED) | {"object:RuntimeException(boom)", "ref:list of same map twice"}


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_java_vector_decodes_to_its_label(label: str) -> None:
    data = bytes.fromhex(VECTORS[label])
    value, end = decode(data)
    assert end == len(data)
    assert value == EXPECTED[label]
    assert type(value) is type(EXPECTED[label]) or isinstance(value, dict)


def test_treemap_keeps_its_type() -> None:
    value, _ = decode(bytes.fromhex(VECTORS["map:TreeMap{path:a.B}"]))
    assert isinstance(value, TypedMap)
    assert value.type == "java.util.TreeMap"


def test_exception_object_with_a_cause_referring_to_itself() -> None:
    value, _end = decode(bytes.fromhex(VECTORS["object:RuntimeException(boom)"]))
    assert isinstance(value, HessianObject)
    assert value.type == "java.lang.RuntimeException"
    assert value.fields["detailMessage"] == "boom"
    assert value.fields["cause"] is value  # Q to the object being built


def test_back_reference_is_the_same_object() -> None:
    value, _ = decode(bytes.fromhex(VECTORS["ref:list of same map twice"]))
    assert value == [{"k": "v"}, {"k": "v"}]
    assert value[0] is value[1]


@pytest.mark.parametrize(
    "label",
    [
        "string:a\\U0001F600",
        "string:z*70000",
        "string:x*32767+\\U0001F600+tail",
        "string:~*40000",
        "string:empty",
        "string:1023 chars",
        "string:1024 chars",
        "map:HashMap{path:a.B}",
        "map:TreeMap{path:a.B}",
        "list:ArrayList[a,b]",
        "int:1",
        "int:-2049",
        "int:262144",
        "double:1.5",
        "double:3.14159",
        "date:0",
        "binary:16 bytes",
        "null",
        "bool:true",
    ],
)
def test_encoder_reproduces_java_bytes(label: str) -> None:
    value, _ = decode(bytes.fromhex(VECTORS[label]))
    assert encode(value).hex() == VECTORS[label]


@pytest.mark.parametrize("label", ["long:300", "long:-9223372036854775808"])
def test_long_encoder_reproduces_java_bytes(label: str) -> None:
    assert encode_long(EXPECTED[label]).hex() == VECTORS[label]


# -- what Python's types are narrower for: dates beyond datetime, lone surrogates --

X32767 = "x" * 32767
EDGE_STRINGS = {
    "string:\\uD800": "\ud800",
    "string:a\\uDC00b": "a\udc00b",
    "string:\\uDE00\\uD83D": "\ude00\ud83d",  # a pair in the wrong order is two lone surrogates
    "string:\\uD83D+x": "\ud83dx",
    "string:x*32767+\\uD800+y": X32767 + "\ud800y",
    "string:x*32767+\\uDC00+y": X32767 + "\udc00y",
    "string:\\uDBFF*40": "\udbff" * 40,
}


def java_date_bytes(millis: int) -> bytes:
    """What Caucho's Hessian2Output.writeUTCDate writes: minutes when whole
    and within an int, else milliseconds."""
    if millis % 60000 == 0 and -(2**31) <= millis // 60000 < 2**31:
        return b"K" + (millis // 60000).to_bytes(4, "big", signed=True)
    return b"J" + millis.to_bytes(8, "big", signed=True)


def test_every_edge_vector_has_an_expectation() -> None:
    labels = {label for label in EDGES if label.startswith("date:")} | set(EDGE_STRINGS)
    assert set(EDGES) == labels


@pytest.mark.parametrize("label", sorted(EDGES))
def test_java_edge_vectors_decode_skip_and_encode_back_byte_exact(label: str) -> None:
    data = bytes.fromhex(EDGES[label])
    kind, _, millis = label.partition(":")
    expected = decoded_date(int(millis)) if kind == "date" else EDGE_STRINGS[label]
    value, end = decode(data)
    assert (value, end) == (expected, len(data))
    assert type(value) is type(expected)
    assert encode(value) == data
    assert skip(data) == len(data)
    reader = Reader(data + data)  # Reader.value() and Reader.skip() take them too
    reader.skip()
    assert reader.value() == expected
    assert reader.at_end


def test_dates_beyond_datetime_are_java_dates_holding_their_milliseconds() -> None:
    assert decode(bytes.fromhex(EDGES["date:-9223372036854775808"]))[0] == JavaDate(-(2**63))
    assert decode(bytes.fromhex(EDGES["date:253402300800000"]))[0] == JavaDate(253402300800000)  # 10000-01-01
    # Whole minutes before the year 1 come as 'K', and go back as 'K'.
    assert EDGES["date:-62135596860000"].startswith("4b")
    assert encode(JavaDate(-62135596860000)).hex() == EDGES["date:-62135596860000"]
    # The last millisecond datetime holds stays a datetime, as every date so far.
    assert decode(bytes.fromhex(EDGES["date:253402300799999"]))[0] == dt.datetime(
        9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.timezone.utc
    )


@pytest.mark.parametrize("millis", [2**63, -(2**63) - 1, True, 1.0])
def test_a_java_date_holds_a_java_long_only(millis: Any) -> None:
    with pytest.raises(ValueError, match="Java long"):
        JavaDate(millis)


@settings(max_examples=1000)
@given(java_millis)
def test_any_java_date_round_trips_byte_exact(millis: int) -> None:
    data = java_date_bytes(millis)
    value, end = decode(data)
    assert (value, end) == (decoded_date(millis), len(data))
    assert encode(value) == data
    assert encode(JavaDate(millis)) == data  # the same bytes, however the date is held
    assert skip(data) == len(data)


@settings(max_examples=500)
@given(surrogate_text)
def test_strings_with_lone_surrogates_round_trip_byte_exact(text: str) -> None:
    data = encode(text)
    assert decode(data) == (text, len(data))
    assert encode(decode(data)[0]) == data
    assert skip(data) == len(data)


def test_a_lone_surrogate_is_written_as_java_does_in_three_bytes() -> None:
    assert encode("\ud800").hex() == "01eda080"
    assert encode("\udfff").hex() == "01edbfbf"
    assert decode(b"\x01\xed\xa0\xbd") == ("\ud83d", 4)  # a high surrogate with no low one after it


def test_four_byte_utf8_from_non_java_writers_counts_two_units() -> None:
    assert decode(b"\x03a" + "\U0001f600".encode())[0] == "a\U0001f600"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x02\x80\x80", "lead byte"),
        (b"\x51\x90", "back reference 0"),
        (b"\x60", "class 0"),
        (b"\x71\x90", "type reference 0"),
        (b"\x58\x49\x7f\xff\xff\xff", "out of bounds"),
        (b"\xfe" * 0 + b"\x47", "unknown"),
        (b"\x52\x00\x01a\x91", "string chunk followed"),
        (b"H\x78\x90Z", "unhashable"),
    ],
)
def test_malformed_input_is_a_hessian_error(data: bytes, message: str) -> None:
    with pytest.raises(Hessian2Error, match=message):
        decode(data)


def test_depth_is_bounded() -> None:
    with pytest.raises(Hessian2Error, match="nesting deeper than 64"):
        decode(b"\x79" * 100 + b"N")


def test_decode_all_shares_the_reference_table() -> None:
    first = encode({"k": "v"})
    values = decode_all(first + b"\x51\x90")
    assert values[0] is values[1]


# -- properties --------------------------------------------------------------


@settings(max_examples=300)
@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert decoded == value


@settings(max_examples=200)
@given(values)
def test_truncation_at_every_offset_needs_more_or_is_an_error(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises((NeedMoreData, Hessian2Error)):
            decode(data[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=60))
def test_garbage_raises_only_protocol_errors_or_need_more(data: bytes) -> None:
    with contextlib.suppress(ProtocolError, NeedMoreData):
        decode_all(data)


@given(
    st.integers(min_value=32760, max_value=32775),
    st.lists(st.sampled_from(["x", "\U0001f600", "\u00e9"]), max_size=20),
    st.integers(min_value=0, max_value=70000),
)
@settings(max_examples=25, deadline=None)
def test_long_strings_chunk_without_splitting_surrogates(lead: int, middle: list[str], tail: int) -> None:
    text = "x" * lead + "".join(middle) + "\U0001f600" * 3 + "y" * tail
    data = encode(text)
    assert decode(data)[0] == text
    assert decode(data)[1] == len(data)


# -- skipping --------------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(VECTORS))
def test_skip_walks_over_every_java_vector(label: str) -> None:
    data = bytes.fromhex(VECTORS[label])
    assert skip(data) == decode(data)[1] == len(data)


@settings(max_examples=300)
@given(values)
def test_skip_ends_where_decode_ends(value: Any) -> None:
    data = encode(value) + b"\x90"  # and not a byte further
    assert skip(data) == decode(data)[1] == len(data) - 1


@settings(max_examples=200)
@given(values)
def test_skip_of_a_truncated_value_needs_more_or_is_an_error(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises((NeedMoreData, Hessian2Error)):
            skip(data[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=60))
def test_skip_of_garbage_raises_only_protocol_errors_or_agrees_with_decode(data: bytes) -> None:
    try:
        end = decode(data)[1]
    except (ProtocolError, NeedMoreData):
        with contextlib.suppress(ProtocolError, NeedMoreData):
            skip(data)  # may be more lenient (an unhashable key), never another error
        return
    assert skip(data) == end


def test_values_after_skipped_ones_keep_their_class_definitions_and_references() -> None:
    point = b"C" + encode("Point") + encode(2) + encode("x") + encode("y")  # class 0: Point(x, y)
    first = point + b"\x60\x91\x92"  # Point(1, 2), defining the class
    second = b"\x60\x93\x94"  # Point(3, 4), by class index alone
    reader = Reader(first + second + b"\x51\x91")  # Q 1: the second point
    reader.skip()
    value = reader.value()
    assert isinstance(value, HessianObject)
    assert (value.type, value.fields) == ("Point", {"x": 3, "y": 4})
    assert reader.value() is value
    assert reader.at_end
    exception = bytes.fromhex(VECTORS["object:RuntimeException(boom)"])
    reader = Reader(exception + encode("next"))
    reader.skip()  # its cause refers to itself: walked over all the same
    assert reader.value() == "next"


def test_a_reference_to_a_skipped_value_asks_for_decoding() -> None:
    first, second = encode({"a": "1"}), encode({"b": "2"})
    reader = Reader(first + second + b"\x51\x91")  # Q 1: the second map
    reader.skip()
    second_map = reader.value()
    assert reader.value() is second_map  # references are counted across skipped values
    reader = Reader(first + b"\x51\x90")  # Q 0: the skipped first map
    reader.skip()
    with pytest.raises(SkippedReference):
        reader.value()


def outcome(function: Any, data: bytes) -> Any:
    """Where ``function`` ends, or the kind of error it raised."""
    try:
        result = function(data)
    except NeedMoreData:
        return "more"
    except Hessian2Error:
        return "error"
    return result if isinstance(result, int) else result[1]


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 200])
@pytest.mark.parametrize(
    ("opening", "closing"),
    [(b"\x79", b""), (b"\x57", b"Z"), (b"H\x91", b"Z"), (b"\x71\x00", b"")],
    ids=["fixed-list", "variable-list", "map-value", "typed-list"],
)
def test_skip_and_decode_agree_on_the_nesting_limit(depth: int, opening: bytes, closing: bytes) -> None:
    data = opening * depth + b"N" + closing * depth
    assert outcome(skip, data) == outcome(decode, data)


@pytest.mark.parametrize(
    "data",
    [
        b"H" + encode("k") + b"Z",  # a map's 'Z' where a value must be
        b"\x57\x91\x92Z",  # variable list
        b"\x55" + encode("java.util.List") + b"\x91Z\x72\x90\x91\x92",  # typed variable, then typed fixed by type ref
        b"\x56" + encode("[int") + b"\x92\x91\x92",  # typed fixed, length as an int
        b"\x58\x92\x91\x92",  # untyped fixed, length as an int
        b"M" + encode("java.util.TreeMap") + encode("a") + b"\x91Z",
        b"\x7a\x79\x78\x91",  # nested fixed lists: [[[], ...]]: a container completing its parent
        b"Q\x90",  # a reference to nothing
        b"\x57" + b"\x91" * 5,  # no 'Z': more data needed
    ],
)
def test_skip_and_decode_agree_on_hand_built_shapes(data: bytes) -> None:
    assert outcome(skip, data) == outcome(decode, data)


@settings(max_examples=400)
@given(st.sampled_from(sorted(VECTORS)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))
def test_skip_agrees_with_decode_on_mutated_java_vectors(label: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(bytes.fromhex(VECTORS[label]))
    for where, value in edits:
        data[where % len(data)] = value
    decoded = outcome(decode, bytes(data))
    skipped = outcome(skip, bytes(data))
    if isinstance(decoded, int):
        assert skipped == decoded
    else:  # skipping may accept what only decoding rejects (an unhashable key), never crash
        assert isinstance(skipped, int) or skipped in ("more", "error")


@settings(max_examples=300)
@given(st.lists(st.text(max_size=40) | st.binary(max_size=3).map(lambda b: b.decode("latin-1")), max_size=6))
def test_strings_read_one_by_one_are_what_was_written_whatever_their_characters(texts: list[str]) -> None:
    # Reader.values() takes a short ASCII string at once and any other the
    # general way: both must give the string back.
    reader = Reader(b"".join(encode(text) for text in texts) + encode(7))
    assert reader.values(len(texts) + 1) == [*texts, 7]


#: Map keys and values as a Dubbo call's attachments hold them (short ASCII
#: strings, taken by the map's own fast loop), mixed with what must leave
#: that loop: non-ASCII and long strings, ints, nested maps, nulls.
attachment_text = st.text(st.characters(max_codepoint=0x7F), max_size=31)
long_ascii = st.text(st.characters(max_codepoint=0x7F), min_size=32, max_size=40)
attachment_like = st.dictionaries(
    attachment_text | st.text(max_size=40) | long_ascii,
    attachment_text
    | st.text(max_size=5)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.none()
    | st.dictionaries(attachment_text, attachment_text),
    max_size=8,
)


@settings(max_examples=300)
@given(attachment_like)
def test_maps_of_short_strings_and_anything_else_round_trip_and_cut_anywhere_need_more(value: dict[Any, Any]) -> None:
    data = encode(value)
    assert decode(data) == (value, len(data))
    assert Reader(data + data).values(2) == [value, value]
    for cut in range(len(data)):
        with pytest.raises((NeedMoreData, Hessian2Error)):
            decode(data[:cut])


@settings(max_examples=200)
@given(st.lists(values, max_size=6), st.integers(min_value=0, max_value=8))
def test_skip_values_gives_each_value_its_span_and_stops_at_the_end(items: list[Any], count: int) -> None:
    data = b"".join(encode(item) for item in items)
    spans = decode_spans(data)
    offsets = Reader(data).skip_values(count)
    walked = min(count, len(items))
    assert offsets == [0, *(end for _, _, end in spans[:walked])]
