from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import ByteStream

from sota_dispatch import (
    ConnectionContext,
    ConnectionLost,
    Dispatcher,
    IncompleteReadError,
    LimitExceeded,
    ProtocolError,
    Server,
)
from sota_dispatch.testing import exchange, memory_stream_pair

pytestmark = pytest.mark.anyio

events: list[str] = []


class Recorder(Dispatcher):
    """Echo lines; 'boom' is a bug, 'bad' a protocol error, 'help' starts a failing helper."""

    protocol_name = "recorder"

    async def on_connect(self) -> None:
        events.append("connect")

    async def serve(self) -> None:
        events.append("serve")
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=64)
            if line == b"boom":
                raise ZeroDivisionError("a bug in serve")
            if line == b"bad":
                raise ProtocolError("bad line")
            if line == b"help":
                self.start_soon(self._failing_helper)
            await self.writer.send(line + b"\n")

    async def _failing_helper(self) -> None:
        raise RuntimeError("helper failed")

    async def on_close(self, reason: BaseException | None) -> None:
        events.append(f"close:{type(reason).__name__}")


@pytest.fixture(autouse=True)
def _reset_events() -> None:
    events.clear()


async def test_lifecycle_on_clean_eof() -> None:
    result = await exchange(Recorder, [b"a\nb\n"])
    assert result.output == b"a\nb\n"
    assert result.close_reason is None
    assert events == ["connect", "serve", "close:NoneType"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [(b"bad\n", ProtocolError), (b"boom\n", ZeroDivisionError), (b"help\n", RuntimeError), (b"x" * 100, LimitExceeded)],
)
async def test_errors_end_only_the_connection_with_a_reason(line: bytes, reason: type[BaseException]) -> None:
    result = await exchange(Recorder, [b"ok\n" + line])
    assert isinstance(result.close_reason, reason)
    if line != b"help\n":  # a failing helper cancels serve(), perhaps mid-send
        assert result.output.startswith(b"ok\n")
    assert events[-1] == f"close:{reason.__name__}"


async def test_eof_mid_line_is_an_incomplete_read() -> None:
    result = await exchange(Recorder, [b"ok\npart"])
    assert isinstance(result.close_reason, IncompleteReadError)
    assert result.close_reason.partial == b"part"


async def test_bug_is_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="sota_dispatch"):
        await exchange(Recorder, [b"boom\n"])
    assert any(r.exc_info and "dispatcher" in r.getMessage() for r in caplog.records)


@asynccontextmanager
async def running(server: Server) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            yield address
        finally:
            server.shutdown()


async def talk(address: str, data: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        try:
            await stream.send(data)
            await stream.send_eof()
        except (anyio.BrokenResourceError, OSError):
            pass  # the server may close first (e.g. on an over-long line)
        out = b""
        with anyio.fail_after(10):
            while True:
                try:
                    out += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return out


async def test_failing_connection_never_reaches_listener_or_other_connections() -> None:
    server = Server(Recorder, "127.0.0.1:0")
    async with running(server) as address:
        host, _, port = address.rpartition(":")
        async with await anyio.connect_tcp(host, int(port)) as healthy:
            await healthy.send(b"first\n")
            with anyio.fail_after(5):
                assert await healthy.receive() == b"first\n"
            for poison in (b"boom\n", b"bad\n", b"help\n", b"y" * 200, b"\xff" * 70000):
                await talk(address, poison)
            await healthy.send(b"still here\n")
            with anyio.fail_after(5):
                assert await healthy.receive() == b"still here\n"
        assert await talk(address, b"new\n") == b"new\n"


async def test_factory_error_loses_only_that_connection() -> None:
    calls = 0

    def flaky(stream: ByteStream, context: ConnectionContext) -> Dispatcher:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("factory broke")
        return Recorder(stream, context)

    server = Server(flaky, "127.0.0.1:0")
    async with running(server) as address:
        assert await talk(address, b"a\n") == b""
        assert await talk(address, b"b\n") == b"b\n"


class Slow(Dispatcher):
    """Holds each request until released, to test draining."""

    started: anyio.Event
    release: anyio.Event

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=64)
            self.started.set()
            await self.release.wait()
            await self.writer.send(line + b" done\n")


