from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import BufferedReader, IncompleteReadError, LimitExceeded
from sota_dispatch.testing import MemoryByteStream, memory_stream_pair

pytestmark = pytest.mark.anyio


async def feed(chunks: list[bytes], *, eof: bool = True) -> tuple[BufferedReader, MemoryByteStream]:
    """A reader whose stream will return exactly these chunks, then EOF."""
    client, server = memory_stream_pair(max_chunks=float("inf"))
    for chunk in chunks:
        await client.send(chunk)
    if eof:
        await client.send_eof()
    return BufferedReader(server), client


async def test_read_exactly_across_chunks() -> None:
    reader, _ = await feed([b"ab", b"cde", b"f"])
    assert await reader.read_exactly(4) == b"abcd"
    assert await reader.read_exactly(0) == b""
    assert await reader.read_exactly(2) == b"ef"
    with pytest.raises(anyio.EndOfStream):
        await reader.read_exactly(1)


async def test_eof_mid_frame_carries_partial_bytes() -> None:
    reader, _ = await feed([b"abc"])
    with pytest.raises(IncompleteReadError) as info:
        await reader.read_exactly(5)
    assert info.value.partial == b"abc"
    assert info.value.expected == 5
    assert "3 bytes of 5 expected" in str(info.value)


async def test_mid_frame_read_reports_truncation_even_when_empty() -> None:
    reader, _ = await feed([b"head"])
    assert await reader.read_exactly(4) == b"head"
    with pytest.raises(IncompleteReadError):
        await reader.read_exactly(4, mid_frame=True)


async def test_read_until_strips_delimiter_and_resumes_search() -> None:
    reader, _ = await feed([b"one\r", b"\ntwo\r\nthr", b"ee\r\n"])
    assert await reader.read_until(b"\r\n", max_bytes=10) == b"one"
    assert await reader.read_until(b"\r\n", max_bytes=10) == b"two"
    assert await reader.read_until(b"\r\n", max_bytes=10) == b"three"
    with pytest.raises(anyio.EndOfStream):
        await reader.read_until(b"\r\n", max_bytes=10)


async def test_read_until_limit_names_the_limit_without_waiting_for_more() -> None:
    # No EOF: the reader must give up as soon as the limit is exceeded.
    reader, _ = await feed([b"x" * 5, b"y" * 7], eof=False)
    with anyio.fail_after(5), pytest.raises(LimitExceeded) as info:
        await reader.read_until(b"\n", max_bytes=10)
    assert info.value.limit == 10
    assert "10 bytes" in str(info.value)


async def test_read_until_exactly_at_limit_is_accepted() -> None:
    reader, _ = await feed([b"x" * 10 + b"\n"])
    assert await reader.read_until(b"\n", max_bytes=10) == b"x" * 10


async def test_read_until_eof_with_partial_line() -> None:
    reader, _ = await feed([b"no newline"])
    with pytest.raises(IncompleteReadError) as info:
        await reader.read_until(b"\n", max_bytes=100)
    assert info.value.partial == b"no newline"


async def test_peek_does_not_consume_and_returns_short_at_eof() -> None:
    reader, _ = await feed([b"\x01", b"\x02\x03"])
    assert await reader.peek(2) == b"\x01\x02"
    assert await reader.read_exactly(3) == b"\x01\x02\x03"
    assert await reader.peek(4) == b""


async def test_read_some_and_chunks_yield_everything() -> None:
    reader, _ = await feed([b"abc", b"de"])
    assert await reader.read_some(2) == b"ab"
    assert [c async for c in reader.chunks()] == [b"c", b"de"]
    assert reader.at_eof


async def test_take_buffer_hands_over_unconsumed_bytes() -> None:
    reader, _ = await feed([b"frame1|rest"], eof=False)
    assert await reader.read_until(b"|", max_bytes=10) == b"frame1"
    assert reader.buffered == 4
    assert reader.take_buffer() == b"rest"
    assert reader.buffered == 0


