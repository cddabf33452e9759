"""The dispatcher against sota_dispatch.testing's conformance checks, in memory."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import LimitExceeded
from sota_dispatch.testing import check_clean_shutdown, check_garbage, check_split_invariance, exchange
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio

REQUESTS = b"a=1&b=2&a=3\r\nname=x+y\nbad=%zz\r\n\r\nq=%C3%A9\r\n"
REPLIES = (
    b'receive:{"a":["1","3"],"b":["2"]}\r\n'
    b'receive:{"name":["x y"]}\r\n'
    b"error:bad percent escape at offset 4: '%zz'\r\n"
    b"error:empty request\r\n"
    b'receive:{"q":["\xc3\xa9"]}\r\n'
)


async def test_same_replies_whatever_the_split() -> None:
    assert await check_split_invariance(SimpleLineDispatcher, REQUESTS) == REPLIES


async def test_clean_shutdown_after_complete_requests() -> None:
    result = await check_clean_shutdown(SimpleLineDispatcher, REQUESTS)
    assert result.output == REPLIES


async def test_over_long_line_gets_error_then_close() -> None:
    result = await exchange(SimpleLineDispatcher, [b"a=1\r\n", b"x" * 20, b"=1\r\nb=2\r\n"], options={"max_line": "16"})
    assert result.output == b'receive:{"a":["1"]}\r\nerror:line too long (limit 16 bytes)\r\n'
    assert isinstance(result.close_reason, LimitExceeded)


async def test_line_exactly_at_limit_is_served() -> None:
    line = b"k=" + b"v" * 14
    result = await exchange(SimpleLineDispatcher, [line + b"\r\n", line + b"\n"], options={"max_line": "16"})
    assert result.output == (b'receive:{"k":["' + b"v" * 14 + b'"]}\r\n') * 2
    over = await exchange(SimpleLineDispatcher, [line + b"v\n"], options={"max_line": "16"})
    assert over.output == b"error:line too long (limit 16 bytes)\r\n"


def lines_strategy() -> st.SearchStrategy[bytes]:
    line = st.one_of(
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        st.from_regex(rb"\A[a-z%=&+0-9A-F]{0,20}\Z"),
    )
    ending = st.sampled_from([b"\r\n", b"\n"])
    return st.lists(st.tuples(line, ending).map(lambda t: t[0] + t[1]), max_size=4).map(b"".join)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None)
@given(data=lines_strategy())
def test_split_invariance_property(backend: str, data: bytes) -> None:
    anyio.run(check_split_invariance, SimpleLineDispatcher, data, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_garbage_never_raises_anything_but_protocol_errors(backend: str, data: bytes) -> None:
    async def check() -> None:
        await check_garbage(SimpleLineDispatcher, data, options={"max_line": "64"})

    anyio.run(check, backend=backend)
