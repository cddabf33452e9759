"""Batched, bounded writing to a byte stream.

One ``send()`` on an anyio stream costs about eight times a raw asyncio write,
while a batch costs the same as one write. So replies are queued and sent
together: when the reader is about to wait for more input, when the queue
reaches its high-water mark, or when the caller asks. The high-water mark is
also the backpressure: a peer that reads slowly makes ``flush()`` wait, the
dispatcher stops reading, and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Protocol, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import ByteSendStream
from mypy_extensions import mypyc_attr

from ..errors import FrameTimeout
from .clock import loop_time
from .transport import FAIR_SLICE, NowaitSender, nowait_sender

__all__ = ["DEFAULT_HIGH_WATER", "PIECE_FROM", "BufferedWriter", "Encoded", "encoded_bytes", "encoded_size"]

#: What an encoder hands the writer: one ``bytes``, or a list of pieces sent
#: in that order. Pieces let a large body go out as it was decoded instead of
#: being copied behind a new header: for a 1 KiB body that copy is a glibc
#: ``malloc``/``free`` (past CPython's small-object limit) and a ``memmove``,
#: which the writer's batch join makes anyway.
Encoded: TypeAlias = bytes | list[bytes]

#: The size from which an encoder is better off handing a body on as a piece
#: of its own (:data:`Encoded`) than copying it behind a new header. Below
#: it, the joined ``bytes`` (33 bytes of object header, a protocol header of
#: up to 15) stays within CPython's small-object allocator (512 bytes),
#: where one copy costs less than a list of two pieces; from it on, the copy
#: is a glibc ``malloc``, ``memmove`` and ``free``. ZMTP's last parts and
#: bolt's and dubbo's frames use it.
PIECE_FROM: Final = 464


def encoded_bytes(data: Encoded) -> bytes:
    """``data`` as one ``bytes`` (its pieces joined)."""
    return data if isinstance(data, bytes) else b"".join(data)


def encoded_size(data: Encoded) -> int:
    """The bytes ``data`` puts on the wire."""
    if isinstance(data, bytes):
        return len(data)
    size = 0
    for piece in data:
        size += len(piece)
    return size


class InputBuffer(Protocol):
    """What the writer asks of its connection's reader: whether input is
    waiting to be processed (then a reply can leave with that batch).
    Structural, so that the writer needs nothing from the reader's module."""

    @property
    def buffered(self) -> int: ...

    @property
    def last_input(self) -> float: ...


