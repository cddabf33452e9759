"""Handing bytes to a socket without awaiting: the senders of
:func:`~sota_dispatch.io.transport.nowait_sender`.

A module of their own, compiled in the compiled build, because the writer
asks a sender whether it is busy and hands it each batch several times per
round trip: as methods of native classes these are C calls from the
compiled writer. :mod:`~sota_dispatch.io.transport` decides which stream
gets which sender (it knows anyio's private names); these only use what it
found.
"""

from __future__ import annotations

import socket
from typing import Any

from mypy_extensions import mypyc_attr

__all__ = ["AsyncioSender", "NowaitSender", "TrioSender"]


# Re-exported by io.transport: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class NowaitSender:
    """Hands bytes to one stream's socket without awaiting.

    ``send(data)`` returns how many bytes were taken (0: send them the
    ordinary way). ``busy()`` says whether bytes taken earlier still wait
    beneath us (asyncio's transport buffer): then a new batch would only be
    buffered too, and a flush is not finished until they are out, since
    closing the stream would drop them. One small object per connection
    (a served connection holds one from its first flush on).
    """

    __slots__ = ()

    def send(self, data: bytes) -> int:
        raise NotImplementedError

    def busy(self) -> bool:
        return False


class AsyncioSender(NowaitSender):
    """anyio's asyncio stream: its transport, asked directly."""

    __slots__ = ("_protocol", "_stream", "_transport")

    def __init__(self, stream: Any, transport: Any, protocol: Any) -> None:
        self._stream = stream
        self._transport = transport
        self._protocol = protocol

    def busy(self) -> bool:
        # The transport's own buffer, asked directly (a C call on uvloop and
        # asyncio alike): anyio's write event says the same (it sets the
        # high-water mark to 0, so the event is clear exactly while bytes
        # wait there), but its is_set() is a Python call, three per flush.
        waiting: int = self._transport.get_write_buffer_size()
        return waiting != 0

    def send(self, data: bytes) -> int:
        # The transport tries the socket at once and keeps at most the rest
        # of this batch; anything unusual (closing, an error) is left to the
        # ordinary send to report.
        protocol, transport = self._protocol, self._transport
        if (
            transport.get_write_buffer_size() != 0
            or protocol.exception is not None
            or self._stream._closed
            or transport.is_closing()
        ):
            return 0
        try:
            transport.write(data)
        except (RuntimeError, OSError):  # e.g. written after send_eof(): the ordinary send raises it properly
            return 0
        return len(data)


class TrioSender(NowaitSender):
    """trio keeps no buffer of its own (never busy) and its sockets are
    non-blocking: whatever the kernel takes now is sent, in order, as trio
    would. A closed socket's fd is -1 (EBADF), never another connection's."""

    __slots__ = ("_raw",)

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw

    def send(self, data: bytes) -> int:
        try:
            return self._raw.send(data)
        except OSError:  # full (BlockingIOError) or broken: the ordinary send decides
            return 0
