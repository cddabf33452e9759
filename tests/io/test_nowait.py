"""Sending without waiting: BufferedWriter.flush_nowait over real TCP, and the
proxy's Outbox that flushes every connection written to at the end of a batch."""

from __future__ import annotations

from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketStream

from sota_dispatch import BufferedWriter, Dispatcher, Outbox
from sota_dispatch.config import parse_config
from sota_dispatch.io.outbox import FLUSH_BYTES, FLUSH_EVERY
from sota_dispatch.io.transport import nowait_sender
from sota_dispatch.testing import memory_stream_pair, running_proxy, serving, tcp_stream_pair

pytestmark = pytest.mark.anyio


async def receive_exactly(stream: SocketStream, size: int) -> bytes:
    data = bytearray()
    with anyio.fail_after(10):
        while len(data) < size:
            data += await stream.receive()
    return bytes(data)


async def test_flush_nowait_hands_everything_to_the_socket_from_the_calling_task() -> None:
    async with tcp_stream_pair() as (near, far):
        assert nowait_sender(near) is not None
        writer = BufferedWriter(near)
        writer.writelines([b"one ", b"two ", b"three"])
        assert writer.flush_nowait() is True
        assert writer.pending == 0
        assert writer.flush_nowait() is True  # nothing queued: nothing to do
        assert await receive_exactly(far, 13) == b"one two three"


