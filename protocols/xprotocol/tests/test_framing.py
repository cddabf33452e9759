"""The stream half bolt and dubbo share (``FrameDecoder.feed``): a frame a
read left unfinished is finished from the next read's head, and the rest of
that read is parsed in place, whatever the reads' sizes, with the frames
before bad bytes handed out first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import dubbo_request, request

from sota_dispatch import ProtocolError
from sota_dispatch.testing import transient_bytes
from sota_xprotocol import dubbo
from sota_xprotocol.bolt import BoltDecoder
from sota_xprotocol.dubbo import DubboDecoder
from sota_xprotocol.framing import FrameDecoder


def bolt_frame(request_id: int, size: int) -> bytes:
    return request(b"c" * size, request_id).encode()


def dubbo_frame(request_id: int, size: int) -> bytes:
    body = dubbo_request("a" * size).body
    return dubbo.DubboFrame(dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, request_id, body).encode()


CODECS: dict[str, tuple[Callable[[], FrameDecoder[object]], Callable[[int, int], bytes]]] = {
    "bolt": (BoltDecoder, bolt_frame),  # type: ignore[dict-item]
    "dubbo": (DubboDecoder, dubbo_frame),  # type: ignore[dict-item]
}
#: Bytes neither protocol starts a frame with.
BAD = b"\xee" * 20


def fed(decoder: FrameDecoder[object], data: bytes, cuts: list[int]) -> tuple[list[bytes], bool]:
    """The raw frames ``decoder`` handed out for ``data`` read in pieces
    ending at ``cuts``, and whether it raised ProtocolError."""
    got: list[bytes] = []
    pos = 0
    try:
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            got += [bytes(frame.raw) for frame in decoder.feed(data[pos:cut])]  # type: ignore[attr-defined]
            pos = cut
        decoder.check()
    except ProtocolError:
        return got, True
    return got, False


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=150)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    bad=st.booleans(),
)
def test_any_reads_give_the_frames_in_order_and_the_error_after_them(
    name: str, sizes: list[int], cuts: list[int], bad: bool
) -> None:
    make, frame = CODECS[name]
    frames = [frame(i, size) for i, size in enumerate(sizes)]
    data = b"".join(frames) + (BAD if bad else b"")
    assert fed(make(), data, cuts) == (frames, bad)


@pytest.mark.parametrize("name", CODECS)
def test_a_read_after_an_unfinished_frame_is_parsed_in_place(name: str) -> None:
    """Not joined with the unfinished frame's bytes whole: that copied
    every byte received once more (1 MiB here) in an object as large as
    the read."""
    make, frame = CODECS[name]
    one = frame(1, 100)
    half = len(one) // 2
    opening, chunk = one[:half], one[half:] + one * 2_000 + one[:half]
    decoder = make()
    assert transient_bytes(decoder.feed, opening, chunk) < len(chunk) // 8
    assert decoder.buffered == half  # the last frame's first half, waiting
