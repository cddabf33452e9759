"""What an idle connection holds: one task, no flusher, no send lock.

A proxy in front of long-lived clients holds many connections that send
nothing for minutes. Each costs what it allocates up front, so the
dispatcher starts its flusher task, the writer's lock and its non-blocking
sender on first use (bench/idle_bench.py measures the RSS). These tests
hold the first part to account on every backend, and check that a
connection which then does need its flusher (a reply deferred behind
pipelined input) still gets every answer.
"""

from __future__ import annotations

import contextlib

import anyio
import pytest

from sota_dispatch import Dispatcher, Server
from sota_dispatch.testing import connect

pytestmark = pytest.mark.anyio

IDLE = 20


class LineEcho(Dispatcher):
    """Echoes each line; a reply waits while more input is buffered
    (``writer.send`` defers it to the flusher)."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\n", max_bytes=1024)
            await self.writer.send(line + b"\n")


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
