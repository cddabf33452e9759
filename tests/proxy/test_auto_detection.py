"""``protocol: auto`` recognises a protocol however its first bytes are split.

Detection grows the prefix one byte at a time (the proxy peeks ``n + 1``
bytes after ``n`` were not enough), so the verdicts for every prefix of a
first request decide it whatever the TCP segments were: the first property
checks exactly that (:func:`~sota_dispatch.testing.check_sniff`). The
end-to-end test then sends each framing to a real auto listener one byte
per write. The core's two test protocols stand in for real ones: echo_lines
needs five bytes to tell (lines ending in LF or CRLF), idproto one. Each
plugin's suite checks its own framings the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from idproto import REQUEST, RESPONSE, Frame, IdProto

from sota_dispatch import BufferedReader
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import EchoLines, check_sniff, connect, running_with_backends, send_bytewise

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("echo_lines", "idproto")]

#: (name, protocol auto should pick, first bytes a client sends, the answer's test)
FRAMINGS: list[tuple[str, str, bytes, Callable[[bytes], bool]]] = [
    ("lines-crlf", "echo_lines", b"echo:crlf\r\n", lambda a: a == b"echo:crlf\r\n"),
    ("lines-lf", "echo_lines", b"echo:lf\n", lambda a: a == b"echo:lf\n"),
    ("ids", "idproto", Frame.make(REQUEST, 7, b"ids").raw, lambda a: a == Frame.make(RESPONSE, 7, b"IDS").raw),
]
IDS = [name for name, *_ in FRAMINGS]


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
def test_every_prefix_leads_to_the_right_protocol(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    assert check_sniff(protocol, data) == (1 if protocol == "idproto" else len(b"echo:"))


def test_a_prefix_no_protocol_can_start_with_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="gave up after 1 bytes"):
        check_sniff("echo_lines", b"x=1\n")
    with pytest.raises(AssertionError, match="never claimed"):
        check_sniff("echo_lines", b"echo")


@asynccontextmanager
async def auto_proxy() -> AsyncIterator[Proxy]:
    document = {
        "listeners": [
            {
                "name": "any",
                "address": "127.0.0.1:0",
                "protocol": "auto",
                "routes": [  # echo lines have the echo attribute, idproto frames none
                    {"match": [{"attribute": "echo", "present": True}], "cluster": "lines"},
                    {"cluster": "ids"},
                ],
            }
        ],
        "clusters": [{"name": "lines", "endpoints": ["127.0.0.1:1"]}, {"name": "ids", "endpoints": ["127.0.0.1:1"]}],
    }
    async with running_with_backends(parse_config(document), {"lines": EchoLines, "ids": IdProto}) as proxy:
        yield proxy


@pytest.mark.parametrize(("name", "protocol", "data", "check"), FRAMINGS, ids=IDS)
async def test_an_auto_listener_serves_each_framing_sent_a_byte_at_a_time(
    name: str, protocol: str, data: bytes, check: Callable[[bytes], bool]
) -> None:
    async with auto_proxy() as proxy, await connect(proxy.addresses["any"]) as stream:
        await send_bytewise(stream, data)
        reader = BufferedReader(stream)
        answer = b""
        with anyio.fail_after(10), contextlib.suppress(anyio.EndOfStream):
            while not check(answer):
                answer += await reader.read_some()
        assert check(answer), (name, answer[:200])
