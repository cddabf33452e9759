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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from ..protocol.dispatcher import Dispatcher

__all__ = ["Outbox"]

log = logging.getLogger(__name__)


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class Outbox:
    """Collects connections to flush at the end of the current batch.

    A batch is the synchronous stretch between :meth:`begin` and :meth:`end`:
    it must not await (another task could then add to a batch nobody ends
    until it resumes), so a batch that has to wait ends first and begins
    again after. Batches nest (only the outermost end flushes).
    """

    __slots__ = ("_depth", "_dirty", "_last")

    def __init__(self) -> None:
        self._depth = 0
        self._dirty: dict[Dispatcher, None] = {}
        #: The connection added last to ``_dirty`` (None: none since it was
        #: new): a batch adds the same one over and over (each request to
        #: one upstream, each answer to one client), and a dict insertion
        #: hashes the connection each time (~170 instructions compiled).
        self._last: Dispatcher | None = None

    def add(self, connection: Dispatcher) -> None:
        """``connection``'s writer holds bytes to send: at the end of the
        batch, or soon if no batch is under way."""
        if self._depth:
            if connection is not self._last:
                self._dirty[connection] = None
                self._last = connection
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
        dirty = self._dirty
        while dirty:  # flushing may write more (a pool's queue moving on)
            self._dirty = {}
            self._last = None
            self._depth += 1
            try:
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
            finally:
                self._depth -= 1
            dirty = self._dirty
