"""What the simple_line proxy tests share (not a test module).

The backends are tagged line services: each answers ``<tag>:<line>``, so a
reply says which backend served it; ``hold=1`` makes a backend wait for a
test's signal before answering, ``close=1`` makes it drop the connection.
:func:`config` is a proxy config with one simple_line listener and one
cluster; :class:`Client` speaks lines to it. :func:`curl` and
:func:`admin_of` ask a proxy process's admin endpoint; :func:`until` waits
for state nothing signals.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream

from sota_dispatch import BufferedReader, ConnectionContext, Dispatcher
from sota_dispatch.config import parse_config
from sota_dispatch.io.clock import SYSTEM_CLOCK, Clock
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import ServeProcess, connect, running_proxy, serving


class TaggedBackend(Dispatcher):
    """Answers each line with ``<tag>:<line>``, in order; records every line
    as it arrives, even while an answer is held back."""

    def __init__(self, stream: ByteStream, context: ConnectionContext, *, backend: Backend) -> None:
        super().__init__(stream, context)
        self.backend = backend

    async def serve(self) -> None:
        backend = self.backend
        send, receive = anyio.create_memory_object_stream[bytes](10_000)
        self.start_soon(self._answer, receive)
        try:
            async with send:
                while True:
                    line = (await self.reader.read_until(b"\n", max_bytes=65536)).rstrip(b"\r")
                    backend.seen.append(line)
                    backend.arrived.set()
                    if b"close=1" in line or backend.failing:
                        return
                    await send.send(line)
        finally:
            backend.closed += 1
            backend.arrived.set()

    async def _answer(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        async with receive:
            async for line in receive:
                if b"hold=1" in line:
                    await self.backend.release.wait()
                self.writer.write(self.backend.tag + b":" + line + b"\r\n")
                self.flush_soon()


class Backend:
    def __init__(self, tag: str) -> None:
        self.tag = tag.encode()
        self.seen: list[bytes] = []
        self.arrived = anyio.Event()
        self.release = anyio.Event()
        self.connections = 0
        #: Connections that ended (the proxy closed them, or the backend did).
        self.closed = 0
        self.dispatchers: list[TaggedBackend] = []
        #: While True, every request makes it drop the connection.
        self.failing = False

    def factory(self, stream: ByteStream, context: ConnectionContext) -> TaggedBackend:
        self.connections += 1
        dispatcher = TaggedBackend(stream, context, backend=self)
        self.dispatchers.append(dispatcher)
        return dispatcher

    def reset_all(self) -> None:
        """Drop every connection at once, answering nothing (a crash, as the proxy sees it)."""
        for dispatcher in self.dispatchers:
            dispatcher.abort()

    async def wait_seen(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.seen) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()

    async def wait_closed(self, count: int) -> None:
        """Until ``count`` of its connections have ended."""
        with anyio.fail_after(10):
            while self.closed < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


@asynccontextmanager
async def backends(*tags: str) -> AsyncIterator[list[tuple[Backend, str]]]:
    async with AsyncExitStack() as stack:
        result = []
        for tag in tags:
            backend = Backend(tag)
            server = await stack.enter_async_context(serving(backend.factory, drain_timeout=0.5))
            assert server.address is not None
            result.append((backend, server.address))
        yield result
        for backend, _ in result:
            backend.release.set()


def config(
    endpoints: list[Any], *, lb: str = "round_robin", route: dict[str, Any] | None = None, **cluster: Any
) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "lines",
                "address": "127.0.0.1:0",
                "protocol": "simple_line",
                "routes": [{"cluster": "backends", **(route or {})}],
            }
        ],
        "clusters": [{"name": "backends", "endpoints": endpoints, "lb": lb, **cluster}],
    }


@asynccontextmanager
async def proxy_for(document: dict[str, Any], clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[Proxy]:
    async with running_proxy(parse_config(document), clock=clock) as proxy:
        yield proxy


class Client:
    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedReader(stream)

    async def send(self, *lines: bytes) -> None:
        await self.stream.send(b"".join(line + b"\r\n" for line in lines))

    async def replies(self, count: int, timeout: float = 10) -> list[bytes]:
        with anyio.fail_after(timeout):
            return [await self.reader.read_until(b"\r\n", max_bytes=1 << 20) for _ in range(count)]

    async def call(self, *lines: bytes) -> list[bytes]:
        await self.send(*lines)
        return await self.replies(len(lines))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, at most ``timeout`` seconds: for
    state the proxy reaches on its own (a request queued, a parking sweep,
    a health verdict) that no event marks, so this polls."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - no event to wait on, by design
            await anyio.sleep(0.005)


@asynccontextmanager
async def client(proxy: Proxy, listener: str = "lines") -> AsyncIterator[Client]:
    stream = await connect(proxy.addresses[listener])
    async with stream:
        yield Client(stream)


def tags(replies: list[bytes]) -> list[bytes]:
    return [reply.partition(b":")[0] for reply in replies]


async def curl(url: str, *options: str) -> tuple[int, str]:
    """``curl`` the URL: (HTTP status, body)."""
    done = await anyio.run_process(
        ["curl", "-s", "-S", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *options, url], check=True
    )
    body, _, status = done.stdout.decode().rpartition("\n")
    return int(status), body


async def admin_of(proc: ServeProcess) -> str:
    line = await anyio.to_thread.run_sync(proc.wait_for_line, "admin endpoint on", 20)
    found = re.search(r"http://(\S+)/", line)
    assert found is not None, line
    return f"http://{found.group(1)}"
