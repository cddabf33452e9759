"""ZMTP's per-message proxy semantics (``sota_zmtp.semantics``) against
their definitions: the upstream message is ``[id, *message]`` with ``id`` a
4-byte big-endian frame, the answer loses that frame. The encoders take
short cuts (the id frame's header and a short part's in one int, no list
copied for a one-part answer) and ``response_id`` has two spellings (byte
arithmetic compiled, ``int.from_bytes`` in the interpreter): each must
give exactly what the definition gives, and both builds the same. A long
last part is handed on as it is, behind its header as a piece of its own."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sota_zmtp.semantics as semantics
from sota_dispatch import PIECE_FROM, encoded_bytes
from sota_dispatch.testing import both_builds, build_spelling, outcome
from sota_zmtp import ZmtpDispatcher
from sota_zmtp.frames import FrameReader
from sota_zmtp.limits import Limits
from sota_zmtp.wire import encode_message

#: Parts around the 255/256 boundary of the short and long frame forms, and
#: around the size from which a last part is a piece of its own.
sizes = st.one_of(st.integers(250, 260), st.integers(PIECE_FROM - 3, PIECE_FROM + 3))
parts = st.one_of(st.binary(max_size=300), sizes.map(lambda n: b"p" * n))
messages = st.lists(parts, min_size=1, max_size=4)
ids = st.integers(0, 0xFFFFFFFF)


def spelling(compiled: bool) -> AbstractContextManager[None]:
    """Run with ``response_id``'s compiled (arithmetic) or interpreted spelling."""
    return build_spelling(semantics, compiled)


def decoded(data: bytes) -> list[list[bytes]]:
    found: list[list[bytes]] = []
    reader = FrameReader(Limits(), 3)
    assert reader.read(data, 0, found) == len(data)
    return found


@settings(max_examples=300)
@given(messages, ids)
def test_the_upstream_message_is_the_id_frame_and_the_message(message: list[bytes], upstream_id: int) -> None:
    data = encoded_bytes(semantics.encode_request(message, upstream_id))
    assert data == encode_message([upstream_id.to_bytes(4, "big"), *message])
    assert decoded(data) == [[upstream_id.to_bytes(4, "big"), *message]]


@pytest.mark.parametrize("upstream_id", [-1, 1 << 32, 1 << 70])
def test_an_id_that_does_not_fit_four_bytes_is_refused(upstream_id: int) -> None:
    with pytest.raises(OverflowError):
        semantics.encode_request([b"x"], upstream_id)
    with pytest.raises(ValueError, match="at least one part"):
        semantics.encode_request([], 1)


@pytest.mark.parametrize("arithmetic", [True, False])
@settings(max_examples=200)
@given(message=messages, upstream_id=ids, other=st.lists(st.binary(max_size=6), max_size=3))
def test_the_answer_is_matched_by_its_id_frame_and_loses_it(
    arithmetic: bool, message: list[bytes], upstream_id: int, other: list[bytes]
) -> None:
    with spelling(arithmetic):
        answer = [upstream_id.to_bytes(4, "big"), *message]
        assert semantics.response_id(answer) == upstream_id
        assert ZmtpDispatcher.response_id(answer) == upstream_id
        assert encoded_bytes(semantics.encode_response(answer, message)) == encode_message(message)
        # No id frame in front (none, or not 4 bytes): matches nothing.
        expected = int.from_bytes(other[0], "big") if other and len(other[0]) == 4 else None
        assert semantics.response_id(other) == expected
        assert outcome(joined_response, other, message) == outcome(encode_message, other[1:])


def joined_response(response: list[bytes], request: list[bytes]) -> bytes:
    return encoded_bytes(semantics.encode_response(response, request))


@pytest.mark.parametrize("size", [PIECE_FROM, 1024, 70_000])
@pytest.mark.parametrize("before", [[], [b""]])  # alone, or behind a REQ's delimiter
def test_a_long_last_part_is_handed_on_as_it_is(size: int, before: list[bytes]) -> None:
    part = bytes(size)
    request = semantics.encode_request([*before, part], 7)
    response = semantics.encode_response([(7).to_bytes(4, "big"), *before, part], [])
    for data in (request, response):
        assert isinstance(data, list)
        assert len(data) == 2
        assert data[1] is part
    short = bytes(PIECE_FROM - 1)
    assert isinstance(semantics.encode_request([*before, short], 7), bytes)
    assert isinstance(semantics.encode_response([(7).to_bytes(4, "big"), *before, short], []), bytes)


@settings(max_examples=200)
@given(messages, ids, st.lists(st.binary(max_size=6), max_size=3))
def test_the_builds_agree(message: list[bytes], upstream_id: int, other: list[bytes]) -> None:
    compiled, pure = both_builds("sota_zmtp.semantics")
    answer = [upstream_id.to_bytes(4, "big"), *message]
    for function, args in (
        (lambda m: m.encode_request(message, upstream_id), ()),
        (lambda m: m.response_id(answer), ()),
        (lambda m: m.response_id(other), ()),
        (lambda m: m.encode_response(answer, message), ()),
        (lambda m: m.encode_response(other, message), ()),
    ):
        assert outcome(function, compiled, *args) == outcome(function, pure, *args)


@pytest.mark.parametrize(
    "sizes",
    [
        *([255, 256], [65535, 65536], [70_000, 1, 300], [0, 65535], [4, 65536], [255, 70_000]),
        *([256], [65535], [65536], [70_000]),  # one part: the id frame's int and the size tables
    ],
)
def test_long_frames_on_both_sides_of_64_kib_are_encoded_as_the_reader_reads_them(sizes: list[int]) -> None:
    message = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    data = encoded_bytes(semantics.encode_request(message, 7))
    assert decoded(data) == [[(7).to_bytes(4, "big"), *message]]
    assert joined_response([(7).to_bytes(4, "big"), *message], message) == encode_message(message)