async def test_shutdown_drains_in_flight_request_then_closes() -> None:
    started, release = anyio.Event(), anyio.Event()

    def factory(stream: ByteStream, context: ConnectionContext) -> Slow:
        d = Slow(stream, context)
        d.started, d.release = started, release
        return d

    server = Server(factory, "127.0.0.1:0", drain_timeout=10)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        host, _, port = address.rpartition(":")
        idle = await anyio.connect_tcp(host, int(port))
        busy = await anyio.connect_tcp(host, int(port))
        await busy.send(b"work\n")
        with anyio.fail_after(5):
            await started.wait()
        server.shutdown()
        with anyio.fail_after(5):
            # The idle connection is closed at once...
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await idle.receive()
        # ...while the busy one gets its answer before the close.
        release.set()
        with anyio.fail_after(5):
            assert await busy.receive() == b"work done\n"
            with pytest.raises(anyio.EndOfStream):
                await busy.receive()
        await idle.aclose()
        await busy.aclose()
    with pytest.raises(OSError, match=r"(?i)connect"):  # the listener is gone
        await anyio.connect_tcp(host, int(port))


async def test_dispatcher_stops_reading_when_peer_does_not_read() -> None:
    client, server = memory_stream_pair(max_chunks=4)
    dispatcher = Recorder(server)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        for _ in range(10_000):
            await client.send(b"z" * 60 + b"\n")
            sent += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run)
        tg.start_soon(flood)
        await anyio.wait_all_tasks_blocked()
        # Output is not read: the dispatcher blocked on its flush, so input
        # stopped being consumed after a bounded amount.
        assert sent < 100
        assert dispatcher.writer.pending <= dispatcher.write_high_water + 64
        tg.cancel_scope.cancel()


# -- client role ---------------------------------------------------------------


