"""Id-keyed pending streams for request/response protocols.

bolt, dubbo and a ZMTP DEALER carry many requests on one connection, each
tagged with an id; the answer carries the id back. The multiplexer hands out
ids (wrapping at the protocol's id width, never reusing one still in flight),
parks each caller until its answer, a timeout or the loss of the connection,
and counts answers that match nobody. It is plain bookkeeping on a dict: no
task and no channel per message, and an :class:`anyio.Event` only for a
caller that actually has to wait.
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

    __slots__ = ("_closed", "_first_id", "_max_id", "_next", "_pending", "max_in_flight", "timeout", "unmatched")

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
        self._closed: BaseException | None = None
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        #: Answers whose id was unknown, timed out or cancelled.
        self.unmatched = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._pending

    @property
    def in_flight(self) -> int:
        """Streams waiting for an answer."""
        return len(self._pending)

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
        if len(pending) >= self.max_in_flight:
            raise StreamLimitError(f"{len(pending)} streams in flight (max_in_flight={self.max_in_flight})")
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
        both: :meth:`complete` and :meth:`fail` are for the streams.
        """
        pending = self._pending
        if len(pending) >= self.max_in_flight or self._closed is not None:
            if self._closed is not None:
                raise self._closed.with_traceback(None)
            raise StreamLimitError(f"{len(pending)} streams in flight (max_in_flight={self.max_in_flight})")
        stream_id = self._next
        if stream_id in pending:  # per request on the proxy: the usual case inline
            stream_id = self._allocate()
        else:
            self._next = stream_id + 1 if stream_id < self._max_id else self._first_id
        pending[stream_id] = entry
        return stream_id

    def take(self, stream_id: int) -> Any:
        """The entry :meth:`add` stored under ``stream_id``, removed; None
        (counted in :attr:`unmatched`) when no such id is in flight."""
        entry = self._remove(stream_id)
        if entry is None:
            self.unmatched += 1
        return entry

    def _remove(self, stream_id: int) -> Any:
        """What is held under ``stream_id`` (never None), removed; None if
        nothing is. get and del, not ``dict.pop``: mypyc has no primitive for
        it (a call by name, ~350 instructions compiled, once per answer)."""
        pending = self._pending
        entry = pending.get(stream_id)
        if entry is not None:
            del pending[stream_id]
        return entry

    def unused_id(self) -> int:
        """The next id not in flight, not held (a oneway request: nobody
        waits for an answer; one that comes anyway matches nothing)."""
        return self._allocate()

    def get(self, stream_id: int) -> Any:
        """The entry :meth:`add` stored under ``stream_id`` (None if none)."""
        return self._pending.get(stream_id)

    def discard(self, stream_id: int) -> bool:
        """Give up on the entry under ``stream_id`` (a later answer then
        counts as unmatched); False if none is in flight."""
        return self._remove(stream_id) is not None

    def take_all(self) -> list[Any]:
        """Every entry still in flight, removed (the connection is gone)."""
        entries = list(self._pending.values())
        self._pending.clear()
        return entries

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
        pending = self._pending
        self._pending = {}
        for stream in pending.values():
            if isinstance(stream, PendingStream):  # not an entry of add()
                stream._resolve(None, error)
        return len(pending)

    def close(self, error: BaseException) -> None:
        """Fail every pending stream and refuse new ones with ``error``."""
        self._closed = error
        self.fail_all(error)

    def _forget(self, stream: PendingStream[V]) -> None:
        if self._pending.get(stream.stream_id) is stream:
            del self._pending[stream.stream_id]
