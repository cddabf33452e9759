"""The compiled ZMTP framing against its pure-Python source.

The module as installed (compiled in CI's compiled run) and its ``.py``
source (:func:`~sota_dispatch.testing.both_builds`) get the same bytes,
valid or garbage, whole or split, and must return the same messages,
commands and errors. On the pure-Python build they skip (CI's compiled run
fails them instead).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch.testing import both_builds, outcome
from sota_zmtp import frames
from sota_zmtp.limits import Limits
from sota_zmtp.wire import encode_command, encode_message

messages = st.lists(st.binary(max_size=300), min_size=1, max_size=4)
#: Frames as peers send them (messages and commands), garbage, and either spliced.
streams = st.one_of(
    st.lists(messages.map(encode_message) | st.binary(max_size=20).map(lambda d: encode_command(b"PING", d))).map(
        b"".join
    ),
    st.binary(max_size=80),
    st.tuples(messages.map(encode_message), st.integers(0, 400), st.binary(min_size=1, max_size=3)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    ),
)
limits = st.builds(
    Limits,
    max_frame_size=st.sampled_from([100, 1 << 20]),
    max_message_size=st.sampled_from([250, 1 << 20]),
    max_parts=st.sampled_from([2, 1024]),
)


def read_all(reader: Any, data: bytes, cuts: list[int]) -> list[Any]:
    """What a reader makes of ``data`` arriving in pieces cut at ``cuts``:
    each step's messages, command and position, until an error."""
    steps: list[Any] = []
    held, pos = b"", 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        held += data[pos:cut]
        pos = cut
        while True:
            found: list[list[bytes]] = []
            result = outcome(reader.read, held, 0, found)
            steps.append((result, found, reader.command, reader.need, reader.pending))
            if result[0] == "raised":
                return steps
            held = held[result[1] :]
            if reader.command is None:
                break
            reader.command = None
    return steps


@settings(max_examples=300)
@given(streams, st.lists(st.integers(0, 10_000), max_size=4), limits, st.booleans())
def test_frame_reader_agrees_however_split(data: bytes, cuts: list[int], limit: Limits, v2: bool) -> None:
    compiled, pure = both_builds("sota_zmtp.frames")
    readers = [compiled.FrameReader(limit, 2), pure.FrameReader(limit, 2)]
    if v2:
        for reader, module in zip(readers, (compiled, pure), strict=True):
            reader.reserved = module.V2_RESERVED
    assert read_all(readers[0], data, cuts) == read_all(readers[1], data, cuts)
    handshake = [compiled.FrameReader(limit, 2), pure.FrameReader(limit, 2)]
    assert outcome(handshake[0].read_one, data, 0) == outcome(handshake[1].read_one, data, 0)


@settings(max_examples=300)
@given(messages, st.binary(max_size=300), st.binary(min_size=0, max_size=300))
def test_wire_encoders_and_parsers_agree(frames: list[bytes], name: bytes, data: bytes) -> None:
    compiled, pure = both_builds("sota_zmtp.wire")
    assert compiled.encode_message(frames) == pure.encode_message(frames)
    if frames:  # any sequence of parts, not only a list (append_frames takes lists)
        assert compiled.encode_message(tuple(frames)) == pure.encode_message(frames)
    assert compiled.encode_part(data) == pure.encode_part(data)
    outs: list[list[bytes]] = [[name], [name]]
    compiled.append_frames(outs[0], frames, 1)
    pure.append_frames(outs[1], frames, 1)
    assert outs[0] == outs[1]
    assert outcome(compiled.encode_message, []) == outcome(pure.encode_message, [])
    assert outcome(compiled.encode_command, name, data) == outcome(pure.encode_command, name, data)
    assert outcome(compiled.parse_command, data) == outcome(pure.parse_command, data)
    assert outcome(compiled.parse_properties, data) == outcome(pure.parse_properties, data)
    properties = [(name.hex()[:10] or "x", data)]
    assert compiled.encode_properties(properties) == pure.encode_properties(properties)
    assert compiled.signature(len(name)) == pure.signature(len(name))


@settings(max_examples=300)
@given(st.binary(min_size=8, max_size=40), st.integers(0, 40))
def test_a_long_frames_size_is_read_as_int_from_bytes_reads_it(data: bytes, at: int) -> None:
    """The reader's byte arithmetic for the 8-byte size (the compiled
    build's way; run as Python here on the pure-Python build), every value
    up to 2**64 - 1."""
    at = min(at, len(data) - 8)
    assert frames._long_size(data, at) == int.from_bytes(data[at : at + 8], "big")
    assert frames._long_size(b"\xff" * 8, 0) == 2**64 - 1
