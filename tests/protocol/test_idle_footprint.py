"""What an idle connection holds: one task once it has spoken, none before.

A proxy in front of long-lived clients holds many connections that send
nothing for minutes. Each costs what it allocates up front, so the
dispatcher starts its flusher task, the writer's lock and its non-blocking
sender on first use, and a listener whose clients speak first holds a
connection that has not spoken yet as a bare socket (bench/idle_bench.py
measures the RSS). These tests hold that to account on every backend,
check that such connections are still served, counted, timed out and
closed as the others, and attack the wait (resets, floods past the limit).
"""

from __future__ import annotations

import contextlib
import socket
import struct

import anyio
import pytest
import sniffio

from sota_dispatch import Dispatcher, ReadTimeouts, Server
from sota_dispatch.testing import closed_within, connect

pytestmark = pytest.mark.anyio

IDLE = 20


class LineEcho(Dispatcher):
    """Echoes each line; a reply waits while more input is buffered
    (``writer.send`` defers it to the flusher)."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            await self.writer.send(line + b"\n")


async def _echo(address: str, line: bytes = b"probe\n") -> None:
    """One round trip on a new connection: every connection opened before
    it has been accepted by then (the kernel hands them over in order)."""
    async with await connect(address) as probe:
        await probe.send(line)
        with anyio.fail_after(5):
            assert await probe.receive() == line


def _tasks_per_waiting() -> int:
    """asyncio waits with a reader callback; trio with a small task each."""
    return 0 if sniffio.current_async_library() == "asyncio" else 1


async def test_a_silent_connection_waits_without_a_task_and_is_served_when_it_speaks() -> None:
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, wait_for_first_bytes=True)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await _echo(address)
                await anyio.wait_all_tasks_blocked()
                before = len(anyio.get_running_tasks())
                silent = [await stack.enter_async_context(await connect(address)) for _ in range(IDLE)]
                await _echo(address)
                await anyio.wait_all_tasks_blocked()
                # The second probe's connection may still be closing (one task).
                assert server.waiting_connections == IDLE
                assert server.active_connections <= 1
                extra = len(anyio.get_running_tasks()) - before
                assert IDLE * _tasks_per_waiting() <= extra <= IDLE * _tasks_per_waiting() + 1
                for client in silent:
                    await client.send(b"late\n")
                    with anyio.fail_after(5):
                        assert await client.receive() == b"late\n"
                assert (server.waiting_connections, server.active_connections) == (0, IDLE)
        finally:
            server.shutdown()


async def test_waiting_connections_count_against_the_limit_and_close_at_shutdown() -> None:
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, max_connections=3, wait_for_first_bytes=True)
    async with anyio.create_task_group() as tg, contextlib.AsyncExitStack() as stack:
        address = await tg.start(server.serve)
        silent = [await stack.enter_async_context(await connect(address)) for _ in range(3)]
        async with await connect(address) as fourth:  # over the limit: closed at once, unread
            assert await closed_within(fourth, 5) < 1
        assert (server.waiting_connections, server.connections_refused) == (3, 1)
        server.shutdown()
        for client in silent:  # they owe nothing: closed at once, not after a drain
            assert await closed_within(client, 5) < 1
        assert server.first_byte_timeouts == 0


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a RST, not a FIN


async def test_peers_that_reset_while_waiting_cost_only_themselves() -> None:
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, wait_for_first_bytes=True)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        host, port = address.rsplit(":", 1)
        try:
            early = socket.create_connection((host, int(port)))
            _reset(early)  # before the accept, maybe
            waiting = [socket.create_connection((host, int(port))) for _ in range(IDLE)]
            await _echo(address)
            for sock in waiting:  # while waiting for their first bytes
                _reset(sock)
            await _echo(address)  # the server is fine, and has let them go
            await _echo(address)
            assert server.waiting_connections == 0
        finally:
            server.shutdown()


async def test_a_silent_connection_is_closed_at_the_first_byte_deadline_others_go_on() -> None:
    timeouts = ReadTimeouts(frame=0.3, idle=30)
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, timeouts=timeouts, wait_for_first_bytes=True)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            async with await connect(address) as silent, await connect(address) as talker:
                await talker.send(b"hi\n")
                assert await talker.receive() == b"hi\n"
                assert 0.2 < await closed_within(silent, 5) < 2
                assert server.first_byte_timeouts == 1
                await talker.send(b"still\n")  # a served connection has its own timeouts
                assert await talker.receive() == b"still\n"
        finally:
            server.shutdown()


async def test_a_first_byte_timeout_set_while_serving_applies_to_later_connections() -> None:
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, timeouts=None, wait_for_first_bytes=True)
    assert server.first_bytes_timeout is None  # none at the start (a reload may set one)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            server.first_bytes_timeout = 0.3
            async with await connect(address) as silent:
                assert 0.2 < await closed_within(silent, 5) < 2
            assert server.first_byte_timeouts == 1
        finally:
            server.shutdown()


class Banner(LineEcho):
    """Greets first: its clients wait for the banner before they send."""

    speaks_first = True

    async def on_connect(self) -> None:
        await self.writer.send(b"hello\n")


async def test_a_protocol_that_speaks_first_greets_a_silent_client_at_once() -> None:
    server = Server(Banner, "127.0.0.1:0", drain_timeout=1)
    assert not server.wait_for_first_bytes
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            async with await connect(address) as client:
                with anyio.fail_after(5):
                    assert await client.receive() == b"hello\n"
        finally:
            server.shutdown()


async def test_an_idle_connection_costs_one_task_and_a_busy_one_still_gets_its_flusher() -> None:
    server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await anyio.wait_all_tasks_blocked()
                before = len(anyio.get_running_tasks())
                clients = [await stack.enter_async_context(await connect(address)) for _ in range(IDLE)]
                for client in clients:  # served (one answer each, sent at once), then idle
                    await client.send(b"hi\n")
                    with anyio.fail_after(5):
                        assert await client.receive() == b"hi\n"
                await anyio.wait_all_tasks_blocked()
                assert server.active_connections == IDLE
                idle_tasks = len(anyio.get_running_tasks()) - before
                # One task per connection (it reads); no flusher: nothing was deferred.
                assert idle_tasks == IDLE, f"{idle_tasks} tasks for {IDLE} idle connections"
                for client in clients:  # two lines at once: the first reply is deferred
                    await client.send(b"one\ntwo\n")
                for client in clients:
                    received = b""
                    with anyio.fail_after(5):
                        while received != b"one\ntwo\n":
                            received += await client.receive()
                await anyio.wait_all_tasks_blocked()
                # Each deferred reply started its connection's flusher, which stays.
                assert len(anyio.get_running_tasks()) - before == 2 * IDLE
        finally:
            server.shutdown()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_server_under_plain_asyncio_run_serves_a_connection_from_the_doorstep(loop: str) -> None:
    """Embedded in an asyncio application (``asyncio.run``, not
    ``anyio.run``): the doorstep's reader callback runs outside any task,
    where anyio cannot tell the library from the current task; it failed
    there, and the connection was never served."""
    import asyncio

    async def main() -> bytes:
        server = Server(LineEcho, "127.0.0.1:0", drain_timeout=1, wait_for_first_bytes=True)
        async with anyio.create_task_group() as tg:
            address = await tg.start(server.serve)
            host, _, port = address.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"hello\n")
            answer = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            server.shutdown()
        return answer

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(main()) == b"hello\n"
    else:
        assert asyncio.run(main()) == b"hello\n"
