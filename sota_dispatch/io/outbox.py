"""Connections written to during one batch, flushed together at its end.

A proxy task handling a batch (a client's read batch of requests, an
upstream's read batch of answers) writes into *other* connections' writers.
Waking each of those connections' flusher tasks costs two task switches per
hop; instead the batch notes every connection it wrote to, and at the end
of the batch hands each one's bytes to its socket directly when the socket
takes them now (:meth:`~sota_dispatch.BufferedWriter.flush_nowait`): still
one send per connection per batch, and no switch. What a socket cannot take
now is left to that connection's flusher, so a slow peer never blocks the
batch. Outside a batch, a write is flushed the ordinary way
(:meth:`~sota_dispatch.Dispatcher.flush_soon`).

A long batch does not hold everything to its end: every
``FLUSH_EVERY`` writes, what the batch has written so far leaves, if the
connections written to hold at least ``FLUSH_BYTES``. The first requests
of a client's batch of 100 then reach the upstream while the proxy still
decodes the rest, and the first answers reach their clients while it
encodes the others: the processes on either side work while the proxy
does, instead of each waiting for the whole batch (one connection, 100
requests in flight: about 1.0 cores of two busy through the proxy before,
1.5 after; ``bench/proxy_bench.py``). The cost is one more send for a
connection written to again after such a flush (a batch of answers to
many clients, each written once, sends no more than before). The byte
floor keeps that cost off small messages: without it, the ZMTP broker
spent up to a sixth more CPU per 16 B message, and the proxy's ZMTP rate
at 1,000 in flight fell by a tenth.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from ..protocol.dispatcher import Dispatcher

__all__ = ["FLUSH_BYTES", "FLUSH_EVERY", "Outbox"]

log = logging.getLogger(__name__)

#: Writes in one batch after which what it has written so far is flushed
#: (see the module docstring). 48: with 100 requests in flight on one
#: bolt connection, 32 cost more in sends than it won, 64 won no more,
#: and flushing the first 48, then 96, then 192 won less at 100 in flight
#: and lost more at 1,000 (bench/proxy_bench.py, compiled build).
FLUSH_EVERY = 48
#: Bytes the connections written to must hold for such a flush: below, the
#: batch writes on and looks again after ``FLUSH_EVERY`` more writes.
FLUSH_BYTES = 8192


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class Outbox:
    """Collects connections to flush at the end of the current batch.

    A batch is the synchronous stretch between :meth:`begin` and :meth:`end`:
    it must not await (another task could then add to a batch nobody ends
    until it resumes), so a batch that has to wait ends first and begins
    again after. Batches nest (only the outermost end flushes).
    """

    __slots__ = ("_depth", "_dirty", "_last", "_writes", "flush_bytes", "flush_every")

    def __init__(self) -> None:
        self._depth = 0
        self._dirty: dict[Dispatcher, None] = {}
        #: The connection added last to ``_dirty`` (None: none since it was
        #: new): a batch adds the same one over and over (each request to
        #: one upstream, each answer to one client), and a dict insertion
        #: hashes the connection each time (~170 instructions compiled).
        self._last: Dispatcher | None = None
        #: Writes since the batch began or last flushed early.
        self._writes = 0
        #: Writes in one batch after which those so far are flushed (see
        #: ``FLUSH_EVERY``; settable, e.g. by a test).
        self.flush_every = FLUSH_EVERY
        #: Bytes held by the connections written to that such a flush
        #: needs (see ``FLUSH_BYTES``; settable).
        self.flush_bytes = FLUSH_BYTES

    def add(self, connection: Dispatcher) -> None:
        """``connection``'s writer holds bytes to send: at the end of the
        batch, or soon if no batch is under way."""
        if self._depth:
            if connection is not self._last:
                self._dirty[connection] = None
                self._last = connection
            self._writes += 1
            if self._writes >= self.flush_every:
                self._writes = 0
                held = 0
                for dirty in self._dirty:
                    held += dirty.writer.pending
                if held >= self.flush_bytes:
                    self._flush()  # a long batch: what it wrote so far leaves now
        else:
            connection.flush_soon()

    def begin(self) -> None:
        """A batch starts (see :meth:`end`; ``with outbox:`` does both)."""
        self._depth += 1

    def __enter__(self) -> Outbox:
        self.begin()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()

    def end(self) -> None:
        """The batch ends: flush every connection it wrote to."""
        # Never below zero, even if an end() raised and its caller's finally
        # ends again: a negative depth would hold writes for good.
        self._depth = max(self._depth - 1, 0)
        if self._depth:
            return
        self._writes = 0
        while self._dirty:  # flushing may write more (a pool's queue moving on)
            self._depth += 1  # what flushing writes waits for the next round
            try:
                self._flush()
            finally:
                self._depth -= 1

    def _flush(self) -> None:
        """Flush every connection written to so far (inside a batch: what
        flushing writes is noted for later)."""
        dirty = self._dirty
        self._dirty = {}
        self._last = None
        for connection in dirty:
            try:
                connection.flush_now()
            except Exception:
                # A plugin's bug (flushed() moving a pool's queue on
                # encodes requests): that connection is closed, as a
                # failing flusher task would have closed it (its close
                # flushes what it holds); the other connections of the
                # batch are still flushed.
                log.exception("flushing %r failed; closing it", connection)
                connection.close_soon()
