"""Regressions for defects found in review: each failed before its fix."""

from __future__ import annotations

import time

import anyio
import pytest
from xprotocol_support import dubbo_request

from sota_dispatch import Server
from sota_dispatch.testing import exchange
from sota_xprotocol import DubboClient, DubboEchoDispatcher, dubbo, hessian2
from sota_xprotocol.hessian2 import Hessian2Error, NeedMoreData, decode

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "data",
    [
        b"\x51" * 5000 + b"\x90",  # Q whose index is itself a Q ...
        b"\x43" * 5000,  # class definitions whose name is a class definition ...
        b"\x58" + b"\x51" * 5000 + b"\x90",  # a list length that is a Q chain
    ],
    ids=["ref-chain", "classdef-chain", "list-length-chain"],
)
def test_chains_raise_a_hessian_error_not_recursion_error(data: bytes) -> None:
    with pytest.raises((Hessian2Error, NeedMoreData)):
        decode(data)


def test_a_flood_of_empty_string_chunks_is_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(Hessian2Error, match="empty non-final"):
        decode(b"\x52\x00\x00" * 200_000 + b"\x00")
    assert time.perf_counter() - started < 1


def request_with_argument(encoded_argument: bytes, version: str = "2.7.23") -> bytes:
    header = b"".join(hessian2.encode(v) for v in (version, "com.example.S", "1.0.0", "echo", "Ljava/lang/Object;"))
    body = header + encoded_argument + hessian2.encode({})
    return dubbo.DubboFrame(0xC2, 0, 1, body).encode()


def billion_laughs(depth: int) -> bytes:
    # list_k = [list_{k-1}, Q(ref of list_{k-1})]: 3 bytes a level, 2**depth leaves.
    data = b"\x78"  # the innermost empty list is ref 0
    for level in range(1, depth + 1):
        data = b"\x7a" + data + b"\x51" + hessian2.encode(depth - level + 1)
    return data


async def test_dubbo_echo_returns_the_argument_bytes_unchanged() -> None:
    pojo = b"C" + b"".join(hessian2.encode(v) for v in ("com.example.Req", 2, "userId", "n"))
    pojo += b"\x60" + hessian2.encode("A1") + hessian2.encode(7)
    for argument in (
        billion_laughs(40),  # would expand to 2**40 items if re-encoded
        bytes.fromhex("f92c"),  # 300L stays a long
        bytes.fromhex("72045b696e749091"),  # int[] stays typed
        pojo,  # an object, which the encoder cannot write
    ):
        started = time.perf_counter()
        result = await exchange(DubboEchoDispatcher, [request_with_argument(argument)])
        assert time.perf_counter() - started < 2
        [reply] = dubbo.DubboDecoder().feed(result.output)
        assert reply.body == hessian2.encode(1) + argument


def test_response_attachments_follow_javas_version_parsing() -> None:
    request = dubbo.DubboFrame(0xC2, 0, 1, b"")
    with_suffix = dubbo.value_response(request, "x", dubbo_version="2.0.2-SNAPSHOT")
    assert with_suffix.body.startswith(hessian2.encode(4))
    assert dubbo.value_response(request, "x", dubbo_version="2.7.23").body.startswith(hessian2.encode(1))


async def test_keepalive_on_a_saturated_connection_does_not_close_it() -> None:
    class Slow(DubboEchoDispatcher):
        """Acks heartbeats at once, answers calls after a while."""

        async def serve(self) -> None:
            decoder = dubbo.DubboDecoder()
            async for data in self.reader.chunks():
                for frame in decoder.feed(data):
                    if frame.is_heartbeat:
                        await self.writer.send(dubbo.heartbeat_response(frame).encode())
                    else:
                        self.start_soon(self._late_answer, frame)

        async def _late_answer(self, frame: dubbo.DubboFrame) -> None:
            await anyio.sleep(0.5)
            await self.writer.send(dubbo.value_response(frame, "late").encode())

    class Tight(DubboClient):
        keepalive_interval = 0.05
        max_in_flight = 2

    server = Server(Slow, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await Tight.connect(address) as client:
            results = []

            async def one() -> None:
                results.append(await client.call(dubbo_request("x"), timeout=5))

            async with anyio.create_task_group() as calls:
                calls.start_soon(one)
                calls.start_soon(one)
            assert len(results) == 2
            assert client.close_reason is None
        server.shutdown()


async def test_dubbo_client_ignores_a_providers_readonly_event() -> None:
    class ReadOnlyFirst(DubboEchoDispatcher):
        async def on_connect(self) -> None:
            # What a Java provider sends before a graceful shutdown.
            self.writer.write(dubbo.DubboFrame(0xA2, 0, 99, hessian2.encode("R")).encode())

    server = Server(ReadOnlyFirst, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await DubboClient.connect(address) as client:
            response = await client.call(dubbo_request("still served"), timeout=5)
            assert response is not None
            assert hessian2.decode_all(response.body) == [1, "still served"]
        server.shutdown()
