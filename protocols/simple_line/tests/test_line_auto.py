"""simple_line behind ``protocol: auto``: recognised in the framings its
real clients use, however the first bytes are split. Lines ending in CRLF
were once never recognised (a trailing ``\\r`` looked unprintable).

The core's tests check detection with its own test protocols; these check
simple_line's sniffer against every installed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.config import parse_config
from sota_dispatch.testing import check_sniff, connect, running_with_backends, send_bytewise
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio

#: (name, first bytes a real client sends, the answer's test)
FRAMINGS: list[tuple[str, bytes, Callable[[bytes], bool]]] = [
    ("lines-crlf", b"line=crlf\r\n", lambda a: a == b'receive:{"line":["crlf"]}\r\n'),
    ("lines-lf", b"line=lf\n", lambda a: a == b'receive:{"line":["lf"]}\r\n'),
]
IDS = [name for name, *_ in FRAMINGS]

AUTO = {
    "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "lines"}]}],
    "clusters": [{"name": "lines", "endpoints": ["127.0.0.1:1"]}],
}


@pytest.mark.parametrize(("name", "data", "check"), FRAMINGS, ids=IDS)
def test_every_prefix_leads_to_simple_line(name: str, data: bytes, check: Callable[[bytes], bool]) -> None:
    check_sniff("simple_line", data)


@pytest.mark.parametrize(("name", "data", "check"), FRAMINGS, ids=IDS)
async def test_an_auto_listener_serves_each_framing_sent_a_byte_at_a_time(
    name: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    async with (
        running_with_backends(parse_config(AUTO), {"lines": SimpleLineDispatcher}) as proxy,
        await connect(proxy.addresses["any"]) as stream,
    ):
        await send_bytewise(stream, data)
        reader = BufferedReader(stream)
        answer = b""
        with anyio.fail_after(10), contextlib.suppress(anyio.EndOfStream):
            while not check(answer):
                answer += await reader.read_some()
        assert check(answer), (name, answer[:200])
