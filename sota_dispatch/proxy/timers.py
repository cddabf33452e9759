"""One task for every request timeout of a proxy, instead of one per request.

A timeout is an entry in a heap, checked by a single task that sleeps until
the earliest deadline. A request that completes leaves its entry behind
(removing from the middle of a heap is O(n)); the entry is skipped when it
comes due, and the heap is rebuilt without dead entries when they
outnumber the live ones, so memory follows the requests in flight, not the
request rate.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import anyio

from ..io.clock import SYSTEM_CLOCK, Clock

__all__ = ["TimerQueue", "TimerTarget"]

log = logging.getLogger(__name__)


class TimerTarget(Protocol):
    """What a timer calls: ``timer_fired(tag)``; ``timer_live(tag)`` says
    whether the entry still matters (False: skip it, drop it on rebuild)."""

    def timer_fired(self, tag: int) -> None: ...

    def timer_live(self, tag: int) -> bool: ...


class TimerQueue:
    """Deadlines on ``clock`` (default anyio's); run :meth:`run` in a task."""

    #: Below this many entries the heap is never rebuilt.
    compact_floor = 4096

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerTarget, int]] = []
        self._seq = itertools.count()
        self._next = math.inf
        self._wake: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, when: float, target: TimerTarget, tag: int) -> None:
        """Call ``target.timer_fired(tag)`` at ``when`` unless it is dead by then."""
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), target, tag))
        if len(heap) > self.compact_floor and len(heap) & 1023 == 0:
            self._compact()
        if when < self._next and self._wake is not None:
            self._wake.set()

    def _compact(self) -> None:
        live = [entry for entry in self._heap if entry[2].timer_live(entry[3])]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    async def run(self) -> None:
        """Fire due timers forever (cancel the task to stop)."""
        while True:
            now = self.clock.now()
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, target, tag = heapq.heappop(heap)
                if target.timer_live(tag):
                    try:
                        target.timer_fired(tag)
                    except Exception:  # one request's failure must not stop every timer
                        log.exception("a timer callback failed (%r)", target)
                heap = self._heap  # a callback may have compacted it
            self._next = heap[0][0] if heap else math.inf
            self._wake = anyio.Event()
            await self.clock.wait(self._wake, self._next)