#: Queued bytes at which :meth:`BufferedWriter.send` stops deferring and sends.
DEFAULT_HIGH_WATER = 256 * 1024


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class BufferedWriter:
    """Queue bytes with :meth:`write`, send them as one batch with :meth:`flush`.

    :meth:`send` is the convenient form: it queues, then sends at once unless
    the paired reader still holds input that the same dispatcher will handle
    next, in which case the reply rides along with the replies to that input
    (the reader flushes before it waits on the socket, and a deferred flush
    is also scheduled so a reply is never held while the dispatcher waits on
    something else).
    """

    __slots__ = (
        "_defer_hook",
        "_flushing",
        "_gate",
        "_high_water",
        "_nowait",
        "_parts",
        "_probed",
        "_reader",
        "_size",
        "_stream",
        "_turn",
        "send_timeout",
        "transform",
    )

    def __init__(
        self,
        stream: ByteSendStream,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        reader: InputBuffer | None = None,
    ) -> None:
        if high_water <= 0:
            raise ValueError("high_water must be positive")
        self._stream = stream
        self._high_water = high_water
        self._parts: list[bytes] = []
        self._size = 0
        # Sends never interleave: a flush holds the writer (_flushing); one
        # that must wait makes the event it waits on. The non-blocking
        # sender is made on first use: an idle connection never needs one.
        self._flushing = False
        self._gate: anyio.Event | None = None
        self._reader = reader
        self._defer_hook: Callable[[], None] | None = None
        self._nowait: NowaitSender | None = None
        self._probed = False
        #: When a flush last gave the event loop a turn (see :meth:`flush`).
        self._turn = 0.0
        #: Seconds one send may wait for the peer to read (None: forever);
        #: then :class:`~sota_dispatch.FrameTimeout`. A server sets its
        #: frame timeout here (see BufferedReader.set_timeouts).
        self.send_timeout: float | None = None
        #: Applied to what each :meth:`write` queues, its pieces joined (None:
        #: nothing): how a codec that encrypts after its handshake (ZMTP
        #: CURVE) seals what every writer of the connection writes, once, in
        #: write order.
        self.transform: Callable[[bytes], bytes] | None = None

    @property
    def pending(self) -> int:
        """Bytes queued and not yet handed to the stream."""
        return self._size

    @property
    def all_sent(self) -> bool:
        """Nothing queued here, nor left in the stream's own buffer by
        :meth:`flush_nowait`: the connection owes its peer no bytes (it may
        park or move without waiting for the peer to read)."""
        if self._size:
            return False
        nowait = self._nowait if self._probed else None
        return nowait is None or not nowait.busy()

    @property
    def high_water(self) -> int:
        """The queue size at which :meth:`send` sends instead of deferring."""
        return self._high_water

    def release(self) -> None:
        """The connection is closed: drop what was never sent and the reader
        (see :meth:`BufferedReader.release`)."""
        self._parts.clear()
        self._size = 0
        self._reader = None
        self._defer_hook = None

    def pair(self, reader: InputBuffer, defer_hook: Callable[[], None] | None) -> None:
        """Couple with the reader of the same connection (the dispatcher does this).

        ``defer_hook`` is called when :meth:`send` defers; it must arrange a
        :meth:`flush` the next time the connection's task yields.
        """
        self._reader = reader
        self._defer_hook = defer_hook

    def write(self, data: Encoded) -> None:
        """Queue ``data`` (bytes, or pieces in order: :data:`Encoded`); it
        goes out with the next flush. Never waits."""
        if not isinstance(data, bytes):
            if self.transform is None:
                parts = self._parts
                for piece in data:
                    size = len(piece)
                    if size:
                        parts.append(piece)
                        self._size += size
                return
            data = b"".join(data)  # a transform (a CURVE box) takes one message whole
        # The length, not the truth: compiled, a length is a field read and
        # truth a generic call; the interpreter needed the length anyway.
        size = len(data)
        if size:
            transform = self.transform
            if transform is not None:
                data = transform(data)
                size = len(data)
            self._parts.append(data)
            self._size += size

    def writelines(self, chunks: Iterable[bytes]) -> None:
        """Queue several chunks (see :meth:`write`)."""
        for data in chunks:
            self.write(data)

    async def flush(self) -> None:
        """Send everything queued, as few stream sends as possible.

        When the socket takes it all at once (:meth:`flush_nowait`), that is
        the whole flush: no stream send and no turn of the event loop, which
        cost a local service answering one request at a time two thirds of
        its instructions per request. A task that only sends still lets the
        others run once per ``FAIR_SLICE`` (1 ms) of such flushes; one that
        reads between them gives the loop its turns in its reads (asyncio's
        receive yields, trio's ready input once per slice). Otherwise it
        waits while the peer is not reading (that wait is the
        backpressure), at most ``send_timeout`` (then
        :class:`~sota_dispatch.FrameTimeout`).
        Safe to call from several tasks: sends never interleave. A flush
        cancelled while sending may have sent part of the batch; the
        connection is then only fit to be closed.
        """
        if self._parts and self.flush_nowait():
            now = loop_time()
            turn = self._turn
            if now - turn < FAIR_SLICE:
                return
            self._turn = now
            reader = self._reader
            if reader is None or reader.last_input <= turn:  # no read since the last turn: give one
                await anyio.lowlevel.checkpoint()
            return
        while self._parts:
            await self._hold()
            try:
                # None left: another flush sent them (the loop ends; the
                # transport check below still applies).
                parts = self._parts
                if parts:
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    self._parts = []
                    self._size = 0
                    await self._send(data)
            finally:
                self._let_go()
        nowait = self._sender()
        if nowait is not None and nowait.busy():
            # flush_nowait() left bytes in the transport: a flush ends when
            # they are out too (the stream's send waits for that, as it
            # does after its own writes), or a close right after would drop them.
            await self._hold()
            try:
                if nowait.busy():
                    await self._send(b"")  # under the send timeout too: a peer that never reads
            finally:
                self._let_go()

    async def _send(self, data: bytes) -> None:
        """The stream's send, within :attr:`send_timeout` (then FrameTimeout)."""
        timeout = self.send_timeout
        if timeout is None:
            await self._stream.send(data)
            return
        with anyio.move_on_after(timeout) as scope:
            await self._stream.send(data)
        if scope.cancelled_caught:
            raise FrameTimeout(f"the peer read nothing of its answers for {timeout:g}s")

    async def _hold(self) -> None:
        """Take the writer for one send (a lock without a lock object per
        connection: most never contend)."""
        while self._flushing:
            gate = self._gate
            if gate is None:
                gate = self._gate = anyio.Event()
            await gate.wait()
        self._flushing = True

    def _let_go(self) -> None:
        self._flushing = False
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def _sender(self) -> NowaitSender | None:
        if not self._probed:
            self._probed = True
            self._nowait = nowait_sender(self._stream)
        return self._nowait

    def flush_nowait(self) -> bool:
        """Hand what is queued to the socket now, without waiting or yielding;
        True when every byte has gone to the kernel (False: some wait, here
        or in the transport beneath, for the ordinary :meth:`flush`).

        For a task flushing *another* connection's writer at the end of its
        batch: when the socket cannot take it all now (or a :meth:`flush` is
        under way, or the stream has no non-blocking send, see
        :mod:`sota_dispatch.io.transport`), the rest stays queued for the ordinary
        :meth:`flush`, so a slow peer never blocks the caller.
        """
        nowait = self._nowait if self._probed else self._sender()
        parts = self._parts
        if not parts:
            return nowait is None or not nowait.busy()
        if nowait is None or self._flushing or nowait.busy():
            return False
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        sent = nowait.send(data)
        if sent == len(data):
            self._parts = []
            self._size = 0
            return not nowait.busy()  # all taken, and all gone to the kernel?
        rest = data[sent:] if sent else data
        self._parts = [rest]
        self._size = len(rest)
        return False

    async def send(self, data: bytes) -> None:
        """Queue ``data`` and send it with whatever else is queued.

        Returns without sending when the reader holds more input that this
        connection is about to process (the reply then leaves with that
        batch) and the queue is below the high-water mark.
        """
        self.write(data)
        reader = self._reader
        if reader is not None and self._size < self._high_water and reader.buffered and self._defer_hook is not None:
            self._defer_hook()
            return
        await self.flush()
