"""anyio's asyncio socket streams, paced: what their event loop reads ahead
of the task is bounded, and input is taken where it arrives or straight
from the stream's queue instead of through ``receive()``.

anyio's asyncio ``SocketStream`` is a protocol the event loop feeds: each
chunk read goes to a queue, and ``receive()`` resumes reading before it
waits and pauses it after. The class of the stream's protocol is swapped
for a subclass (:func:`prepare_input`) that pauses reading when a chunk has
to wait in the queue, offers chunks to a taker where they arrive
(:func:`inline_input`), and hands a small chunk straight to a task waiting
for it (:func:`queued_input`). Every private name used is checked first: a
stream of another anyio takes the ordinary path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

import anyio.lowlevel
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream

__all__ = ["FAIR_SHARE", "FAIR_SLICE", "FairSlice", "ReadyInput", "inline_input", "prepare_input", "queued_input"]

#: A chunk taken inline, or handed to a waiting task, at least this large
#: suggests more waits in the socket: reading pauses until the next loop
#: turn (inline) or the task's next wait, so a flooding peer gets one chunk
#: per turn, as a task's read gave it (uvloop reads up to 32 chunks per
#: wake-up otherwise). Small chunks, the latency case, go on. asyncio's own
#: loop reads one chunk per turn anyway: no pause there after a chunk taken
#: inline (see :func:`_reads_once_per_turn`).
FAIR_SHARE = 65536


#: How long a connection may go on taking input that needs no wait before
#: it yields to the other tasks (trio's sockets, asyncio's queue: see
#: :func:`~sota_dispatch.io.transport.ready_input`).
FAIR_SLICE = 0.001


class FairSlice:
    """When a connection taking input that needed no wait yields to the
    other tasks: once per :data:`FAIR_SLICE` of such input, as an event
    loop lets a connection handle what one wake-up read. A wait yields
    anyway and begins a new slice. ``yield_shielded`` is the backend's
    uncancellable yield (the chunk is taken by then)."""

    __slots__ = ("_began", "_yield")

    def __init__(self, yield_shielded: Callable[[], Awaitable[object]]) -> None:
        self._yield = yield_shielded
        self._began = monotonic()

    def waited(self) -> None:
        """The caller waits (or waited) for input, and so yields."""
        self._began = monotonic()

    async def took(self) -> None:
        """Input was taken without a wait: yield if the slice is over."""
        now = monotonic()
        if now - self._began >= FAIR_SLICE:
            self._began = now
            await self._yield()


class _OneChunk:
    """Marks a protocol of anyio's that pauses reading after each chunk
    that has to wait in its queue."""

    sota_pause: Callable[[], object] | None = None
    sota_resume: Callable[[], object] | None = None
    #: Pauses reading after a large chunk taken inline, for fairness (None:
    #: the transport reads one chunk per loop turn by itself).
    sota_fair_pause: Callable[[], object] | None = None
    #: Takes a chunk where it arrives (True: taken; see :func:`inline_input`).
    sota_inline: Callable[[bytes], bool] | None = None
    #: The task waits for input in :func:`queued_input`'s wait: a small
    #: chunk that arrives to an empty queue goes straight to it, reading on.
    sota_waiting = False


_ONE_CHUNK: dict[Any, type] = {}


def _one_chunk(kind: Any) -> type:
    """anyio's stream protocol class ``kind``, pausing reading after each
    chunk that has to wait in its queue (a subclass, made once: swapping an
    object's class to it keeps its layout). The transport pauses it; the
    task's next wait resumes it (anyio's ``receive()``, or
    :func:`queued_input`'s)."""
    paced = _ONE_CHUNK.get(kind)
    if paced is None:

        def data_received(self: Any, data: bytes) -> None:
            inline = self.sota_inline
            if inline is not None and not self.read_queue and inline(data):
                pause = self.sota_fair_pause  # taken where it arrived: reading goes on, but fairly
                if len(data) >= FAIR_SHARE and pause is not None:
                    pause()
                    asyncio.get_running_loop().call_soon(self.sota_go_on)
                return
            handed = self.sota_waiting and not self.read_queue and len(data) < FAIR_SHARE
            kind.data_received(self, data)
            pause = self.sota_pause
            if pause is not None and not handed:
                pause()

        def sota_go_on(self: Any) -> None:
            # Unless the chunks went back to the task meanwhile (it resumes).
            resume = self.sota_resume
            if resume is not None and self.sota_inline is not None and not self.read_queue:
                resume()

        def connection_lost(self: Any, exc: Exception | None) -> None:
            # The transport refers to us: no cycle.
            self.sota_pause = self.sota_resume = self.sota_fair_pause = self.sota_inline = None
            kind.connection_lost(self, exc)

        methods = {"data_received": data_received, "sota_go_on": sota_go_on, "connection_lost": connection_lost}
        paced = type(kind.__name__, (kind, _OneChunk), methods)
        _ONE_CHUNK[kind] = paced
    return paced


def _reads_once_per_turn(transport: object) -> bool:
    """Whether ``transport`` reads at most one chunk per loop turn by itself:
    asyncio's own selector loop does (one ``recv`` per readiness), so a
    flooding peer cannot keep it reading. Pausing there after a large chunk
    taken inline only cost two ``epoll_ctl`` calls and the selector's
    Python per chunk: 10 % of the compiled broker's CPU per 1 KiB message."""
    return type(transport).__module__ == "asyncio.selector_events"


def prepare_input(stream: object, read_size: int) -> int:
    """Bound what ``stream`` reads ahead of us, and return what to ask of
    its ``receive()`` for reads of about ``read_size``.

    anyio's asyncio ``SocketStream`` queues what the event loop reads, a
    chunk of up to 256 KiB per socket read, until its task takes it:

    * Between two ``receive()`` calls the loop reads on, and uvloop reads
      up to 32 chunks per wake-up: 1.3 MiB arrived at once on each of four
      connections holding large frames, over the buffer budget before any
      of them could be shed. Reading pauses here after each chunk that has
      to wait for the task (anyio resumes it once its queue is empty, as it
      did already whenever it found its queue empty). A small chunk that
      arrives while the task waits for it goes to the task with reading
      left on (:func:`queued_input`), so a connection holds at most one
      chunk in the queue, read while its task was busy.
    * It cuts a chunk larger than it is asked for into two new bytes
      objects, again for every piece: 64 KiB reads copied each 256 KiB
      chunk about two and a half times over (11 % of the proxy's
      instructions per 1 KiB ZMTP message with 1,000 in flight). The chunks
      are in memory already, so they are taken whole.

    Every other stream (trio, TLS, Unix sockets) reads only what it is
    asked for, allocating that much: it gets ``read_size``.
    """
    kind = type(stream)
    if kind.__module__ != "anyio._backends._asyncio" or kind.__name__ != "SocketStream":
        return read_size
    protocol: Any = getattr(stream, "_protocol", None)
    transport: Any = getattr(stream, "_transport", None)
    queue = getattr(protocol, "read_queue", None)
    if queue is None or not hasattr(queue, "popleft") or transport is None:
        return read_size  # another anyio's internals: the ordinary path
    if not isinstance(protocol, _OneChunk):  # once per stream
        if not hasattr(protocol, "__dict__"):
            return read_size  # the pause cannot be kept on it: no whole chunks without it
        try:
            protocol.__class__ = _one_chunk(type(protocol))
        except TypeError:  # another anyio's layout: the ordinary path
            return read_size
        protocol.sota_pause, protocol.sota_resume = transport.pause_reading, transport.resume_reading
        if not _reads_once_per_turn(transport):
            protocol.sota_fair_pause = transport.pause_reading
        transport.set_protocol(protocol)  # uvloop keeps the protocol's method from when it was set
    return sys.maxsize


def inline_input(stream: object, taker: Callable[[bytes], bool] | None) -> Callable[[], None] | None:
    """Offer each chunk ``stream`` reads to ``taker`` as it arrives, from
    the event loop's read callback, before it is queued for ``receive()``;
    ``taker`` returns False to leave the chunk to ``receive()``. None (the
    default again): no offers. Returns a function that ends a ``receive()``
    under way with an empty chunk (the taker's way to hand work on to the
    receiving task), or None for a stream that reads only when asked
    (trio, TLS, one :func:`prepare_input` did not pace).

    A request batch handled where its bytes arrive costs no task wake-up,
    no event and no pause and resume of reading (35-45 % of the compiled
    proxy's instructions per round trip with one request in flight). A
    chunk is offered only while nothing is queued, so chunks keep their
    order.
    """
    protocol: Any = getattr(stream, "_protocol", None)
    if not isinstance(protocol, _OneChunk):
        return None
    paced: Any = protocol  # anyio's, paced: its queue and event are there
    paced.sota_inline = taker
    queue, event = paced.read_queue, paced.read_event

    def hand_on() -> None:
        queue.append(b"")
        event.set()

    return hand_on


#: What :func:`ready_input` gives: a take of input there already (None: none
#: now, the end, or closed) and a receive that waits for input and takes it.
ReadyInput = tuple[Callable[[int], Awaitable["bytes | None"]], Callable[[int], Awaitable[bytes]]]


def queued_input(stream: object) -> ReadyInput | None:
    """:func:`~sota_dispatch.io.transport.ready_input` for anyio's asyncio
    stream that :func:`prepare_input` paced: its queue, taken without
    ``receive()``; None for any other stream.

    anyio's ``receive()`` resumes reading before each wait and pauses it
    after: two ``epoll_ctl`` calls (and the selector's Python on asyncio's
    own loop) per request for a service answering one at a time. Here a
    small chunk that arrives while the task waits for it goes straight to
    it and reading goes on; a chunk queued while the task is busy, or a
    large one, pauses reading as before, and the next wait resumes it.
    So a connection holds at most one chunk read ahead of its task beyond
    the one handed over (the proxy's buffer budget counts it:
    :func:`~sota_dispatch.io.transport.input_queued`). Input there already
    is taken as trio's is: a cancelled task stops first, and the task
    yields once per :data:`FAIR_SLICE` of input that needed no wait.
    """
    protocol: Any = getattr(stream, "_protocol", None)
    transport: Any = getattr(stream, "_transport", None)
    if not isinstance(protocol, _OneChunk) or not hasattr(stream, "_closed") or not hasattr(transport, "is_reading"):
        return None  # not paced (prepare_input): anyio's receive
    paced: Any = protocol  # anyio's, paced: its queue and event are there
    queue, event = paced.read_queue, paced.read_event
    checkpoint_if_cancelled = anyio.lowlevel.checkpoint_if_cancelled
    fair = FairSlice(anyio.lowlevel.cancel_shielded_checkpoint)

    def take(max_bytes: int) -> bytes:
        chunk: bytes = queue.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            queue.appendleft(rest)
        if not queue:
            event.clear()
        return chunk

    async def take_ready(max_bytes: int) -> bytes | None:
        if not queue or not queue[0]:  # nothing, or a taker's hand-on (b""): the wait returns it
            fair.waited()
            return None
        await checkpoint_if_cancelled()
        chunk = take(max_bytes)
        await fair.took()
        return chunk

    async def wait_and_take(max_bytes: int) -> bytes:
        if not event.is_set() and not transport.is_closing() and not paced.is_at_eof:
            if not transport.is_reading():
                transport.resume_reading()
            paced.sota_waiting = True
            try:
                await event.wait()
            finally:
                paced.sota_waiting = False
            fair.waited()
        else:
            await checkpoint_if_cancelled()
        if queue:
            return take(max_bytes)
        if stream._closed:
            raise ClosedResourceError from None
        if paced.exception:
            raise BrokenResourceError from paced.exception
        raise EndOfStream  # the peer's end, or an alarm (input_alarm) that ended the wait

    return take_ready, wait_and_take
