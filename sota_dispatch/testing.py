"""Helpers for testing a protocol: no sockets needed, every split checked.

:func:`memory_stream_pair` gives two connected in-memory byte streams that keep
chunk boundaries, so a test controls exactly what each ``receive()`` returns.
:func:`exchange` drives one dispatcher with chosen chunks and collects its
output and close reason. The ``check_*`` functions are the conformance checks
a plugin author runs (ideally under hypothesis): the same output whatever the
chunking, nothing but :class:`~sota_dispatch.ProtocolError` for garbage, and a
clean close when the peer closes between requests; :func:`check_sniff`, that
``auto`` detection picks the protocol however its first bytes arrive.
:func:`serving` and :func:`running_proxy` run a server or a whole proxy on
127.0.0.1 for the length of a block, for tests against real sockets and real
peers; :func:`running_with_backends` runs a shipped config that way, with
local backends. :func:`connect`, :func:`send_bytewise`, :func:`closed_within`
and :func:`free_port` are the small socket chores of such tests.

:class:`EchoLines` is a protocol of the smallest kind the proxy forwards,
for tests that need one and should not need a plugin installed: the core's
own tests, and a plugin's tests that need a second protocol (auto-detection
among several, a client speaking the wrong protocol). It is not installed;
register it for a test (``register_protocol("echo_lines", EchoLines)``), or
declare it in an entry point for a child process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, ClassVar

import anyio
import attrs
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config.model import EndpointConfig, ProxyConfig
from .errors import ProtocolError
from .io.address import parse_address
from .io.clock import SYSTEM_CLOCK, Clock, ManualClock
from .protocol.codec import Failure
from .protocol.context import ConnectionContext
from .protocol.dispatcher import Dispatcher
from .protocol.options import Option, OptionSchema
from .protocol.registry import DispatcherFactory, Match
from .protocol.server import Server
from .proxy.listener import auto_candidates
from .proxy.proxy import Proxy

__all__ = [
    "ManualClock",
    "ECHO_MARK",
    "EchoLines",
    "Exchange",
    "MemoryByteStream",
    "ServeProcess",
    "check_clean_shutdown",
    "check_garbage",
    "check_sniff",
    "check_split_invariance",
    "closed_within",
    "connect",
    "connect_and_reset",
    "exchange",
    "free_port",
    "memory_stream_pair",
    "running_proxy",
    "running_with_backends",
    "send_bytewise",
    "serve_process",
    "serving",
    "without_ref",
]


class MemoryByteStream(ByteStream):
    """One end of an in-memory byte pipe; see :func:`memory_stream_pair`.

    Each ``send()`` arrives as one ``receive()`` on the other end (split only
    if larger than ``max_bytes``), so tests choose the chunking.
    """

    def __init__(self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._leftover:
            self._leftover = await self._receive.receive()
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        if item:
            await self._send.send(bytes(item))

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair(max_chunks: float = 64) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected streams; each direction buffers up to ``max_chunks`` sends.

    A full direction makes ``send()`` wait, like a socket whose peer does not
    read, so backpressure can be tested too.
    """
    a_send, b_receive = anyio.create_memory_object_stream[bytes](max_chunks)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](max_chunks)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


@attrs.frozen
class Exchange:
    """What a dispatcher did with one connection's input."""

    #: Every byte the dispatcher wrote, in order.
    output: bytes
    #: The dispatcher's :attr:`~sota_dispatch.Dispatcher.close_reason`.
    close_reason: BaseException | None


