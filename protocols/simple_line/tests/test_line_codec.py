"""The line codec's two ways of finding a line's end: ``bytes.find`` (the
interpreter's) and a walk of the first bytes (the compiled build's), on
lines shorter and longer than the walk, however the input is split."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import LimitExceeded
from sota_dispatch.testing import build_spelling, transient_bytes
from sota_simple_line import codec
from sota_simple_line.codec import LineCodec

#: Lines around the walk's length (128 bytes), some over a 200-byte limit.
lines = st.lists(
    st.integers(0, 300).map(lambda n: b"q" * n + b"\r\n") | st.binary(max_size=20).map(lambda b: b + b"\n"),
    max_size=6,
).map(b"".join)


def spelling(walk: bool) -> AbstractContextManager[None]:
    """Run with the walk (the compiled build's) or ``find``."""
    return build_spelling(codec, walk)


@settings(max_examples=300)
@given(st.binary(max_size=400) | lines, st.integers(0, 450))
def test_the_walk_finds_what_find_finds(data: bytes, start: int) -> None:
    start = min(start, len(data))
    assert codec._line_end(data, start) == data.find(b"\n", start)


def fed(data: bytes, cuts: list[int], max_line: int) -> tuple[list[bytes], str]:
    decoder = LineCodec(max_line)
    found: list[bytes] = []
    pos = 0
    try:
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            found += decoder.feed(data[pos:cut])
            pos = cut
        decoder.check()
    except LimitExceeded as exc:
        return found, str(exc)
    return found, ""


@pytest.mark.parametrize("walk", [True, False])
@settings(max_examples=200)
@given(lines, st.lists(st.integers(0, 2000), max_size=5), st.sampled_from([16, 200, 65536]))
def test_lines_are_the_same_however_split(walk: bool, data: bytes, cuts: list[int], max_line: int) -> None:
    whole = fed(data, [], max_line)
    with spelling(walk):
        assert fed(data, cuts, max_line) == whole
        assert fed(data, [], max_line) == whole
    if max_line == 65536:
        assert b"".join(whole[0]) == data[: data.rfind(b"\n") + 1]


@pytest.mark.parametrize("walk", [True, False])
def test_a_read_after_an_unfinished_line_is_parsed_in_place(walk: bool) -> None:
    """Not joined with the unfinished line whole: that copied every byte
    received once more (400 KB here) in an object as large as the read."""
    line = b"key=value&key1=value1&n=" + b"9" * 16 + b"\r\n"
    chunk = line[20:] + line * 10_000 + line[:20]
    decoder = LineCodec(1024)
    with spelling(walk):
        assert transient_bytes(decoder.feed, line[:20], chunk) < len(chunk) // 8
    assert decoder.buffered == 20
