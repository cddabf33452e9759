"""Error replies as real clients see them, out-of-order completion, and bad
input that costs only its own connection."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest
from xprotocol_support import Reversing, answered_order, anthunder_calls, dubbo_calls, serving

from sota_dispatch import Dispatcher
from sota_xprotocol import (
    Failure,
    XProtocolEchoDispatcher,
    bolt,
    bolt_error_reply,
    dubbo,
    dubbo_error_reply,
)
from sota_xprotocol.failures import BOLT_STATUS, DUBBO_STATUS

pytestmark = pytest.mark.anyio


def test_every_failure_has_a_status_in_both_protocols() -> None:
    assert set(BOLT_STATUS) == set(Failure) == set(DUBBO_STATUS)
    request = bolt.BoltDecoder().feed(
        bolt.BoltFrame(bolt.FrameType.REQUEST, bolt.CmdCode.RPC_REQUEST, 5, class_name=b"c", content=b"x").encode()
    )[0]
    for failure in Failure:
        [reply] = bolt.BoltDecoder().feed(bolt_error_reply(request, failure).encode())
        assert (reply.request_id, reply.status, reply.class_name, reply.content) == (5, BOLT_STATUS[failure], b"", b"")


class Refusing(Dispatcher):
    """Answers every bolt request with a 'no route' error reply."""

    async def serve(self) -> None:
        decoder = bolt.BoltDecoder()
        async for data in self.reader.chunks():
            for frame in decoder.feed(data):
                self.writer.write(bolt_error_reply(frame, Failure.NO_ROUTE).encode())


async def test_anthunder_sees_the_bolt_error_status() -> None:
    from anthunder.exceptions import ServerError

    async with serving(Refusing) as (host, port):
        with pytest.raises(ServerError, match="NO_PROCESSOR"):
            await anyio.to_thread.run_sync(anthunder_calls, host, port, [b"x"])


@pytest.mark.parametrize("failure", [Failure.NO_HEALTHY_UPSTREAM, Failure.UPSTREAM_RESET])
async def test_dubbo_ssl_python_sees_the_error_status_and_message(failure: Failure) -> None:
    from dubbo_ssl.common.exceptions import DubboResponseException

    class Failing(Dispatcher):
        async def serve(self) -> None:
            decoder = dubbo.DubboDecoder()
            async for data in self.reader.chunks():
                for frame in decoder.feed(data):
                    self.writer.write(dubbo_error_reply(frame, failure).encode())

    async with serving(Failing) as (host, port):
        with pytest.raises(DubboResponseException, match=DUBBO_STATUS[failure][1].replace("|", r"\|")):
            await anyio.to_thread.run_sync(dubbo_calls, host, port, ["x"])


async def test_dubbo_ssl_python_50_concurrent_calls_completed_out_of_order() -> None:
    answered_order.clear()
    arguments: list[Any] = [f"call-{i}" for i in range(25)] + list(range(25))
    async with serving(Reversing) as (host, port):
        assert await anyio.to_thread.run_sync(dubbo_calls, host, port, arguments, 50) == arguments
    assert len(answered_order) == 50
    assert answered_order != sorted(answered_order)  # completed out of order, demultiplexed by id


@pytest.mark.parametrize(
    "garbage",
    [b"\xda\xbb\xc2\x00" + bytes(8) + b"\x00\x00\x00\x02N", b"\x01\x07" + bytes(30), b"\xda\xbc" + bytes(30)],
    ids=["dubbo-bad-then-magic", "bolt-bad-type", "wrong-magic"],
)
async def test_garbage_costs_only_its_own_connection(garbage: bytes) -> None:
    async with serving(XProtocolEchoDispatcher) as (host, port):
        async with await anyio.connect_tcp(host, port) as healthy:
            request = bolt.BoltFrame(bolt.FrameType.REQUEST, bolt.CmdCode.RPC_REQUEST, 1, content=b"ok").encode()
            await healthy.send(request)
            with anyio.fail_after(10):
                assert bolt.BoltDecoder().feed(await healthy.receive())[0].content == b"ok"
            async with await anyio.connect_tcp(host, port) as bad:
                await bad.send(garbage + b"\xda\xbc" + bytes(20))  # wrong magic after it, too
                with anyio.fail_after(10):
                    while True:
                        try:
                            await bad.receive()
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            break
            await healthy.send(request)
            with anyio.fail_after(10):
                assert bolt.BoltDecoder().feed(await healthy.receive())[0].content == b"ok"
        assert await anyio.to_thread.run_sync(dubbo_calls, host, port, ["fresh"]) == ["fresh"]