async def exchange(
    factory: DispatcherFactory,
    chunks: Iterable[bytes],
    *,
    options: Mapping[str, str] | None = None,
    protocol: str = "",
    close_input: bool = True,
    timeout: float = 10.0,
) -> Exchange:
    """Run one dispatcher on an in-memory connection.

    Sends each chunk as a separate receive, then (``close_input``) closes the
    input; collects the output until the dispatcher closes the connection.
    Raises :class:`TimeoutError` if it does not finish within ``timeout``.
    """
    client, server = memory_stream_pair(max_chunks=float("inf"))
    dispatcher = factory(server, ConnectionContext(protocol=protocol, options=dict(options or {})))
    output = bytearray()

    async def collect() -> None:
        try:
            while True:
                output.extend(await client.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            tg.start_soon(collect)
            try:
                for chunk in chunks:
                    await client.send(chunk)
                if close_input:
                    await client.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the dispatcher closed early (e.g. an over-long line)
    return Exchange(bytes(output), dispatcher.close_reason)


async def check_split_invariance(
    factory: DispatcherFactory,
    data: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> bytes:
    """Assert that splitting ``data`` at any offset yields the same output.

    Returns that output. Costs one dispatcher run per byte of ``data``.
    """
    whole = await exchange(factory, [data], options=options)
    for cut in range(1, len(data)):
        split = await exchange(factory, [data[:cut], data[cut:]], options=options)
        assert split.output == whole.output, f"output differs when the input is split at offset {cut}"
        assert type(split.close_reason) is type(whole.close_reason), (
            f"close reason differs when the input is split at offset {cut}: "
            f"{split.close_reason!r} vs {whole.close_reason!r}"
        )
    return whole.output


async def check_garbage(
    factory: DispatcherFactory,
    data: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> Exchange:
    """Assert that ``data`` ends the connection in order or with a ProtocolError.

    Anything else (a ``KeyError`` from a parser, a hang) is a defect.
    """
    result = await exchange(factory, [data], options=options)
    reason = result.close_reason
    assert reason is None or isinstance(reason, ProtocolError), f"garbage raised {reason!r}, not a ProtocolError"
    return result


async def check_clean_shutdown(
    factory: DispatcherFactory,
    requests: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> Exchange:
    """Assert that complete requests followed by EOF close with no error."""
    result = await exchange(factory, [requests], options=options)
    assert result.close_reason is None, f"clean EOF closed with {result.close_reason!r}"
    return result


def check_sniff(protocol: str, data: bytes) -> int:
    """Assert that ``auto`` detection picks ``protocol`` for a connection
    that starts with ``data``, however its first bytes arrive.

    The proxy peeks one byte more each time no protocol has claimed the
    prefix, so the verdicts on every prefix decide it: among the protocols
    ``auto`` chooses from (installed or registered, proxiable, with a
    sniffer), ``protocol`` must be the only one to claim the first prefix
    anyone claims, and must ask for more until then. Returns the length of
    that prefix.
    """
    candidates = dict(auto_candidates())
    assert protocol in candidates, (
        f"{protocol!r} is not one auto chooses from ({', '.join(candidates) or 'none'}): "
        "not registered, not proxiable or without a sniffer"
    )
    for size in range(1, len(data) + 1):
        verdicts = {name: info.sniff(data[:size]) for name, info in candidates.items()}
        claimed = [name for name, verdict in verdicts.items() if verdict is Match.YES]
        if claimed:
            assert claimed == [protocol], f"the first {size} bytes are claimed by {claimed}: {verdicts}"
            return size
        # Nothing claimed yet: the right one must still be waiting for more.
        assert verdicts[protocol] is Match.NEED_MORE, f"{protocol!r} gave up after {size} bytes: {verdicts}"
    raise AssertionError(f"{protocol!r} never claimed the {len(data)} bytes")


_REF = re.compile(rb"(?:: |; )ref [0-9a-f]+\.\d+$")


def without_ref(reply: bytes) -> bytes:
    """A proxy error text without its reference (``; ref 3f9a1c.17`` or
    ``: ref 3f9a1c.17``: a random token of the client connection, and the
    request's number on it), which differs per run.

    The proxy ends every error reply it makes with one, so the client has
    something to quote and the log line carries the details.
    """
    return _REF.sub(b"", reply)


def connect_and_reset(address: str, count: int = 1) -> int:
    """Open ``count`` TCP connections to ``HOST:PORT`` and reset each at once
    (``SO_LINGER`` 0: an RST, not a FIN), as a crashing or hostile client
    does. Blocking: from async code, run it with
    :func:`anyio.to_thread.run_sync`. Returns how many connects succeeded;
    a refused one ends the storm (the server is gone or refusing).
    """
    host, _, port = address.rpartition(":")
    done = 0
    for _ in range(count):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.connect((host.strip("[]"), int(port)))
            except OSError:
                return done
            done += 1
    return done


async def connect(address: str) -> SocketStream:
    """A TCP connection to ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, port = parse_address(address)
    return await anyio.connect_tcp(host, port)


async def send_bytewise(stream: SocketStream, data: bytes) -> None:
    """Send ``data`` one byte a write, with ``TCP_NODELAY``: a segment per
    byte as far as TCP allows, the worst split a peer's sniffer and codec
    can be handed."""
    stream.extra(SocketAttribute.raw_socket).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        await stream.send(data[i : i + 1])


async def closed_within(stream: ByteStream, seconds: float) -> float:
    """Seconds until the peer closes ``stream`` (a FIN or a reset); whatever
    it sends meanwhile is read and dropped. :class:`TimeoutError` after
    ``seconds``."""
    start = anyio.current_time()
    with (
        anyio.fail_after(seconds),
        contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError),
    ):
        while True:
            await stream.receive()
    return anyio.current_time() - start


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on (bound, then closed):
    an endpoint that refuses connections, or an address to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_LISTENING = re.compile(r"listening on (\S+)")


@attrs.define
class ServeProcess:
    """A ``python -m sota_dispatch.serve`` child process, bound and listening."""

    process: subprocess.Popen[str]
    #: The bound ``HOST:PORT`` from the "listening on" line.
    address: str
    #: Every stderr line so far (kept up to date by a reader thread).
    stderr_lines: list[str]
    _arrived: queue.Queue[str | None] = attrs.field(factory=queue.Queue, repr=False)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        """Block until a stderr line containing ``text`` arrives (one not seen
        by an earlier call) and return it; :class:`TimeoutError` otherwise.
        Blocking: from async code, run it with :func:`anyio.to_thread.run_sync`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no stderr line with {text!r} within {timeout}s") from None
            if line is None:
                raise TimeoutError(f"the process exited before a line with {text!r}")
            if text in line:
                return line

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def serve_process(
    args: Sequence[str],
    *,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """Run ``python -m sota_dispatch.serve ARGS`` until it logs "listening on".

    Pass ``--listen 127.0.0.1:0`` in ``args`` for a free port. The process is
    stopped (SIGTERM, then SIGKILL) when the block ends. Raises
    :class:`RuntimeError` with its stderr if it exits or stays silent instead.
    """
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sota_dispatch.serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    assert process.stderr is not None
    lines: list[str] = []
    # One thread reads stderr from the start and hands lines over a queue:
    # select() on a text pipe misses lines already in Python's buffer.
    arrived: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_collect, args=(process.stderr, lines, arrived), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        address = None
        while address is None:
            try:
                line = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no 'listening on' line within {timeout}s: {''.join(lines)}") from None
            if line is None:
                raise RuntimeError(f"serve exited with {process.wait()}: {''.join(lines)}")
            found = _LISTENING.search(line)
            if found:
                address = found.group(1)
        yield ServeProcess(process, address, lines, arrived)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)  # the pipe is at EOF once the process is gone
        process.stderr.close()


def _collect(stream: Iterable[str], lines: list[str], arrived: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.append(line)
        arrived.put(line)
    arrived.put(None)


@asynccontextmanager
async def serving(
    factory: DispatcherFactory,
    listen: str = "127.0.0.1:0",
    *,
    options: Mapping[str, str] | None = None,
    drain_timeout: float = 2.0,
) -> AsyncIterator[Server]:
    """Serve ``factory`` for the block; ``server.address`` is the bound
    ``HOST:PORT``. Leaving the block drains (up to ``drain_timeout``)."""
    server = Server(factory, listen, options=options, drain_timeout=drain_timeout)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


@asynccontextmanager
async def running_proxy(config: ProxyConfig, *, clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[Proxy]:
    """Run a proxy for the block; ``proxy.addresses`` maps each listener's
    name to its bound ``HOST:PORT``. Leaving the block drains it. ``clock``:
    a :class:`ManualClock` lets the test move the proxy's time."""
    proxy = Proxy(config, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            proxy.shutdown()


@asynccontextmanager
async def running_with_backends(config: ProxyConfig, backends: Mapping[str, DispatcherFactory]) -> AsyncIterator[Proxy]:
    """Run ``config`` on this machine alone, whatever addresses it names:
    each listener (and the admin endpoint) on a free port of 127.0.0.1, and
    each endpoint of cluster ``name`` a local server of ``backends[name]``
    (see :func:`serving`). For running a shipped example config in a test;
    ``proxy.addresses`` maps each listener's name to its bound address."""
    async with AsyncExitStack() as stack:
        clusters = []
        for cluster in config.clusters:
            endpoints: list[EndpointConfig] = []
            for endpoint in cluster.endpoints:
                server = await stack.enter_async_context(serving(backends[cluster.name]))
                assert server.address is not None
                endpoints.append(attrs.evolve(endpoint, address=server.address))
            clusters.append(attrs.evolve(cluster, endpoints=tuple(endpoints)))
        listeners = tuple(attrs.evolve(listener, address="127.0.0.1:0") for listener in config.listeners)
        admin = None if config.admin is None else attrs.evolve(config.admin, address="127.0.0.1:0")
        local = attrs.evolve(config, listeners=listeners, clusters=tuple(clusters), admin=admin)
        yield await stack.enter_async_context(running_proxy(local))


#: What every :class:`EchoLines` request line starts with (its sniffer's mark).
ECHO_MARK = b"echo:"
_DEFAULT_MAX_LINE = 65536


class EchoLines(Dispatcher):
    """Lines that start with echo:, each answered with itself (a test protocol).

    A line has no id: upstream connections are pipelined, and a client's
    answers are written in the order of its requests (``ordered``). On the
    server side, bytes that cannot start an ``echo:`` line end the
    connection with a :class:`~sota_dispatch.ProtocolError` as soon as they
    arrive, as a service does with a client of another protocol. The
    proxy's error replies are ``error:`` lines; routes can match the
    ``echo`` attribute, the text after the mark. Option ``max_line``.
    """

    protocol_name: ClassVar[str] = "echo_lines"
    options: ClassVar[OptionSchema] = OptionSchema(
        max_line=Option(f"longest line in bytes (default {_DEFAULT_MAX_LINE})", Option.positive_int)
    )
    pool_mode = "pipeline"
    pool_modes = frozenset({"pipeline", "exclusive"})
    ordered = True

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        head = prefix[: len(ECHO_MARK)]
        if not ECHO_MARK.startswith(head):
            return Match.NO
        return Match.YES if head == ECHO_MARK else Match.NEED_MORE

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> _EchoCodec:
        return _EchoCodec(options.get("max_line") or min(_DEFAULT_MAX_LINE, max_frame_size), marked=True)

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> _EchoCodec:
        return _EchoCodec(max_frame_size, marked=False)  # answers: any line

    @classmethod
    def encode_request(cls, frame: bytes, upstream_id: int) -> bytes:
        return frame

    @classmethod
    def encode_response(cls, response: bytes, request: bytes) -> bytes:
        return response

    @classmethod
    def routing_attributes(cls, frame: bytes) -> Mapping[str, str]:
        return {"echo": frame[len(ECHO_MARK) :].rstrip(b"\r\n").decode(errors="replace")}

    @classmethod
    def error_reply(cls, request: bytes, failure: Failure, detail: str = "") -> bytes:
        return f"error:{failure.value}{': ' + detail if detail else ''}\n".encode()

    def on_request(self, frame: bytes) -> bytes:
        return frame


class _EchoCodec:
    """:class:`EchoLines`' codec: each frame is a line, its ``\\n`` included."""

    ready = True

    def __init__(self, max_line: int, *, marked: bool) -> None:
        self.max_line = max_line
        self.marked = marked  # every line must start with ECHO_MARK
        self._buffer = bytearray()
        self._scanned = 0  # no line end in the buffer before this offset
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self.check()
        buffer = self._buffer
        buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", max(start, self._scanned))) >= 0:
            lines.append(bytes(buffer[start : end + 1]))
            start = end + 1
        del buffer[:start]
        self._scanned = len(buffer)
        for i, line in enumerate([*lines, bytes(buffer[: len(ECHO_MARK)])]):
            size = len(line) - 1 if i < len(lines) else len(buffer)
            if size > self.max_line + 1 or (self.marked and EchoLines.sniff(line) is Match.NO):
                # The lines before it first; check() raises next.
                self._error = ProtocolError(f"not an echo line of at most {self.max_line} bytes: {line[:16]!r}")
                del buffer[:]
                return lines[:i]
        return lines

    def data_to_send(self) -> bytes:
        return b""

    def check(self) -> None:
        if self._error is not None:
            raise self._error
