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
non-blocking sender. The same holds for the input side here (what a stream
read ahead, its read timeouts' alarm, trio's ready input, handing a socket
over) and in :mod:`sota_dispatch.io.paced` (asyncio's read-ahead, paced).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import BrokenResourceError
from anyio.abc import SocketAttribute

from .paced import FAIR_SHARE, FAIR_SLICE, FairSlice, ReadyInput, inline_input, prepare_input, queued_input
from .senders import AsyncioSender, NowaitSender, TrioSender
from .timeouts import InputAlarm

__all__ = [
    "FAIR_SHARE",
    "FAIR_SLICE",
    "NowaitSender",
    "ReadyInput",
    "detach_socket",
    "detachable",
    "discard_input",
    "inline_input",
    "input_alarm",
    "input_queued",
    "nowait_sender",
    "pause_reading",
    "prepare_input",
    "ready_input",
]


def input_queued(stream: object) -> Callable[[], int] | None:
    """A function telling how many bytes ``stream`` read from its socket
    ahead of us (None: it keeps none, or is not a stream we know).

    anyio's asyncio streams resume reading for each ``receive()``; until the
    task runs again, the loop may read more: uvloop reads up to 32 chunks
    per wake-up, so a fast client got megabytes queued per connection,
    memory the buffer budget has to count.
    """
    if type(stream).__module__ != "anyio._backends._asyncio":
        return None  # trio reads only what receive() asks for
    protocol: Any = getattr(stream, "_protocol", None)
    queue = getattr(protocol, "read_queue", None)
    if queue is None or not hasattr(queue, "__iter__"):
        return None

    def queued() -> int:
        return sum(map(len, queue)) if queue else 0

    return queued


def input_alarm(stream: object) -> InputAlarm | None:
    """An :class:`~sota_dispatch.io.timeouts.InputAlarm` for ``stream``'s
    waits, or None where a wait can only be ended by a cancel scope.

    anyio's asyncio ``SocketStream`` waits in ``receive()`` on its
    protocol's read event; set with nothing queued, the receive ends as at
    the end of input (``EndOfStream``), which is how a timed-out or
    interrupted wait ends anyway. Called from a running asyncio loop.
    """
    kind = type(stream)
    if kind.__module__ != "anyio._backends._asyncio" or kind.__name__ != "SocketStream":
        return None
    protocol: Any = getattr(stream, "_protocol", None)
    event = getattr(protocol, "read_event", None)
    if not isinstance(event, asyncio.Event) or not hasattr(protocol, "read_queue"):
        return None  # another anyio's internals: the scope
    return InputAlarm(asyncio.get_running_loop().call_at, event.set)


def ready_input(stream: object) -> ReadyInput | None:
    """How to take input from ``stream``'s socket straight, or None where
    it cannot be done (TLS, memory streams, wrappers, an asyncio stream
    :func:`prepare_input` did not pace). An asyncio stream's input is taken
    from its queue (:func:`~sota_dispatch.io.paced.queued_input`); what
    follows is trio's.

    The first function takes up to ``max_bytes`` when the socket has input
    now, and returns None when it would have to wait, at the end of input
    or on a closed socket. The second waits for input (cancellably: the
    reader's scope around it bounds the wait), then takes it; at the end
    of input, on a closed socket, or after readiness that finds nothing
    three times, it leaves the rest to the stream's own ``receive()``,
    which reports the end or the closing as always. A receive that does
    not wait needs no cancel scope for its deadline; that scope and anyio's
    and trio's layers around the socket's ``recv`` cost a trio broker a
    tenth of its CPU, and trio's receive, after a take that found nothing,
    would try the socket once more before it waits.

    A cancelled task is stopped before anything is taken, as by trio's own
    receive. trio's receive also yields to the scheduler after every
    chunk; this one yields once per :data:`FAIR_SLICE` of input taken
    without a wait (a wait yields anyway), as an event loop lets one
    connection handle what one wake-up read before it turns to the next
    (Envoy reads up to a connection's buffer limit per event). Yielding
    every chunk cost the broker another tenth of its CPU. A reset (any
    other socket error) is :class:`anyio.BrokenResourceError`, as from the
    ordinary receive.
    """
    if type(stream).__module__ == "anyio._backends._asyncio":
        return queued_input(stream)
    if type(stream).__module__ != "anyio._backends._trio" or not hasattr(stream, "extra"):
        return None
    raw = getattr(stream, "extra")(SocketAttribute.raw_socket, None)  # noqa: B009 - any anyio stream
    trio = sys.modules.get("trio")  # running, so imported
    lowlevel = getattr(trio, "lowlevel", None)
    closed: type[Exception] | None = getattr(trio, "ClosedResourceError", None)
    if not isinstance(raw, socket.socket) or lowlevel is None or closed is None:
        return None
    checkpoint_if_cancelled = lowlevel.checkpoint_if_cancelled
    fair = FairSlice(lowlevel.cancel_shielded_checkpoint)
    wait_readable = lowlevel.wait_readable
    recv = raw.recv
    ordinary: Callable[[int], Awaitable[bytes]] = getattr(stream, "receive")  # noqa: B009

    def take(max_bytes: int) -> bytes | None:
        try:
            return recv(max_bytes) or None  # b"": the end stays there for the ordinary receive
        except BlockingIOError:
            return None
        except OSError as exc:
            if raw.fileno() < 0:
                return None  # closed here: the ordinary receive says so
            raise BrokenResourceError from exc

    async def take_ready(max_bytes: int) -> bytes | None:
        await checkpoint_if_cancelled()
        data = take(max_bytes)
        if data is None:
            fair.waited()
            return None
        await fair.took()
        return data

    async def wait_and_take(max_bytes: int) -> bytes:
        # Readable yet nothing taken: rare, or the end of input (readable
        # at once); a few rounds, then the ordinary receive says which.
        for _ in range(3):
            if raw.fileno() < 0:
                break  # closed: the ordinary receive says so
            try:
                await wait_readable(raw)
            except closed:  # closed while waiting
                break
            data = take(max_bytes)
            if data is not None:
                fair.waited()
                return data
        return await ordinary(max_bytes)

    return take_ready, wait_and_take


def discard_input(stream: object) -> None:
    """Drop what a closed ``stream`` read ahead (see :func:`input_queued`).

    The stream may outlive its connection for a while (a cancelled task's
    traceback can hold it until the cyclic garbage collector runs): its
    read-ahead, megabytes from a fast client, need not.
    """
    if type(stream).__module__ == "anyio._backends._asyncio":
        queue = getattr(getattr(stream, "_protocol", None), "read_queue", None)
        if queue is not None and hasattr(queue, "clear"):
            queue.clear()


def nowait_sender(stream: object) -> NowaitSender | None:
    """A non-blocking sender for ``stream``, or None if it has none."""
    module = type(stream).__module__
    if module == "anyio._backends._asyncio":
        return _asyncio_sender(stream)
    if module == "anyio._backends._trio":
        return _trio_sender(stream)
    return None


def _asyncio_sender(stream: Any) -> NowaitSender | None:
    # Every private name used below is checked here: with another anyio's
    # internals the stream simply takes the ordinary path.
    transport: Any = getattr(stream, "_transport", None)
    protocol: Any = getattr(stream, "_protocol", None)
    if transport is None or protocol is None or not hasattr(stream, "_closed"):
        return None
    if not (hasattr(protocol, "exception") and hasattr(transport, "get_write_buffer_size")):
        return None
    return AsyncioSender(stream, transport, protocol)


def _trio_sender(stream: Any) -> NowaitSender | None:
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if not isinstance(raw, socket.socket):
        return None
    return TrioSender(raw)


def detachable(stream: object) -> bool:
    """Whether :func:`detach_socket` can take ``stream``'s socket: a plain
    anyio TCP stream (not TLS, memory or another wrapper)."""
    return type(stream).__module__ in ("anyio._backends._asyncio", "anyio._backends._trio") and hasattr(stream, "extra")


def detach_socket(stream: object) -> tuple[int, bytes] | None:
    """A duplicate of ``stream``'s socket descriptor and the bytes the
    stream read from it ahead of us, for another process to go on with the
    connection (hot restart hand-off); None for a stream that is not a
    plain TCP socket stream we know (TLS, memory, wrappers).

    The stream stops reading first (asyncio), so nothing more arrives in
    user space: what the peer sends from now on waits in the kernel for the
    new owner. Closing the stream afterwards closes only this process's
    descriptor (anyio aborts; it never shuts the socket down).
    """
    module = type(stream).__module__
    queued = b""
    if module == "anyio._backends._asyncio":
        transport: Any = getattr(stream, "_transport", None)
        protocol: Any = getattr(stream, "_protocol", None)
        queue = getattr(protocol, "read_queue", None)
        if transport is None or queue is None or not hasattr(queue, "popleft"):
            return None
        try:
            transport.pause_reading()
        except (AttributeError, RuntimeError):  # closing already
            return None
        queued = b"".join(queue)
        queue.clear()
    elif module != "anyio._backends._trio":
        return None
    try:
        raw = getattr(stream, "extra")(SocketAttribute.raw_socket)  # noqa: B009 - any anyio stream
        fd = os.dup(raw.fileno())
    except (OSError, AttributeError, RuntimeError):
        return None
    return fd, queued


def pause_reading(stream: object) -> None:
    """Stop an accepted asyncio transport from reading ahead of us.

    anyio (4.x) pauses the transports it connects, but not the ones it
    accepts; its ``receive()`` pauses only after waiting, so a client that
    sends before the first ``receive()`` keeps the transport reading for
    good, and a client that sends faster than the connection is served
    grows the process's memory without bound (measured: 200 MiB queued while
    the proxy held its reading back). Reading then starts with the first
    ``receive()``, as for connected sockets. A no-op on trio.
    """
    transport = getattr(stream, "_transport", None)
    is_reading = getattr(transport, "is_reading", None)
    if callable(is_reading) and is_reading():
        transport.pause_reading()  # type: ignore[union-attr]
