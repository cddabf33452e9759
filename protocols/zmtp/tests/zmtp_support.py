"""What the ZMTP tests share (not a test module): a ROUTER served on
127.0.0.1, pyzmq sockets for libzmq peers (blocking, so each runs in a
worker thread), and raw ZMTP peers that write the handshake by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
import zmq
from anyio.abc import SocketStream

from sota_dispatch import BufferedReader, Server, testing
from sota_zmtp import Router
from sota_zmtp.wire import encode_command

T = TypeVar("T")


TIMEOUT_MS = 10_000


@asynccontextmanager
async def serving(router: Router) -> AsyncIterator[tuple[Server, str]]:
    async with testing.serving(router.factory) as server:
        assert server.address is not None
        yield server, server.address


async def in_thread(func: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(func)


def zsocket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, address: str, **options: int | bytes) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(f"tcp://{address}")
    return sock


class RawPeer:
    """A hand-driven ZMTP peer: a TCP stream plus a reader that keeps leftovers."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedReader(stream)

    async def __aenter__(self) -> RawPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_exactly(self, size: int) -> bytes:
        with anyio.fail_after(10):
            return await self.reader.read_exactly(size)

    async def closed_by_server(self) -> bytes:
        """Read until the server closes; return what it sent."""
        data = b""
        with anyio.fail_after(10):
            while True:
                try:
                    data += await self.reader.read_some()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return data


async def connect(address: str) -> RawPeer:
    host, _, port = address.rpartition(":")
    return RawPeer(await anyio.connect_tcp(host, int(port)))


def v3_greeting(major: int = 3, minor: int = 1, mechanism: bytes = b"NULL") -> bytes:
    return b"\xff" + bytes(7) + b"\x01\x7f" + bytes((major, minor)) + mechanism.ljust(20, b"\x00") + bytes(32)


def ready(identity: bytes, socket_type: bytes = b"DEALER") -> bytes:
    data = b"\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    data += b"\x08Identity" + len(identity).to_bytes(4, "big") + identity
    return encode_command(b"READY", data)


async def handshake(stream: RawPeer, identity: bytes) -> None:
    await stream.send(v3_greeting() + ready(identity))
    await stream.receive_exactly(64 + len(ready(b"", b"ROUTER")))