async def test_drain_stops_at_frame_boundary_only() -> None:
    reader, _ = await feed([b"ab", b"cd"], eof=False)
    assert await reader.read_exactly(1) == b"a"
    reader.drain()
    # A frame already started may complete...
    assert await reader.read_exactly(3, mid_frame=True) == b"bcd"
    # ...but a new one may not start once the buffer is empty.
    with pytest.raises(anyio.EndOfStream):
        await reader.read_exactly(1)


def test_rejects_bad_arguments() -> None:
    _, server = memory_stream_pair()
    with pytest.raises(ValueError, match="read_size"):
        BufferedReader(server, read_size=0)


# -- properties: the frames never depend on how the input was split ----------

frames = st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=12)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


async def read_lines(chunks: list[bytes], read_size: int) -> list[bytes]:
    client, server = memory_stream_pair(max_chunks=float("inf"))
    for chunk in chunks:
        await client.send(chunk)
    await client.send_eof()
    reader = BufferedReader(server, read_size=read_size)
    lines = []
    while True:
        try:
            lines.append(await reader.read_until(b"\n", max_bytes=64))
        except anyio.EndOfStream:
            return lines


async def read_length_prefixed(chunks: list[bytes], read_size: int) -> list[bytes]:
    client, server = memory_stream_pair(max_chunks=float("inf"))
    for chunk in chunks:
        await client.send(chunk)
    await client.send_eof()
    reader = BufferedReader(server, read_size=read_size)
    out: list[bytes] = []
    while True:
        try:
            size = (await reader.read_exactly(1))[0]
        except anyio.EndOfStream:
            return out
        out.append(await reader.read_exactly(size, mid_frame=True))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(frames=frames, cuts=st.lists(st.integers(min_value=0), max_size=8), read_size=st.integers(1, 70))
def test_lines_independent_of_split(backend: str, frames: list[bytes], cuts: list[int], read_size: int) -> None:
    data = b"".join(f + b"\n" for f in frames)
    got = anyio.run(read_lines, split(data, cuts), read_size, backend=backend)
    assert got == frames


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.binary(max_size=300), max_size=8), read_size=st.integers(1, 600))
def test_length_prefixed_independent_of_split_at_every_offset(
    backend: str, frames: list[bytes], read_size: int
) -> None:
    data = b"".join(bytes([len(f) % 256]) + f[: len(f) % 256] for f in frames)
    expected = [f[: len(f) % 256] for f in frames]

    async def every_offset() -> None:
        for cut in range(len(data) + 1):
            pieces = [p for p in (data[:cut], data[cut:]) if p]
            assert await read_length_prefixed(pieces, read_size) == expected, cut

    anyio.run(every_offset, backend=backend)


async def read_mixed(chunks: list[bytes], reads: list[tuple[str, int]], read_size: int) -> bytes:
    """Everything the stream held, read by ``reads`` in turn (then by
    ``read_some`` to the end): whole chunks handed out as they came must
    interleave with buffered reads without losing or repeating a byte."""
    client, server = memory_stream_pair(max_chunks=float("inf"))
    for chunk in chunks:
        await client.send(chunk)
    await client.send_eof()
    reader = BufferedReader(server, read_size=read_size)
    out = bytearray()
    try:
        for kind, n in reads:
            if kind == "some":
                out += await reader.read_some()
            elif kind == "some_max":
                got = await reader.read_some(n)
                assert 1 <= len(got) <= n
                out += got
            elif kind == "peek":
                assert (await reader.peek(n)) == (await reader.peek(n))
            else:
                out += await reader.read_exactly(n)
        while True:
            out += await reader.read_some()
    except (anyio.EndOfStream, IncompleteReadError) as end:
        if isinstance(end, IncompleteReadError):
            out += end.partial
    return bytes(out)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    reads=st.lists(
        st.tuples(st.sampled_from(["some", "some_max", "peek", "exactly"]), st.integers(1, 30)), max_size=12
    ),
    read_size=st.integers(1, 70),
)
def test_read_some_hands_out_every_byte_once_among_other_reads(
    backend: str, data: bytes, cuts: list[int], reads: list[tuple[str, int]], read_size: int
) -> None:
    assert anyio.run(read_mixed, split(data, cuts), reads, read_size, backend=backend) == data
