"""ChunkBuffer: the unparsed tail of a byte stream."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import ChunkBuffer


@settings(max_examples=300)
@given(st.binary(max_size=20000), st.data())
def test_every_byte_is_parsed_once_in_order_whatever_the_chunks_and_needs(stream: bytes, data: st.DataObject) -> None:
    buffer = ChunkBuffer()
    parsed = bytearray()
    offset = 0
    while offset < len(stream):
        size = data.draw(st.integers(1, 5000), label="chunk")
        chunk, offset = stream[offset : offset + size], offset + size
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
    assert buffer.take(mine, 10) is None  # type: ignore[arg-type]  # typed bytes; callers may still pass one
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
