"""The compiled build of the codecs against their pure-Python sources.

Each test feeds the module as installed (compiled in CI's compiled run) and
its ``.py`` source (:func:`~sota_dispatch.testing.both_builds`) the same
input, valid or garbage, whole or split, and requires the same frames,
values and errors. On the pure-Python build there is nothing to compare
and they skip (CI's compiled run fails them instead).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from xprotocol_support import REQUESTS, STREAMS, dubbo_request, request, values

import sota_xprotocol.bolt as bolt
from sota_dispatch import ProtocolError, build_info
from sota_dispatch.testing import both_builds, outcome
from sota_xprotocol.hessian2 import encode

#: Values hessian2 round-trips, with longs too.
any_value = values | st.integers(-(2**63), 2**63 - 1)
#: Valid encodings, garbage, and a valid one with garbage spliced in.
hessian_bytes = st.one_of(
    any_value.map(encode),
    st.binary(max_size=80),
    st.tuples(any_value.map(encode), st.binary(max_size=8), st.integers(0, 200)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
)


def fed(decoder: Any, data: bytes, cuts: list[int]) -> list[Any]:
    """Every frame the decoder returns for ``data`` fed in pieces cut at
    ``cuts``, and how it ended (the error, or the bytes it still holds)."""
    pieces, start = [], 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        pieces.append(data[start:cut])
        start = cut
    frames: list[Any] = []
    for piece in pieces:
        result = outcome(decoder.feed, piece)
        frames.append(result)
        if result[0] == "raised":
            break
    frames.append(decoder.buffered)
    return frames


def test_bolt_takes_its_build_s_spelling_of_the_headers() -> None:
    assert ("sota_xprotocol.bolt" in build_info().compiled) == bolt._COMPILED


@settings(max_examples=300)
@given(hessian_bytes)
def test_hessian2_decode_and_skip_agree(data: bytes) -> None:
    for name in ("sota_xprotocol.hessian2.decode", "sota_xprotocol.hessian2.skip"):
        compiled, pure = both_builds(name)
        if name.endswith("decode"):
            for function in ("decode", "decode_all", "decode_spans"):
                assert outcome(getattr(compiled, function), data) == outcome(getattr(pure, function), data)
            assert outcome(compiled.decode, data, max_depth=3) == outcome(pure.decode, data, max_depth=3)
        else:
            assert outcome(compiled.skip, data) == outcome(pure.skip, data)
            assert outcome(compiled.skip, data, max_length=5) == outcome(pure.skip, data, max_length=5)


@settings(max_examples=300)
@given(any_value | st.sets(st.integers(), max_size=3) | st.complex_numbers())
def test_hessian2_encode_agrees(value: Any) -> None:
    compiled, pure = both_builds("sota_xprotocol.hessian2.encode")
    assert outcome(compiled.encode, value) == outcome(pure.encode, value)
    if isinstance(value, int):
        assert outcome(compiled.encode_long, value) == outcome(pure.encode_long, value)


bolt_streams = st.one_of(
    st.sampled_from(list(STREAMS.values())),
    st.binary(min_size=1, max_size=40).map(lambda content: request(content).encode()),
    st.binary(max_size=60),
    st.tuples(st.sampled_from(list(STREAMS.values())), st.integers(0, 400), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    ),
)


@settings(max_examples=200)
@given(bolt_streams, st.lists(st.integers(0, 10_000), max_size=4), st.sampled_from([64, 1 << 20]))
def test_bolt_decoder_agrees_however_split(data: bytes, cuts: list[int], max_frame_size: int) -> None:
    compiled, pure = both_builds("sota_xprotocol.bolt")
    assert fed(compiled.BoltDecoder(max_frame_size=max_frame_size), data, cuts) == fed(
        pure.BoltDecoder(max_frame_size=max_frame_size), data, cuts
    )
    assert outcome(compiled.decode_header_map, data) == outcome(pure.decode_header_map, data)


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4), st.binary(max_size=20))
def test_bolt_encoders_agree(header: dict[str, str], content: bytes) -> None:
    compiled, pure = both_builds("sota_xprotocol.bolt")
    assert compiled.encode_header_map(header) == pure.encode_header_map(header)
    frames = [request(content, request_id=9), request(b"", request_id=-1)]
    assert outcome(compiled.encode_frames, frames) == outcome(pure.encode_frames, frames)
    for frame in frames:
        for status in (0, 0x12, -1):
            reply = {"status": status, "class_name": b"c", "header_bytes": b"", "content": content}
            assert outcome(compiled.encode_reply, frame, **reply) == outcome(pure.encode_reply, frame, **reply)


dubbo_streams = st.one_of(
    st.sampled_from(REQUESTS),
    any_value.map(lambda v: dubbo_request(v).encode()),
    st.binary(max_size=60),
    st.tuples(st.sampled_from(REQUESTS), st.integers(0, 300), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    ),
)


@settings(max_examples=200)
@given(dubbo_streams, st.lists(st.integers(0, 10_000), max_size=4))
def test_dubbo_decoder_and_lazy_bodies_agree(data: bytes, cuts: list[int]) -> None:
    compiled, pure = both_builds("sota_xprotocol.dubbo")
    assert fed(compiled.DubboDecoder(), data, cuts) == fed(pure.DubboDecoder(), data, cuts)
    got = [outcome(compiled.DubboDecoder().feed, data), outcome(pure.DubboDecoder().feed, data)]
    if got[0][0] == "returned":
        frames = [compiled.DubboDecoder().feed(data), pure.DubboDecoder().feed(data)]
        for one, other in zip(*frames, strict=True):
            assert outcome(one.call) == outcome(other.call)
            assert outcome(one.invocation) == outcome(other.invocation)


@given(st.text(alphabet="[LJIZBCSDFV;/a.", max_size=30))
def test_dubbo_descriptor_counting_agrees(descriptor: str) -> None:
    compiled, pure = both_builds("sota_xprotocol.dubbo")
    assert outcome(compiled.count_arguments, descriptor) == outcome(pure.count_arguments, descriptor)


#: The per-frame semantics functions of each protocol (sota_xprotocol.semantics).
SEMANTICS = {
    "bolt": ["bolt_is_request", "bolt_is_heartbeat", "bolt_is_oneway", "bolt_response_id", "bolt_timeout"],
    "dubbo": ["dubbo_is_request", "dubbo_is_heartbeat", "dubbo_is_oneway", "dubbo_response_id", "dubbo_timeout"],
}


@settings(max_examples=150)
@given(st.one_of(bolt_streams.map(lambda d: ("bolt", d)), dubbo_streams.map(lambda d: ("dubbo", d))))
def test_frame_semantics_agree(case: tuple[str, bytes]) -> None:
    protocol, data = case
    compiled, pure = both_builds("sota_xprotocol.semantics")
    decoders = {"bolt": "BoltDecoder", "dubbo": "DubboDecoder"}
    frames = []
    for build in both_builds(f"sota_xprotocol.{protocol}"):
        try:
            frames.append(getattr(build, decoders[protocol])().feed(data))
        except ProtocolError:
            return  # the decoders' agreement is tested above
    for one, other in zip(*frames, strict=True):
        for name in SEMANTICS[protocol] + ["frame_status"]:
            assert outcome(getattr(compiled, name), one) == outcome(getattr(pure, name), other)
        assert compiled.encode_request(one, 99) == pure.encode_request(other, 99)
        assert compiled.encode_response(one, one) == pure.encode_response(other, other)