async def test_a_full_socket_keeps_the_rest_queued_and_flush_sends_it_in_order() -> None:
    chunk = 64 * 1024
    async with tcp_stream_pair() as (near, far):
        writer = BufferedWriter(near, high_water=1 << 30)
        written = 0
        # The peer reads nothing: the kernel's buffers (a few MiB) fill up and
        # flush_nowait stops short, never blocking.
        for i in range(4096):
            writer.write(bytes([i % 251]) * chunk)
            written += chunk
            if not writer.flush_nowait():
                break
        else:
            pytest.fail("256 MiB went out without the peer reading")
        # What the socket did not take waits here (trio) or in the transport
        # beneath (asyncio); either way, more bytes now stay queued here.
        assert writer.pending <= written
        writer.write(b"end")
        written += 3
        assert writer.flush_nowait() is False  # still full: still queued, no error
        assert writer.pending >= 3
        received = bytearray()

        async def read_all() -> None:
            received.extend(await receive_exactly(far, written))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            with anyio.fail_after(10):
                await writer.flush()
        assert writer.pending == 0
    expected = b"".join(bytes([i % 251]) * chunk for i in range((written - 3) // chunk)) + b"end"
    assert bytes(received) == expected


async def test_flush_takes_the_socket_straight_and_a_peer_that_never_reads_times_it_out() -> None:
    from sota_dispatch import FrameTimeout

    async with tcp_stream_pair() as (near, far):
        writer = BufferedWriter(near, high_water=1 << 30)
        writer.send_timeout = 0.2
        writer.write(b"first")
        with anyio.fail_after(5):
            await writer.flush()  # the socket takes it: done, without the stream's send
        assert writer.pending == 0
        assert await receive_exactly(far, 5) == b"first"

        # The peer reads nothing now (on asyncio its transport would read on
        # into anyio's queue whenever the loop turns): what the kernel does
        # not take waits in the transport (asyncio) or here (trio), within
        # the send timeout.
        transport: Any = getattr(far, "_transport", None)
        if transport is not None:
            transport.pause_reading()

        async def flood() -> None:
            for _ in range(4096):
                writer.write(bytes(64 * 1024))
                await writer.flush()

        with anyio.fail_after(5), pytest.raises(FrameTimeout):
            await flood()


async def test_a_task_that_only_flushes_still_lets_the_others_run() -> None:
    # Flushes the socket takes whole do not yield (no stream send), but a
    # task doing nothing else gives the loop a turn once per FAIR_SLICE.
    from sota_dispatch.io.clock import loop_time

    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with tcp_stream_pair() as (near, _far), anyio.create_task_group() as tg:
        tg.start_soon(other)
        writer = BufferedWriter(near)
        await writer.flush()  # nothing queued: nothing done
        start = loop_time()
        for _ in range(1_000_000):  # 1 byte each: far below what the kernel takes unread
            writer.write(b"x")
            await writer.flush()
            if loop_time() - start > 0.02:
                break
        tg.cancel_scope.cancel()
    assert turns >= 5  # about one per millisecond of flushing


async def test_flush_nowait_after_send_eof_leaves_the_bytes_queued_and_raises_nothing() -> None:
    async with tcp_stream_pair() as (near, _far):
        await near.send_eof()
        writer = BufferedWriter(near)
        writer.write(b"too late")
        assert writer.flush_nowait() is False
        assert writer.pending == len(b"too late")


async def test_flush_nowait_never_overtakes_a_flush_under_way() -> None:
    async with tcp_stream_pair() as (near, far):
        writer = BufferedWriter(near)
        # A flush holds the writer's lock while its send waits (a full socket):
        # bytes written meanwhile must not go out ahead of the batch it sends.
        await writer._hold()
        try:
            writer.write(b"later")
            assert writer.flush_nowait() is False
            assert writer.pending == len(b"later")
        finally:
            writer._let_go()
        assert writer.flush_nowait() is True
        assert await receive_exactly(far, 5) == b"later"


async def test_streams_without_a_nowait_sender_keep_their_bytes_for_flush() -> None:
    a, b = memory_stream_pair()
    assert nowait_sender(b) is None
    writer = BufferedWriter(b)
    assert writer.flush_nowait() is True
    writer.write(b"kept")
    assert writer.flush_nowait() is False
    await writer.flush()
    assert await a.receive() == b"kept"


def test_another_anyios_internals_mean_no_nowait_sender() -> None:
    class Renamed:  # what a future anyio's stream might look like
        __module__ = "anyio._backends._asyncio"
        _transport = object()
        _protocol = object()  # no write_event, no exception

    assert nowait_sender(Renamed()) is None


# -- the outbox ----------------------------------------------------------------


def hold(writer: BufferedWriter, size: int) -> None:
    """Make ``writer`` hold ``size`` bytes (it never sends: nothing flushes it)."""
    writer.write(b"\0" * (size - writer.pending))


class Recorder:
    """Stands in for a connection: records which flush the outbox asked for.
    Its writer holds ``FLUSH_BYTES`` (enough for an early flush on its own)."""

    def __init__(self, outbox: Outbox | None = None, then: Recorder | None = None, held: int = FLUSH_BYTES) -> None:
        self.calls: list[str] = []
        self._outbox, self._then = outbox, then
        # A real writer (the compiled outbox reads it as one), on a pipe nobody reads.
        self.writer = BufferedWriter(memory_stream_pair()[0])
        hold(self.writer, held)

    def flush_soon(self) -> None:
        self.calls.append("soon")

    def flush_now(self) -> None:
        self.calls.append("now")
        if self._outbox is not None and self._then is not None:
            self._outbox.add(cast(Dispatcher, self._then))  # flushing wrote to another connection


def conn(recorder: Recorder) -> Any:
    return cast(Dispatcher, recorder)


def test_outside_a_batch_a_write_is_flushed_soon() -> None:
    outbox, a = Outbox(), Recorder()
    outbox.add(conn(a))
    assert a.calls == ["soon"]


def test_a_batch_flushes_each_connection_once_at_its_end() -> None:
    outbox, a, b = Outbox(), Recorder(), Recorder()
    outbox.begin()
    for _ in range(FLUSH_EVERY - 2):
        outbox.add(conn(a))
    outbox.add(conn(b))
    assert a.calls == b.calls == []
    outbox.end()
    assert a.calls == b.calls == ["now"]
    outbox.begin()
    outbox.end()
    assert a.calls == ["now"]  # a batch that wrote nothing flushes nothing


def test_a_long_batch_flushes_what_it_wrote_every_flush_every_writes() -> None:
    """The first requests of a long batch leave while the rest are still
    being made, so the upstream works while the proxy does."""
    outbox, a, b = Outbox(), Recorder(), Recorder()
    assert outbox.flush_every == FLUSH_EVERY
    outbox.flush_every = 10
    outbox.begin()
    for _ in range(9):
        outbox.add(conn(a))
    assert a.calls == []
    outbox.add(conn(b))  # the tenth write: both written to so far leave
    assert a.calls == b.calls == ["now"]
    for _ in range(15):
        outbox.add(conn(a))  # ten more: a again; five after that wait for the end
    assert (a.calls, b.calls) == (["now", "now"], ["now"])
    outbox.end()
    assert (a.calls, b.calls) == (["now", "now", "now"], ["now"])


def test_a_long_batch_to_many_connections_still_sends_once_to_each() -> None:
    """Answers to many clients, each written once: an early flush sends
    each one's answer sooner, not more often."""
    outbox, clients = Outbox(), [Recorder() for _ in range(3 * FLUSH_EVERY + 5)]
    with outbox:
        for client in clients:
            outbox.add(conn(client))
        assert sum(c.calls == ["now"] for c in clients) == 3 * FLUSH_EVERY  # the rest wait for the end
    assert all(c.calls == ["now"] for c in clients)


def test_an_early_flush_waits_until_the_connections_hold_flush_bytes() -> None:
    """48 small messages are not worth a send of their own: the batch
    writes on and looks again after ``flush_every`` more writes."""
    outbox = Outbox()
    assert outbox.flush_bytes == FLUSH_BYTES
    outbox.flush_every = 10
    a, b = Recorder(held=FLUSH_BYTES // 2 - 1), Recorder(held=0)
    with outbox:
        for _ in range(10):
            outbox.add(conn(a))
        assert a.calls == []  # 10 writes, but short of FLUSH_BYTES
        hold(a.writer, FLUSH_BYTES // 2)
        outbox.add(conn(b))
        for _ in range(8):
            outbox.add(conn(a))
        assert a.calls == b.calls == []  # 9 writes since the last look
        hold(b.writer, FLUSH_BYTES // 2)
        outbox.add(conn(a))  # the tenth: a and b together hold FLUSH_BYTES
        assert a.calls == b.calls == ["now"]
    assert a.calls == b.calls == ["now"]  # and nothing written since


def test_the_count_of_writes_starts_again_with_each_batch() -> None:
    outbox, a = Outbox(), Recorder()
    outbox.flush_every = 4
    for batch in (1, 2):
        with outbox:
            for _ in range(3):
                outbox.add(conn(a))
            assert a.calls == ["now"] * (batch - 1)  # 3 writes: below 4, in either batch
        assert a.calls == ["now"] * batch


def test_only_the_outermost_end_flushes() -> None:
    outbox, a = Outbox(), Recorder()
    with outbox:
        with outbox:
            outbox.add(conn(a))
        assert a.calls == []
    assert a.calls == ["now"]


def test_writes_made_while_flushing_go_out_in_the_same_end() -> None:
    outbox = Outbox()
    b = Recorder()
    a = Recorder(outbox, then=b)
    outbox.begin()
    outbox.add(conn(a))
    outbox.end()
    assert (a.calls, b.calls) == (["now"], ["now"])
    outbox.add(conn(b))
    assert b.calls == ["now", "soon"]  # and the batch is over


def test_a_connection_written_to_by_its_own_flush_is_flushed_again_in_the_same_end() -> None:
    """The outbox skips a connection added right after itself (the same
    upstream, request after request), but not across the end's rounds."""

    class Again(Recorder):
        def flush_now(self) -> None:
            self.calls.append("now")
            if len(self.calls) == 1:
                outbox.add(conn(self))  # its pool's queue moved on into it

    outbox, a = Outbox(), Again()
    outbox.begin()
    outbox.add(conn(a))
    outbox.add(conn(a))
    outbox.end()
    assert a.calls == ["now", "now"]
    outbox.begin()
    outbox.add(conn(a))  # a new batch: the last one's last is forgotten
    outbox.end()
    assert a.calls == ["now", "now", "now"]


def test_a_connection_that_fails_to_flush_is_closed_and_the_others_still_flushed() -> None:
    class Failing(Recorder):
        def flush_now(self) -> None:
            self.calls.append("now")
            raise ValueError("a plugin's encode_request, run by flushed()")

        def close_soon(self) -> None:
            self.calls.append("close")

    outbox, bad, good = Outbox(), Failing(), Recorder()
    outbox.begin()
    outbox.add(conn(bad))
    outbox.add(conn(good))
    outbox.end()  # does not raise into the batch's task
    assert bad.calls == ["now", "close"]
    assert good.calls == ["now"]


def test_an_extra_end_never_holds_later_writes() -> None:
    outbox, a = Outbox(), Recorder()
    outbox.end()  # e.g. a caller's finally after an end() that raised
    outbox.add(conn(a))
    assert a.calls == ["soon"]


# -- through the proxy ------------------------------------------------------------


class BigAnswer(Dispatcher):
    """Answers each line with ``SIZE`` bytes: more than the kernel buffers hold."""

    SIZE = 12_000_000

    async def serve(self) -> None:
        while True:
            await self.reader.read_until(b"\n", max_bytes=1024)
            self.writer.write(b"x" * self.SIZE + b"\r\n")
            await self.writer.flush()


async def test_a_big_answer_to_a_half_closed_client_is_not_cut_short(echo_lines: str) -> None:
    # The proxy hands the answer to the client's socket from the upstream's
    # task; asyncio's transport keeps what the kernel cannot take yet. The
    # client has half-closed, so the proxy closes the connection as soon as
    # the answer is written: that close must wait for the transport to empty
    # (within the linger time), not drop the rest (it did: 3.9 of 12 MB).
    async with serving(BigAnswer) as upstream:
        document = {
            "listeners": [
                {"name": "l", "address": "127.0.0.1:0", "protocol": echo_lines, "routes": [{"cluster": "b"}]}
            ],
            "clusters": [{"name": "b", "endpoints": [upstream.address]}],
        }
        async with running_proxy(parse_config(document)) as proxy:
            host, _, port = proxy.addresses["l"].rpartition(":")
            async with await anyio.connect_tcp(host, int(port)) as stream:
                await stream.send(b"echo:q=1\r\n")
                await stream.send_eof()
                received = 0
                with anyio.fail_after(20):
                    try:
                        while True:
                            received += len(await stream.receive(1 << 20))
                    except anyio.EndOfStream:
                        pass
    assert received == BigAnswer.SIZE + 2
