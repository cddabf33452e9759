"""Messages between the processes of one proxy: JSON, with descriptors.

A message is a 4-byte big-endian length and a JSON object. Descriptors
(listening sockets, later client connections) travel with SCM_RIGHTS on the
message that names how many it carries (``"fds": n``): the kernel delivers
them with that message's first byte, so they are waiting in a queue when the
message is complete. At most :data:`MAX_FDS` ride on one message; more are
split by :meth:`Channel.send_sockets`.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import UNIXSocketStream

from ..errors import ProtocolError

__all__ = ["MAX_FDS", "MAX_MESSAGE", "Channel", "Message"]

#: Descriptors on one message (a receive takes this many at most).
MAX_FDS = 32
#: The largest message accepted (a worker's metrics text is far smaller).
MAX_MESSAGE = 64 * 1024 * 1024

Message = dict[str, Any]


class Channel:
    """A framed message stream over a connected Unix socket."""

    def __init__(self, stream: UNIXSocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        self._send_lock = anyio.Lock()

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Channel:
        """Wrap a connected Unix socket (the channel takes ownership)."""
        return cls(await UNIXSocketStream.from_socket(sock))

    @classmethod
    async def connect(cls, path: str) -> Channel:
        return cls(await anyio.connect_unix(path))

    async def send(self, message: Message, sockets: Sequence[socket.socket | int] = ()) -> None:
        """Send one message, with at most :data:`MAX_FDS` descriptors."""
        if len(sockets) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} descriptors per message")
        body = json.dumps({**message, "fds": len(sockets)}, separators=(",", ":")).encode()
        frame = len(body).to_bytes(4, "big") + body
        async with self._send_lock:
            if sockets:
                await self.stream.send_fds(frame, [s if isinstance(s, int) else s.fileno() for s in sockets])
            else:
                await self.stream.send(frame)

    async def send_sockets(self, message: Message, sockets: Sequence[socket.socket]) -> None:
        """Send ``message`` with any number of sockets: ``message`` itself
        says how many (``"sockets"``); the sockets follow it in
        ``{"type": "sockets"}`` messages of :data:`MAX_FDS` each."""
        await self.send({**message, "sockets": len(sockets)})
        for start in range(0, len(sockets), MAX_FDS):
            await self.send({"type": "sockets"}, sockets[start : start + MAX_FDS])

    async def receive(self) -> tuple[Message, list[socket.socket]]:
        """The next message and the sockets it carries.

        Raises :class:`anyio.EndOfStream` when the peer has gone, and
        :class:`~sota_dispatch.ProtocolError` for a malformed message.
        """
        while True:
            if len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if size > MAX_MESSAGE:
                    raise ProtocolError(f"control message of {size} bytes")
                if len(self._buffer) >= 4 + size:
                    body = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    try:
                        message = json.loads(body)
                    except ValueError as exc:
                        raise ProtocolError(f"control message is not JSON: {exc}") from None
                    if not isinstance(message, dict):
                        raise ProtocolError("control message is not a JSON object")
                    count = message.pop("fds", 0)
                    if not isinstance(count, int) or count > len(self._fds):
                        raise ProtocolError(f"control message names {count!r} descriptors; {len(self._fds)} came")
                    return message, [_socket(self._fds.popleft()) for _ in range(count)]
            data, fds = await self.stream.receive_fds(65536, MAX_FDS)
            self._fds.extend(fds)
            self._buffer += data

    async def receive_sockets(self, message: Message) -> list[socket.socket]:
        """The sockets announced by ``message`` (see :meth:`send_sockets`)."""
        wanted = int(message.get("sockets", 0))
        result: list[socket.socket] = []
        while len(result) < wanted:
            follow, sockets = await self.receive()
            if follow.get("type") != "sockets":
                raise ProtocolError(f"expected sockets, got {follow.get('type')!r}")
            result += sockets
        return result

    async def aclose(self) -> None:
        while self._fds:  # received but never claimed: do not leak them
            _socket(self._fds.popleft()).close()
        await self.stream.aclose()


def _socket(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)
