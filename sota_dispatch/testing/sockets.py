"""The small socket chores of tests on 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream

from ..io.address import parse_address

__all__ = [
    "closed_within",
    "connect",
    "connect_and_reset",
    "free_port",
    "send_bytewise",
    "tcp_stream_pair",
    "without_ref",
]


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


@contextlib.asynccontextmanager
async def tcp_stream_pair() -> AsyncIterator[tuple[SocketStream, SocketStream]]:
    """The two ends of one real TCP connection on 127.0.0.1 (the connecting
    end first), closed when the block ends: for tests of what a stream of
    the running event loop does (its read-ahead, its chunks, its send
    buffer), which memory streams cannot show."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        accepted: list[SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.listeners[0].accept())  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            near = await anyio.connect_tcp("127.0.0.1", port)
        async with near, accepted[0] as far:
            yield near, far


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