class Upper(Dispatcher):
    """Server: 'id:text' lines answered as 'id:TEXT', in reverse order per batch."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            batch = [line]
            while self.reader.buffered:
                batch.append(await self.reader.read_until(b"\n", max_bytes=1024))
            for item in reversed(batch):
                stream_id, _, text = item.partition(b":")
                self.writer.write(stream_id + b":" + text.upper() + b"\n")


class UpperClient(Dispatcher):
    """Client: multiplexes calls on one connection, matching answers by id."""

    id_bits = 16

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            stream_id, _, text = line.partition(b":")
            self.streams.complete(int(stream_id), text)

    async def call(self, text: bytes) -> bytes:
        pending = self.streams.open(timeout=10)
        await self.writer.send(b"%d:%s\n" % (pending.stream_id, text))
        result: bytes = await pending.result()
        return result


async def test_client_role_multiplexes_many_calls_on_one_connection() -> None:
    server = Server(Upper, "127.0.0.1:0")
    async with running(server) as address:
        results: dict[int, bytes] = {}
        async with await UpperClient.connect(address) as client:
            assert client.context.role == "client"
            assert client.context.remote_address == address

            async def one(i: int) -> None:
                results[i] = await client.call(b"msg%d" % i)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for i in range(300):
                        tg.start_soon(one, i)
        assert results == {i: b"MSG%d" % i for i in range(300)}
        assert client.streams.unmatched == 0
        assert server.connections_total == 1


async def test_connection_loss_fails_pending_calls() -> None:
    class Mute(Dispatcher):
        async def serve(self) -> None:
            await self.reader.read_until(b"\n", max_bytes=64)  # then close without answering

    server = Server(Mute, "127.0.0.1:0")
    async with running(server) as address, await UpperClient.connect(address) as client:
        with anyio.fail_after(10), pytest.raises(ConnectionLost):
            await client.call(b"anyone?")
        with pytest.raises(ConnectionLost):
            client.streams.open()


async def test_connect_refused_is_an_os_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(OSError, match=r"(?i)connect"):
        await UpperClient.connect(f"127.0.0.1:{port}")


def test_serve_must_be_implemented() -> None:
    async def main() -> BaseException | None:
        _, server = memory_stream_pair()
        dispatcher = Dispatcher(server)
        await dispatcher.run()
        return dispatcher.close_reason

    assert isinstance(anyio.run(main), NotImplementedError)


# -- closing edge cases ------------------------------------------------------------


async def test_cancelled_client_block_exits_cleanly() -> None:
    server = Server(Upper, "127.0.0.1:0")
    async with running(server) as address:
        with anyio.move_on_after(0.05) as scope:
            async with await UpperClient.connect(address) as client:
                await client.call(b"first")
                await anyio.sleep_forever()  # cancelled by the scope
        assert scope.cancelled_caught
        # The task's cancel scopes are intact: more work in this task is fine.
        async with await UpperClient.connect(address) as client:
            assert await client.call(b"again") == b"AGAIN"


async def test_drain_of_a_busy_connection_loses_no_reply() -> None:
    class Echo(Dispatcher):
        async def serve(self) -> None:
            while True:
                line = await self.reader.read_until(b"\n", max_bytes=1024)
                self.writer.write(line + b"\n")

    server = Server(Echo, "127.0.0.1:0", drain_timeout=10)
    line = b"y" * 99 + b"\n"
    async with anyio.create_task_group() as tg:
        host, _, port = (await tg.start(server.serve)).rpartition(":")
        stream = await anyio.connect_tcp(host, int(port))
        sent = 0

        async def flood() -> None:
            nonlocal sent
            with anyio.move_on_after(10):  # until the server stops reading
                try:
                    while sent < 200_000:
                        await stream.send(line * 100)
                        sent += 100
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass

        tg.start_soon(flood)
        # Let the kernel buffers fill with unread replies, then drain.
        with anyio.fail_after(10):
            while sent < 20_000:
                await anyio.lowlevel.checkpoint()
        server.shutdown()
        received = b""
        with anyio.fail_after(20):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    break
        tg.cancel_scope.cancel()
        await stream.aclose()
    assert len(received) % len(line) == 0
    assert received == line * (len(received) // len(line))
    assert len(received) >= 20_000 * len(line) // 2


async def test_aclose_from_on_close_does_not_hang() -> None:
    class SelfClosing(Dispatcher):
        async def serve(self) -> None:
            await self.reader.read_exactly(1)

        async def on_close(self, reason: BaseException | None) -> None:
            await self.aclose()

    with anyio.fail_after(5):
        result = await exchange(SelfClosing, [b"x"])
    assert result.close_reason is None


async def test_a_deferred_reply_is_not_cut_when_serve_fails() -> None:
    big = b"z" * 8_000_000

    class BigThenFail(Dispatcher):
        write_high_water = 64 * 1024 * 1024  # the reply goes to the flusher

        async def serve(self) -> None:
            await self.reader.read_until(b"\n", max_bytes=10)
            await self.writer.send(big)  # deferred: more input is buffered
            await anyio.lowlevel.checkpoint()  # the flusher starts sending
            raise ProtocolError("then the connection fails")

    server = Server(BigThenFail, "127.0.0.1:0")
    async with running(server) as address:
        got = await talk(address, b"a\nb\n")
    assert got == big


class Fatal(BaseException):
    """Not an Exception: like KeyboardInterrupt, it must not be swallowed."""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_base_exceptions_are_not_swallowed(backend: str) -> None:
    class Dies(Dispatcher):
        async def serve(self) -> None:
            raise Fatal

    async def main() -> Dies:
        _, server = memory_stream_pair()
        dispatcher = Dies(server)
        try:
            await dispatcher.run()
        except Fatal:
            return dispatcher
        raise AssertionError("run() swallowed a BaseException")

    assert isinstance(anyio.run(main, backend=backend).close_reason, Fatal)


async def test_failed_streams_do_not_grow_tracebacks() -> None:
    import traceback

    from sota_dispatch import StreamMultiplexer

    mux: StreamMultiplexer[bytes] = StreamMultiplexer()
    mux.close(ConnectionLost(None))
    depths = []
    for _ in range(200):
        try:
            mux.open()
        except ConnectionLost as exc:
            depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert max(depths) == min(depths)
