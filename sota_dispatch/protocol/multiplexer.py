"""Id-keyed pending streams for request/response protocols.

bolt, dubbo and a ZMTP DEALER carry many requests on one connection, each
tagged with an id; the answer carries the id back. The multiplexer hands out
ids (wrapping at the protocol's id width, never reusing one still in flight),
parks each caller until its answer, a timeout or the loss of the connection,
and counts answers that match nobody. It is plain bookkeeping: no task and
no channel per message, and an :class:`anyio.Event` only for a caller that
actually has to wait.

Two stores, one per use. Pending streams (:meth:`StreamMultiplexer.open`,
where a caller may choose the id) sit in a dict. The entries of
:meth:`StreamMultiplexer.add` (the proxy's upstream requests, once per
proxied request, ids always ours) sit in a ring of slots indexed by
``id & mask``: a request's slot is found without hashing, and nothing is
allocated per request but the id's int in the slot's id list. Compiled, the
dict cost ~1,700 instructions per request (four boxed ints, two lookups, an
insertion and a deletion that leaves a dummy to be swept by a resize); the
ring costs a few hundred. The ring stays at most half full (it doubles
before it would be more), so a free slot is never far; a request that is
never answered only makes the ids skip its slot, lap after lap. The peer
cannot grow it: only :meth:`~StreamMultiplexer.add` does, within
``max_in_flight``.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import anyio
from mypy_extensions import mypyc_attr

from ..errors import StreamLimitError, StreamTimeout, UpstreamError
from ..io.clock import loop_time

__all__ = ["PendingStream", "StreamMultiplexer"]

V = TypeVar("V")


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class PendingStream(Generic[V]):
    """One request waiting for its answer; returned by :meth:`StreamMultiplexer.open`."""

    __slots__ = ("_done", "_error", "_event", "_mux", "_value", "deadline", "stream_id")

    def __init__(self, mux: StreamMultiplexer[V], stream_id: int, deadline: float) -> None:
        self._mux = mux
        self.stream_id = stream_id
        #: Absolute time (:func:`anyio.current_time`) after which :meth:`result`
        #: gives up; ``math.inf`` when the stream has no timeout of its own.
        self.deadline = deadline
        self._done = False
        self._value: V | None = None
        self._error: BaseException | None = None
        self._event: anyio.Event | None = None

    @property
    def done(self) -> bool:
        """True once an answer or an error arrived (or the stream was cancelled)."""
        return self._done

    def _resolve(self, value: V | None, error: BaseException | None) -> None:
        self._value = value
        self._error = error
        self._done = True
        if self._event is not None:
            self._event.set()

    async def result(self, timeout: float | None = None) -> V:
        """Wait for the answer and return it.

        Gives up at the earlier of the stream's own deadline and ``timeout``
        seconds from now, raising :class:`~sota_dispatch.StreamTimeout`; the id
        is then released, and an answer arriving later is counted as
        unmatched. Raises the connection's error if it was lost meanwhile.
        """
        if not self._done:
            deadline = self.deadline
            if timeout is not None:
                deadline = min(deadline, loop_time() + timeout)
            if self._event is None:
                self._event = anyio.Event()
            try:
                with anyio.CancelScope(deadline=deadline):
                    await self._event.wait()
            finally:
                if not self._done:
                    self._mux._forget(self)
            if not self._done:
                raise StreamTimeout(f"stream {self.stream_id} got no answer in time")
        if self._error is not None:
            # One error instance is shared by every stream of a lost
            # connection; reset its traceback so re-raising does not grow it.
            raise self._error.with_traceback(None)
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop waiting: release the id; a later answer counts as unmatched."""
        if not self._done:
            self._mux._forget(self)
            self._resolve(None, UpstreamError(f"stream {self.stream_id} was cancelled"))


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class StreamMultiplexer(Generic[V]):
    """Allocate stream ids and match answers to waiting callers.

    ``id_bits`` is the width of the protocol's id field (32 for bolt, 64 for
    dubbo); ids run from ``first_id`` up to ``2**id_bits - 1`` and wrap.
    ``max_in_flight`` bounds the pending streams; :meth:`open` raises
    :class:`~sota_dispatch.StreamLimitError` beyond it. ``timeout`` is the
    default per-stream timeout in seconds (``None``: none).
    """

    __slots__ = (
        "_closed",
        "_count",
        "_entries",
        "_entry_ids",
        "_first_id",
        "_mask",
        "_max_id",
        "_next",
        "_pending",
        "max_in_flight",
        "timeout",
        "unmatched",
    )

    def __init__(
        self,
        *,
        id_bits: int = 32,
        first_id: int = 1,
        max_in_flight: int = 65536,
        timeout: float | None = None,
    ) -> None:
        if id_bits < 1:
            raise ValueError("id_bits must be at least 1")
        max_id = (1 << id_bits) - 1
        if not 0 <= first_id <= max_id:
            raise ValueError(f"first_id must be within 0..{max_id}")
        if not 1 <= max_in_flight <= max_id - first_id:
            # Leave at least one free id so allocation always terminates.
            raise ValueError(f"max_in_flight must be within 1..{max_id - first_id} for {id_bits}-bit ids")
        self._first_id = first_id
        self._max_id = max_id
        self._next = first_id
        # PendingStreams, or the entries of add(): a multiplexer holds one
        # kind or the other (typed Any: the compiled build checks types).
        self._pending: dict[int, Any] = {}
        # The entries of add(), in a ring: entry and id by slot (id & _mask),
        # None where free; empty until the first add() (an idle connection
        # allocates nothing), doubled before it is more than half full.
        self._entries: list[Any] = []
        self._entry_ids: list[int] = []
        self._mask = 0
        self._count = 0
        self._closed: BaseException | None = None
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        #: Answers whose id was unknown, timed out or cancelled.
        self.unmatched = 0

    def __len__(self) -> int:
        return len(self._pending) + self._count

    def __contains__(self, stream_id: object) -> bool:
        if isinstance(stream_id, int) and self._slot_of(stream_id) >= 0:
            return True
        return stream_id in self._pending

    @property
    def in_flight(self) -> int:
        """Streams waiting for an answer (and entries held)."""
        return len(self._pending) + self._count

    def _allocate(self) -> int:
        n = self._next
        pending = self._pending
        first, last = self._first_id, self._max_id
        while n in pending:  # ends: max_in_flight leaves a free id
            n = n + 1 if n < last else first
        self._next = n + 1 if n < last else first
        return n

    def open(self, stream_id: int | None = None, *, timeout: float | None = None) -> PendingStream[V]:
        """Start a stream; with no ``stream_id``, allocate the next free id.

        An explicit ``stream_id`` (a peer-chosen id) must not be in flight.
        ``timeout`` overrides the multiplexer's default for this stream.
        """
        if self._closed is not None:
            raise self._closed.with_traceback(None)
        pending = self._pending
        if len(pending) + self._count >= self.max_in_flight:
            raise StreamLimitError(f"{len(self)} streams in flight (max_in_flight={self.max_in_flight})")
        if stream_id is None:
            stream_id = self._allocate()
        elif stream_id in pending:
            raise ValueError(f"stream id {stream_id} is already in flight")
        limit = self.timeout if timeout is None else timeout
        deadline = math.inf if limit is None else loop_time() + limit
        stream: PendingStream[V] = PendingStream(self, stream_id, deadline)
        pending[stream_id] = stream
        return stream

    def add(self, entry: object) -> int:
        """Allocate the next free id for ``entry``, a caller's own record of
        a request that it answers itself (the proxy's upstream connections:
        no :class:`PendingStream`, no event); :meth:`take` gets it back.

        A multiplexer holds either such entries or pending streams, never
        both: :meth:`complete` and :meth:`fail` are for the streams. Ids
        run on from the last one, skipping any whose slot is held.
        """
        count = self._count
        if count + len(self._pending) >= self.max_in_flight or self._closed is not None or entry is None:
            if self._closed is not None:
                raise self._closed.with_traceback(None)
            if entry is None:
                raise ValueError("an entry cannot be None (None marks a free slot)")
            raise StreamLimitError(f"{len(self)} streams in flight (max_in_flight={self.max_in_flight})")
        entries = self._entries
        if count * 2 >= len(entries):
            entries = self._grow()
        mask = self._mask
        stream_id = self._next
        if entries[stream_id & mask] is not None:  # per request on the proxy: the usual case inline
            stream_id = self._free_id(stream_id)
        slot = stream_id & mask
        entries[slot] = entry
        self._entry_ids[slot] = stream_id
        self._count = count + 1
        self._next = stream_id + 1 if stream_id < self._max_id else self._first_id
        return stream_id

    def _grow(self) -> list[Any]:
        """Double the ring (16 slots at first), each entry moved to its
        slot under the new mask: two ids in different slots of the old ring
        differ in the old mask's bits, so they cannot meet in the new one."""
        old_entries, old_ids = self._entries, self._entry_ids
        size = max(16, 2 * len(old_entries))
        mask = size - 1
        entries: list[Any] = [None] * size
        ids: list[int] = [0] * size
        for index in range(len(old_entries)):
            entry = old_entries[index]
            if entry is not None:
                stream_id = old_ids[index]
                entries[stream_id & mask] = entry
                ids[stream_id & mask] = stream_id
        self._entries, self._entry_ids, self._mask = entries, ids, mask
        return entries

    def _free_id(self, start: int) -> int:
        """The first id from ``start`` on (wrapping) whose slot is free.

        Ends: the ring is at most half full, and either the id space is at
        least the ring's size (consecutive ids meet every slot) or smaller
        (each id has a slot of its own, and max_in_flight leaves one free).
        """
        entries, mask = self._entries, self._mask
        first, last = self._first_id, self._max_id
        n = start
        while entries[n & mask] is not None:
            n = n + 1 if n < last else first
        return n

    def _slot_of(self, stream_id: int) -> int:
        """The ring slot holding ``stream_id``'s entry; -1 if none does."""
        if not self._count:
            return -1
        slot = stream_id & self._mask
        if self._entries[slot] is not None and self._entry_ids[slot] == stream_id:
            return slot
        return -1

    def take(self, stream_id: int) -> Any:
        """The entry :meth:`add` stored under ``stream_id``, removed; None
        (counted in :attr:`unmatched`) when no such id is in flight."""
        entries = self._entries
        if self._count:  # the proxy's answers: the ring inline
            slot = stream_id & self._mask
            entry = entries[slot]
            if entry is not None and self._entry_ids[slot] == stream_id:
                entries[slot] = None
                self._count -= 1
                return entry
        entry = self._remove(stream_id)
        if entry is None:
            self.unmatched += 1
        return entry

    def _remove(self, stream_id: int) -> Any:
        """What is held under ``stream_id`` (never None), removed; None if
        nothing is. get and del, not ``dict.pop``: mypyc has no primitive for
        it (a call by name, ~350 instructions compiled, once per answer)."""
        slot = self._slot_of(stream_id)
        if slot >= 0:
            entry = self._entries[slot]
            self._entries[slot] = None
            self._count -= 1
            return entry
        pending = self._pending
        entry = pending.get(stream_id)
        if entry is not None:
            del pending[stream_id]
        return entry

    def unused_id(self) -> int:
        """The next id not in flight, not held (a oneway request: nobody
        waits for an answer; one that comes anyway matches nothing)."""
        if not self._entries:
            return self._allocate()
        stream_id = self._next
        if self._entries[stream_id & self._mask] is not None:
            stream_id = self._free_id(stream_id)
        self._next = stream_id + 1 if stream_id < self._max_id else self._first_id
        return stream_id

    def get(self, stream_id: int) -> Any:
        """The entry :meth:`add` stored under ``stream_id`` (None if none)."""
        slot = self._slot_of(stream_id)
        if slot >= 0:
            return self._entries[slot]
        return self._pending.get(stream_id)

    def discard(self, stream_id: int) -> bool:
        """Give up on the entry under ``stream_id`` (a later answer then
        counts as unmatched); False if none is in flight."""
        return self._remove(stream_id) is not None

    def take_all(self) -> list[Any]:
        """Every entry still in flight, removed (the connection is gone)."""
        entries = [entry for entry in self._entries if entry is not None]
        entries += self._pending.values()
        self._pending.clear()
        self._drop_ring()
        return entries

    def _drop_ring(self) -> None:
        self._entries, self._entry_ids, self._mask, self._count = [], [], 0, 0

    def complete(self, stream_id: int, value: V) -> bool:
        """Deliver the answer for ``stream_id``.

        Returns False, and counts it in :attr:`unmatched`, when no stream of
        that id is waiting (unknown, already answered, timed out, cancelled).
        """
        stream = self._remove(stream_id)
        if stream is None:
            self.unmatched += 1
            return False
        stream._resolve(value, None)
        return True

    def fail(self, stream_id: int, error: BaseException) -> bool:
        """Fail one stream with ``error``; False if it is not in flight."""
        stream = self._remove(stream_id)
        if stream is None:
            return False
        stream._resolve(None, error)
        return True

    def fail_all(self, error: BaseException) -> int:
        """Fail every pending stream with ``error`` (the connection is gone).

        Returns how many streams were failed.
        """
        pending, held = self._pending, self._count
        self._pending = {}
        self._drop_ring()  # entries of add() are not streams: the caller has their records
        for stream in pending.values():
            if isinstance(stream, PendingStream):
                stream._resolve(None, error)
        return len(pending) + held

    def close(self, error: BaseException) -> None:
        """Fail every pending stream and refuse new ones with ``error``."""
        self._closed = error
        self.fail_all(error)

    def _forget(self, stream: PendingStream[V]) -> None:
        if self._pending.get(stream.stream_id) is stream:
            del self._pending[stream.stream_id]
