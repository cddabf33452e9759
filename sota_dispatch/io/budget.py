"""A process-wide budget for the bytes connections hold, and what to do as it fills.

Each connection may buffer up to the frame size limit (16 MiB) of a frame
not complete yet, so without an overall bound the memory a proxy needs is
set by its clients' manners, not by its configuration: 32 clients each
holding most of a 15 MiB frame took a proxy to 574 MB. Envoy's overload
manager is the model; the actions here, as the budget fills:

* from ``refuse_ratio`` (75 %) on, a *new* large frame is refused: a
  connection whose partial frame grows past ``large_frame`` (1 MiB) is
  closed (frames that were large before the pressure may finish);
* past the budget, the connections holding the most are closed until the
  holdings are back at ``refuse_ratio``;
* while still past the budget (bytes of closing connections not released
  yet), listeners stop accepting: new clients wait in the kernel's backlog
  for the moments that takes, rather than being turned away; and a
  connection whose holdings just grew stops reading until they are back
  within it (:meth:`BufferBudget.wait_to_grow`). Without that the others
  read on while the shed ones close, so the peak was the budget plus
  however fast they read meanwhile (four clients went from 2 to 3 MiB each
  against an 8 MiB budget); with it, the budget plus one read per
  connection.

Connections report what they hold once per read batch (:meth:`BufferBudget.hold`:
a dict update and two comparisons), so the budget costs nothing per frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import anyio
from mypy_extensions import mypyc_attr

from ..errors import LimitExceeded
from ..logs import RateLimitedLog

__all__ = ["DEFAULT_BUFFER_BUDGET", "DEFAULT_LARGE_FRAME", "BufferBudget", "FrameRefused"]

log = logging.getLogger(__name__)

#: Bytes of partial frames all connections may hold together.
DEFAULT_BUFFER_BUDGET = 128 * 1024 * 1024
#: A frame this large counts as large (refused when begun under pressure).
DEFAULT_LARGE_FRAME = 1024 * 1024


@mypyc_attr(native_class=False)  # an exception of the errors module's hierarchy, compiled or not
class FrameRefused(LimitExceeded):
    """A large frame begun while the process's buffer budget is short."""

    linger = False  # reading out the rest of its frame is what the refusal saves


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class BufferBudget:
    """The bytes held by every connection of a process, against ``limit``.

    Holders are any hashable objects (the proxy's connections); ``shed`` is
    called with each holder to close when the budget is exceeded (the
    proxy aborts the connection, which then calls :meth:`release`).
    """

    def __init__(
        self,
        limit: int = DEFAULT_BUFFER_BUDGET,
        *,
        large_frame: int = DEFAULT_LARGE_FRAME,
        refuse_ratio: float = 0.75,
        shed: Callable[[Hashable], None] | None = None,
    ) -> None:
        if limit <= 0 or large_frame <= 0:
            raise ValueError("the budget and the large-frame size must be positive")
        if not 0 < refuse_ratio <= 1:
            raise ValueError("refuse_ratio must be within (0, 1]")
        self.limit = limit
        self.large_frame = large_frame
        self.refuse_ratio = refuse_ratio
        self.refuse_level = int(limit * refuse_ratio)
        self.shed = shed
        #: Bytes held right now, in all.
        self.held = 0
        self._by: dict[Hashable, int] = {}
        #: Holders shed and not closed yet: their bytes count until they close.
        self._shedding: set[Hashable] = set()
        self._exempt: set[Hashable] = set()
        #: What each action did so far (for /metrics).
        self.frames_refused = 0
        self.connections_shed = 0
        self.accept_pauses = 0
        self.read_pauses = 0
        self._room: anyio.Event | None = None
        self._log = RateLimitedLog(log, logging.WARNING, interval=10.0, burst=1)

    def configure(self, limit: int, large_frame: int) -> None:
        """A new budget (a config reload): holdings are judged against it
        from the next change on; a larger one lets a paused accept go on."""
        if limit <= 0 or large_frame <= 0:
            raise ValueError("the budget and the large-frame size must be positive")
        self.limit, self.large_frame = limit, large_frame
        self.refuse_level = int(limit * self.refuse_ratio)
        if self._room is not None and self.held <= self.limit:
            self._wake()

    @property
    def holders(self) -> int:
        """Connections holding bytes right now."""
        return len(self._by)

    @property
    def accepting(self) -> bool:
        """False while the holdings are over the budget (see :meth:`wait_for_room`)."""
        return self.held <= self.limit

    async def wait_for_room(self) -> None:
        """Return once the holdings are within the budget again: a listener
        stops accepting meanwhile (the connections being shed release their
        bytes as they close)."""
        if self.held <= self.limit:
            return
        self.accept_pauses += 1
        self._log.log("accept", "buffer budget: %d of %d bytes held; not accepting for now", self.held, self.limit)
        await self._within()

    async def wait_to_grow(self) -> None:
        """Return once the holdings are within the budget: a connection
        whose holdings just grew past it waits here before reading more
        (the connections being shed release theirs as they close).

        What makes the budget a bound: once past it, every connection may
        add one read at most, whatever the shedding takes. Cancelled with
        its connection (one being shed waits here too).
        """
        if self.held <= self.limit:
            return
        self.read_pauses += 1
        self._log.log("read", "buffer budget: %d of %d bytes held; connections that grow wait", self.held, self.limit)
        await self._within()

    async def _within(self) -> None:
        while self.held > self.limit:
            if self._room is None:
                self._room = anyio.Event()
            with anyio.move_on_after(1.0):  # a re-check, should a holder never report back
                await self._room.wait()

    def hold(self, holder: Hashable, nbytes: int, *, new_large_frame: bool | None = None, exempt: bool = False) -> bool:
        """``holder`` now holds ``nbytes`` (of partial frames, and of
        requests in flight).

        Raises :class:`FrameRefused` when a large frame was begun while the
        budget is short (the caller closes the connection):
        ``new_large_frame`` says whether the holder's partial frame just
        grew past :attr:`large_frame` (None: take all of ``nbytes`` for one
        partial frame). Sheds the largest holders when the budget is
        exceeded. An ``exempt`` holder counts, but is never refused or
        shed: a proxy's upstream connection, shared by many clients, whose
        close would reset every one of them for one large answer.

        Returns whether the holdings are past the budget now (a holder that
        grew then waits in :meth:`wait_to_grow` before reading more).
        """
        by = self._by
        before = by.get(holder, 0)
        if nbytes == before:
            return self.held > self.limit
        if nbytes:
            by[holder] = nbytes
        else:
            del by[holder]
            self._shedding.discard(holder)
        self.held += nbytes - before
        if new_large_frame is None:
            new_large_frame = before < self.large_frame <= nbytes
        if exempt:
            self._exempt.add(holder)
        elif new_large_frame and self.held - nbytes + before >= self.refuse_level and holder not in self._shedding:
            self.release(holder)
            self.frames_refused += 1
            self._log.log(
                "refuse", "buffer budget: %d of %d bytes held; refusing a new large frame", self.held, self.limit
            )
            raise FrameRefused("a large frame while the buffer budget is short", self.large_frame)
        if self.held > self.limit:
            self._shed_largest()
            return True
        if nbytes < before and self._room is not None:
            self._wake()  # back within
        return False

    def release(self, holder: Hashable) -> None:
        """``holder`` holds nothing any more (it closed, or was refused)."""
        self.held -= self._by.pop(holder, 0)
        self._shedding.discard(holder)
        self._exempt.discard(holder)
        if self._room is not None and self.held <= self.limit:
            self._wake()

    def _wake(self) -> None:
        """Whoever waits for room (a listener, connections that grew) goes on."""
        room, self._room = self._room, None
        if room is not None:
            room.set()

    def _shed_largest(self) -> None:
        shedding = self._shedding
        # What the connections being closed hold is freed once they are closed.
        remaining = self.held - sum(self._by.get(h, 0) for h in shedding)
        if remaining <= self.limit:
            return
        exempt = self._exempt
        ranked = sorted(
            ((h, n) for h, n in self._by.items() if h not in shedding and h not in exempt),
            key=lambda item: item[1],
            reverse=True,
        )
        shed = 0
        for holder, nbytes in ranked:
            if remaining <= self.refuse_level:
                break
            shedding.add(holder)
            remaining -= nbytes
            self.connections_shed += 1
            shed += 1
            if self.shed is not None:
                self.shed(holder)
        self._log.log(
            "shed",
            "buffer budget exceeded (%d bytes allowed): closed the %s holding the most",
            self.limit,
            "connection" if shed == 1 else f"{shed} connections",
        )
