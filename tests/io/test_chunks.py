"""ChunkBuffer: the unparsed tail of a byte stream."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import ChunkBuffer, ProtocolError
from sota_dispatch.testing import both_builds, outcome


def reads(stream: bytes, data: st.DataObject) -> Iterator[bytes]:
    """``stream`` in reads of drawn sizes."""
    offset = 0
    while offset < len(stream):
        size = data.draw(st.integers(1, 5000), label="chunk")
        yield stream[offset : offset + size]
        offset += size


@settings(max_examples=300)
@given(st.binary(max_size=20000), st.data())
def test_every_byte_is_parsed_once_in_order_whatever_the_chunks_and_needs(stream: bytes, data: st.DataObject) -> None:
    buffer = ChunkBuffer()
    parsed = bytearray()
    for chunk in reads(stream, data):
        need = data.draw(st.integers(1, 6000), label="need")
        work = buffer.take(chunk, need)
        if work is None:
            assert len(buffer) < need
            continue
        assert len(work) == len(buffer) >= need
        used = data.draw(st.integers(0, len(work)), label="consumed")
        parsed += work[:used]
        buffer.keep(work, used)
        assert len(buffer) == len(work) - used
    work = buffer.take(b"", 1)
    parsed += work or b""
    assert bytes(parsed) == stream


@settings(max_examples=300)
@given(st.binary(max_size=20000), st.data())
def test_fill_and_add_hand_each_byte_once_in_order_and_fill_takes_no_more_than_needed(
    stream: bytes, data: st.DataObject
) -> None:
    """A decoder's loop over a read: finish what is held from the read's
    head with ``fill``, parse the rest in place, ``add`` back the tail."""
    buffer = ChunkBuffer()
    parsed = bytearray()
    for chunk in reads(stream, data):
        pos = 0
        held = len(buffer)
        while held:
            need = data.draw(st.integers(1, 6000), label="need")
            work = buffer.fill(chunk, pos, need)
            if work is None:
                assert len(buffer) == held + len(chunk) - pos < max(need, held + 1)
                break
            assert len(work) == max(need, held + 1)  # exactly what was asked, at least a byte of the read
            assert len(buffer) == 0
            pos += len(work) - held
            used = data.draw(st.integers(0, len(work)), label="consumed")
            parsed += work[:used]
            buffer.add(work, used)
            held = len(buffer)
        else:
            used = data.draw(st.integers(pos, len(chunk)), label="consumed in place")
            parsed += chunk[pos:used]
            buffer.add(chunk, used)
    work = buffer.take(b"", 1)
    parsed += work or b""
    assert bytes(parsed) == stream


class LengthPrefixed:
    """A decoder of a 2-byte length and that many bytes (0xFFFF: bad): a
    frame whose header is cut needs its header first, then the rest."""

    def __init__(self) -> None:
        self.buffer = ChunkBuffer()
        self.need = 2
        self.pending: ProtocolError | None = None

    def frames(self, work: bytes, pos: int, out: list[bytes]) -> int:
        while True:
            if len(work) - pos < 2:
                self.need = 2
                return pos
            size = int.from_bytes(work[pos : pos + 2], "big")
            if size == 0xFFFF:
                raise ProtocolError("bad length")
            if pos + 2 + size > len(work):
                self.need = 2 + size
                return pos
            out.append(work[pos + 2 : pos + 2 + size])
            pos += 2 + size

    def feed(self, data: bytes) -> list[bytes]:
        if self.pending is not None:
            raise self.pending
        out: list[bytes] = []
        self.pending = self.buffer.parse(data, out, self.frames, lambda: self.need)
        return out


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.lists(st.integers(0, 4000), max_size=10),
    st.booleans(),
)
def test_parse_gives_the_frames_in_order_then_the_error_whatever_the_reads(
    frames: list[bytes], cuts: list[int], bad: bool
) -> None:
    stream = b"".join(len(f).to_bytes(2, "big") + f for f in frames) + (b"\xff\xff" if bad else b"")
    decoder = LengthPrefixed()
    got: list[bytes] = []
    pos = 0
    failed = False
    try:
        for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream), len(stream)]:
            got += decoder.feed(stream[pos:cut])
            pos = cut
    except ProtocolError:
        failed = True
    assert got == frames
    assert failed == bad
    assert failed or len(decoder.buffer) == 0


def test_parse_raises_at_once_without_frames_before_the_error_and_hands_those_out_first() -> None:
    decoder = LengthPrefixed()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\xff\xff")
    decoder = LengthPrefixed()
    assert decoder.feed(b"\x00\x01a\xff\xff") == [b"a"]
    with pytest.raises(ProtocolError):
        decoder.feed(b"")


def test_fill_copies_the_frame_not_the_read() -> None:
    buffer = ChunkBuffer()
    buffer.add(b"abc")
    read = b"defgh" + b"x" * 100_000
    assert buffer.fill(read, 0, 8) == b"abcdefgh"
    assert len(buffer) == 0
    buffer.add(read, 5)  # the rest of the read: its unfinished frame
    assert len(buffer) == 100_000
    assert buffer.fill(b"yy", 0, 100_003) is None  # not enough: held on
    assert buffer.take(b"z", 100_003) == b"x" * 100_000 + b"yyz"


def test_add_never_changes_a_caller_s_bytearray() -> None:
    buffer = ChunkBuffer()
    mine = bytearray(b"ab")
    buffer.add(mine)
    buffer.add(b"cd")
    buffer.add(bytearray(b"xef"), 1)
    assert mine == b"ab"
    assert buffer.fill(b"gh", 0, 8) == b"abcdefgh"


def test_nothing_is_joined_before_the_frame_can_be_complete() -> None:
    buffer = ChunkBuffer()
    big = b"x" * 100_000
    assert buffer.take(big, 300_000) is None
    assert buffer.take(big, 300_000) is None
    work = buffer.take(big, 300_000)
    assert work == big * 3


def test_a_caller_s_bytearray_is_never_changed() -> None:
    buffer = ChunkBuffer()
    mine = bytearray(b"ab")
    assert buffer.take(mine, 10) is None
    assert buffer.take(b"cd", 10) is None
    assert mine == b"ab"
    assert buffer.take(b"efghij", 10) == b"abcdefghij"


def test_a_peer_dribbling_bytes_costs_about_its_bytes_not_an_object_each() -> None:
    buffer = ChunkBuffer()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            assert buffer.take(b"x", 1 << 20) is None
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(buffer) == 100_000
    assert held < 200_000  # one bytes object per byte would be ~3.4 MB


def length_prefixed(work: bytes, pos: int, out: list[bytes]) -> int:
    """A decoder's parse for ``parse()``: frames of a length byte and that
    many bytes; a length byte of 0xFF is garbage."""
    while pos < len(work):
        size = work[pos]
        if size == 0xFF:
            raise ProtocolError("a length of 255")
        if pos + 1 + size > len(work):
            break
        out.append(work[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return pos


def decode_all(module: Any, stream: bytes, cuts: list[int], need: int, as_bytearray: bool) -> list[Any]:
    """What ``module``'s ChunkBuffer hands a length-prefixed decoder for
    ``stream`` cut at ``cuts`` (``need``: what the decoder says a held frame
    needs, right or not): each read's frames and error, and the held size."""
    buffer = module.ChunkBuffer()
    steps: list[Any] = []
    pos = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        chunk = stream[pos:cut]
        pos = cut
        out: list[bytes] = []
        read: bytes | bytearray = bytearray(chunk) if as_bytearray else chunk
        result = outcome(buffer.parse, read, out, length_prefixed, lambda: need)
        steps.append((result, out, len(buffer)))
        if result[0] == "raised":
            break
    return steps


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=40), max_size=12).map(lambda fs: b"".join(bytes([len(f)]) + f for f in fs))
    | st.binary(max_size=200),
    st.lists(st.integers(0, 1000), max_size=6),
    st.integers(1, 60),
    st.booleans(),
)
def test_the_compiled_buffer_hands_out_what_its_source_does(
    stream: bytes, cuts: list[int], need: int, as_bytearray: bool
) -> None:
    compiled, pure = both_builds("sota_dispatch.io.chunks")
    got = decode_all(compiled, stream, cuts, need, as_bytearray)
    assert got == decode_all(pure, stream, cuts, need, as_bytearray)
