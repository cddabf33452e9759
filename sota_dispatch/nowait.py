"""Sending without waiting: the one place that reaches under anyio's streams.

anyio's ``send()`` always yields to the event loop (a checkpoint), so data
written into a connection's buffer from *another* connection's task (a
proxy forwarding a request, or handing an answer back) has to wait for
that connection's flusher task to wake and send it: two task switches per
hop, most of a proxy's added latency. When the socket can take the bytes
right now, handing them to it directly from the current task is safe and
saves both switches; when it cannot, nothing is sent and the caller falls
back to the flusher, so a slow peer still never blocks the caller.

This needs what anyio keeps private, so it is narrow and optional: a stream
it does not recognise (memory streams, TLS, wrappers) simply has no
non-blocking sender.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from anyio.abc import SocketAttribute

__all__ = ["NowaitSend", "nowait_sender"]

#: Hand ``data`` to the socket without waiting; returns how many bytes it took
#: (0 when the caller must send them the ordinary way).
NowaitSend = Callable[[bytes], int]


def nowait_sender(stream: object) -> NowaitSend | None:
    """A non-blocking send for ``stream``, or None if it has none."""
    module = type(stream).__module__
    if module == "anyio._backends._asyncio":
        return _asyncio_sender(stream)
    if module == "anyio._backends._trio":
        return _trio_sender(stream)
    return None


def _asyncio_sender(stream: Any) -> NowaitSend | None:
    transport = getattr(stream, "_transport", None)
    protocol = getattr(stream, "_protocol", None)
    if transport is None or protocol is None or not hasattr(protocol, "write_event"):
        return None

    def send(data: bytes) -> int:
        # anyio sets the transport's high-water mark to 0: its write event is
        # set only while the transport's own buffer is empty. Then write()
        # tries the socket at once and keeps at most this batch; anything
        # unusual (closing, an error) is left to the ordinary send to report.
        if (
            not protocol.write_event.is_set()
            or protocol.exception is not None
            or stream._closed
            or transport.is_closing()
        ):
            return 0
        try:
            transport.write(data)
        except (RuntimeError, OSError):  # e.g. written after send_eof(): the ordinary send raises it properly
            return 0
        return len(data)

    return send


def _trio_sender(stream: Any) -> NowaitSend | None:
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if not isinstance(raw, socket.socket):
        return None

    def send(data: bytes) -> int:
        # trio keeps no buffer of its own and its sockets are non-blocking:
        # whatever the kernel takes now is sent, in order, as trio would.
        try:
            return raw.send(data)
        except OSError:  # full (BlockingIOError) or broken: the ordinary send decides
            return 0

    return send
