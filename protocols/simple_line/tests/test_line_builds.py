"""The compiled line codec and query parser against their pure-Python sources.

The modules as installed (compiled in CI's compiled run) and their ``.py``
sources (:func:`~sota_dispatch.testing.both_builds`) get the same bytes,
however split, and must give the same lines, queries and errors. On the
pure-Python build they skip (CI's compiled run fails them instead).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch.testing import both_builds, outcome

lines = st.lists(
    st.text(st.sampled_from("ab=&%2Fé\r+ "), max_size=30).map(lambda t: t.encode() + b"\r\n"), max_size=5
).map(b"".join)
#: Lines around the 128 bytes the compiled codec walks before it calls find.
long_lines = st.lists(st.integers(100, 300).map(lambda n: b"a" * n + b"\r\n"), max_size=3).map(b"".join)


def fed(codec: Any, data: bytes, cuts: list[int]) -> list[Any]:
    steps: list[Any] = []
    pos = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        result = outcome(codec.feed, data[pos:cut])
        pos = cut
        steps.append((result, codec.buffered, repr(codec.pending_error)))
        if result[0] == "raised":
            break
    return steps


@settings(max_examples=300)
@given(
    lines | long_lines | st.binary(max_size=60),
    st.lists(st.integers(0, 1000), max_size=4),
    st.sampled_from([4, 16, 200, 65536]),
)
def test_line_codec_agrees_however_split(data: bytes, cuts: list[int], max_line: int) -> None:
    compiled, pure = both_builds("sota_simple_line.codec")
    assert fed(compiled.LineCodec(max_line), data, cuts) == fed(pure.LineCodec(max_line), data, cuts)


@settings(max_examples=300)
@given(lines | st.binary(max_size=60))
def test_query_parsing_agrees(data: bytes) -> None:
    compiled, pure = both_builds("sota_simple_line.query")
    for line in data.split(b"\n"):
        parsed = outcome(compiled.parse_query, line)
        assert parsed == outcome(pure.parse_query, line)
        if parsed[0] == "returned":
            query = compiled.parse_query(line)
            assert compiled.render_reply(query) == pure.render_reply(query)
    reason = data.decode("utf-8", "replace")
    assert outcome(compiled.render_error, reason) == outcome(pure.render_error, reason)
