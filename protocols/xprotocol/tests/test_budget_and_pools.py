"""Review regressions of the overload and per-client-pool work (bolt, real sockets).

* oneway requests queued in a client's own pool gave their share of
  ``max_requests`` back only when sent: a client closing meanwhile leaked
  it for good;
* the buffer budget closed the shared upstream connection for one large
  answer, resetting every client on it;
* complete requests in flight were not counted: one connection held
  hundreds of MiB of them unseen.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import anyio
import pytest
from anyio.abc import SocketStream

from sota_dispatch import BufferedReader, Dispatcher
from sota_dispatch.config import parse_config
from sota_dispatch.testing import connect, running_proxy, serving
from sota_xprotocol import BoltEchoDispatcher, bolt

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def request(request_id: int, content: bytes, kind: bolt.FrameType = bolt.FrameType.REQUEST) -> bytes:
    return bolt.BoltFrame(
        kind, bolt.CmdCode.RPC_REQUEST, request_id, codec=11, timeout=30_000, class_name=b"x", content=content
    ).encode()


async def read_frames(stream: SocketStream, count: int, timeout: float = 10) -> list[bolt.BoltFrame]:
    reader, decoder = BufferedReader(stream), bolt.BoltDecoder(max_frame_size=32 * MiB)
    frames: list[bolt.BoltFrame] = []
    with anyio.fail_after(timeout):
        while len(frames) < count:
            frames += decoder.feed(await reader.read_some())
    return frames


@contextlib.contextmanager
def slow_to_connect() -> Iterator[str]:
    """An address whose connects hang: a listener with a full accept backlog."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def test_oneways_queued_in_a_closed_clients_pool_give_back_their_share() -> None:
    with slow_to_connect() as slow:
        doc = {
            "listeners": [{"name": "rpc", "address": "127.0.0.1:0", "protocol": "bolt", "routes": [{"cluster": "up"}]}],
            "clusters": [{"name": "up", "endpoints": [slow], "pool": {"shared": False}, "connect_timeout": "10s"}],
        }
        async with running_proxy(parse_config(doc)) as proxy:
            cluster = proxy.clusters["up"]
            async with await connect(proxy.addresses["rpc"]) as client:
                await client.send(b"".join(request(i, b"fire", bolt.FrameType.ONEWAY) for i in range(60)))
                with anyio.fail_after(5):
                    while cluster.active_requests < 60:  # noqa: ASYNC110 - no event marks a queued try
                        await anyio.sleep(0.01)
            with anyio.fail_after(5):  # the client left: its queued oneways end with it
                while cluster.active_requests:  # noqa: ASYNC110 - nor one that ends
                    await anyio.sleep(0.01)
            assert cluster.queued == 0


class DelayedEcho(BoltEchoDispatcher):
    """Echoes, but a request whose content starts with ``slow`` after 0.5 s."""

    async def serve(self) -> None:
        decoder = bolt.BoltDecoder(max_frame_size=32 * MiB)
        async for data in self.reader.chunks():
            for frame in decoder.feed(data):
                if frame.is_heartbeat:
                    self.writer.write(bolt.heartbeat_ack(frame).encode())
                    continue
                if frame.content.startswith(b"slow"):
                    self.start_soon(self._later, frame)
                    continue
                self.writer.write(_answer(frame))

    async def _later(self, frame: bolt.BoltFrame) -> None:
        await anyio.sleep(0.5)
        self.writer.write(_answer(frame))
        self.flush_soon()


def _answer(frame: bolt.BoltFrame) -> bytes:
    return bolt.BoltFrame(
        bolt.FrameType.RESPONSE, bolt.CmdCode.RPC_RESPONSE, frame.request_id, codec=11, content=frame.content
    ).encode()


async def test_a_large_answer_under_pressure_does_not_reset_the_shared_upstream_connection() -> None:
    async with serving(DelayedEcho) as up:
        assert up.address is not None
        doc = {
            "overload": {"buffer_budget": "16MiB", "large_frame": "1MiB"},
            "listeners": [{"name": "rpc", "address": "127.0.0.1:0", "protocol": "bolt", "routes": [{"cluster": "up"}]}],
            "clusters": [{"name": "up", "endpoints": [up.address]}],
        }
        async with running_proxy(parse_config(doc)) as proxy, contextlib.AsyncExitStack() as stack:
            address = proxy.addresses["rpc"]
            budget = proxy.budget
            big = await stack.enter_async_context(await connect(address))
            # Sent while the budget is empty; its 2 MiB answer comes back
            # late, on the upstream connection every client shares.
            await big.send(request(1, b"slow" + b"b" * (2 * MiB)))
            with anyio.fail_after(10):
                while budget.held < 2 * MiB:  # noqa: ASYNC110 - the proxy reads it
                    await anyio.sleep(0.01)
            for k in range(12):  # 10.8 MiB of partial frames, each below large_frame: pressure
                holder = await stack.enter_async_context(await connect(address))
                await holder.send(request(100 + k, b"h" * (15 * MiB))[: int(0.9 * MiB)])
            with anyio.fail_after(10):
                while budget.held < budget.refuse_level:  # noqa: ASYNC110 - the proxy reads them
                    await anyio.sleep(0.01)
            victim = await stack.enter_async_context(await connect(address))
            await victim.send(b"".join(request(10 + i, b"slow-victim") for i in range(5)))
            assert [(f.status, len(f.content)) for f in await read_frames(big, 1)] == [(0, 2 * MiB + 4)]
            answers = await read_frames(victim, 5)
            assert [(f.status, f.content) for f in answers] == [(0, b"slow-victim")] * 5
            assert budget.frames_refused == budget.connections_shed == 0


class Sink(Dispatcher):
    """Reads every request and answers none (a stalled backend)."""

    async def serve(self) -> None:
        async for _ in self.reader.chunks():
            pass


async def test_complete_requests_in_flight_count_against_the_budget() -> None:
    async with serving(Sink) as up:
        assert up.address is not None
        doc = {
            "overload": {"buffer_budget": "32MiB", "large_frame": "1MiB"},
            "listeners": [{"name": "rpc", "address": "127.0.0.1:0", "protocol": "bolt", "routes": [{"cluster": "up"}]}],
            "clusters": [{"name": "up", "endpoints": [up.address]}],
        }
        async with running_proxy(parse_config(doc)) as proxy:
            budget = proxy.budget
            frame = request(1, b"z" * (5 * MiB))
            sent = 0
            peak = 0
            async with await connect(proxy.addresses["rpc"]) as client:
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    for _ in range(30):  # 150 MiB in all, on one connection, none answered
                        await client.send(frame)
                        sent += 1
                        peak = max(peak, budget.held)
            with anyio.fail_after(10):
                while budget.held:  # noqa: ASYNC110 - the refused connection releases as it closes
                    await anyio.sleep(0.01)
            assert budget.frames_refused + budget.connections_shed >= 1
            assert peak <= 32 * MiB + 6 * MiB  # at most a frame over before the budget acts
            assert sent < 30  # the proxy stopped it long before
