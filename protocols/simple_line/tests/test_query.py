from __future__ import annotations

import json
import re
from urllib.parse import unquote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sota_dispatch import ProtocolError
from sota_simple_line import QueryError, parse_query, render_error, render_reply


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"a=1&b=2&a=3", {"a": ["1", "3"], "b": ["2"]}),
        (b"key=value&key1=value1", {"key": ["value"], "key1": ["value1"]}),
        (b"name=sota+dispatch&x=%41%42", {"name": ["sota dispatch"], "x": ["AB"]}),
        (b"k=a%3Db%26c", {"k": ["a=b&c"]}),
        (b"flag&v=", {"flag": [""], "v": [""]}),
        (b"a=1&&b=2&", {"a": ["1"], "b": ["2"]}),
        (b"e=%C3%A9&raw=\xc3\xa9", {"e": ["é"], "raw": ["é"]}),
        (b"%2B=%2b", {"+": ["+"]}),
        (b"a+b=c+d&e=f", {"a b": ["c d"], "e": ["f"]}),  # spaces, no escape anywhere
        (b"p=%2Fx%2F&q=a+%2B", {"p": ["/x/"], "q": ["a +"]}),
    ],
)
def test_parse(line: bytes, parsed: dict[str, list[str]]) -> None:
    assert parse_query(line) == parsed
    assert list(parse_query(line)) == list(parsed)  # first-appearance order


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty request"),
        (b"&&", "no key=value pair"),
        (b"a=%zz", "bad percent escape at offset 2: '%zz'"),
        (b"a=%4", "bad percent escape"),
        (b"a=1%", "bad percent escape"),
        (b"=1", "empty key"),
        (b"a=%FF", "not UTF-8"),
        (b"a=\xff", "not UTF-8"),
    ],
)
def test_malformed_queries(line: bytes, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        parse_query(line)


def test_reply_format_matches_the_issue_example() -> None:
    assert render_reply(parse_query(b"a=1&b=2&a=3")) == b'receive:{"a":["1","3"],"b":["2"]}\r\n'
    assert render_reply({"q": ["line\r\nbreak"]}) == b'receive:{"q":["line\\r\\nbreak"]}\r\n'
    assert render_error("two\nlines") == b"error:two lines\r\n"


keys = st.text(min_size=1, max_size=8)
values = st.text(max_size=12)
multimaps = st.dictionaries(keys, st.lists(values, min_size=1, max_size=3), min_size=1, max_size=5)


@given(multimaps)
def test_urlencoded_round_trip(query: dict[str, list[str]]) -> None:
    line = urlencode(query, doseq=True).encode()
    assert parse_query(line) == query
    reply = render_reply(parse_query(line))
    assert reply.endswith(b"\r\n")
    assert b"\n" not in reply[:-2]
    assert json.loads(reply[len(b"receive:") : -2]) == query


@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    try:
        parsed = parse_query(data)
    except ProtocolError:
        return
    assert parsed
    assert all(parsed.values())


# -- the hand-written decode and render against the standard library's --------------

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_BAD = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _reference_parse(line: bytes) -> dict[str, list[str]] | None:
    """The query rules spelled with ``urllib.parse.unquote`` (None: refused)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or _BAD.search(text):
        return None
    result: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        try:
            key = unquote(key.replace("+", " "), errors="strict")
            value = unquote(value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            return None
        if not key:
            return None
        result.setdefault(key, []).append(value)
    return result or None


#: Lines rich in what decoding turns on: escapes (good, bad, split UTF-8), ``+``, separators.
_line_pieces = st.sampled_from(
    [
        b"%",
        b"+",
        b"=",
        b"&",
        b"a",
        b"Z",
        b"0",
        b"9",
        b"f",
        b"G",
        b"%41",
        b"%2b",
        b"%C3",
        b"%A9",
        b"%FF",
        b"%E2%82%AC",
        b"\xc3\xa9",
        b"\xe2\x82",
        b" ",
        b"%2",
    ]
)


@given(st.lists(_line_pieces, max_size=24).map(b"".join))
def test_parse_matches_urllib_unquote(line: bytes) -> None:
    expected = _reference_parse(line)
    if expected is None:
        with pytest.raises(QueryError):
            parse_query(line)
    else:
        assert parse_query(line) == expected
        assert list(parse_query(line)) == list(expected)


@given(
    st.dictionaries(
        st.text(st.characters(exclude_categories=()), max_size=6),
        st.lists(st.text(st.characters(exclude_categories=()), max_size=8), max_size=3),
        max_size=4,
    )
)
def test_reply_is_what_the_json_encoder_gives(query: dict[str, list[str]]) -> None:
    try:
        expected = b"receive:" + _ENCODER.encode(query).encode() + b"\r\n"
    except UnicodeEncodeError:  # a lone surrogate: refused by both
        with pytest.raises(UnicodeEncodeError):
            render_reply(query)
        return
    assert render_reply(query) == expected
