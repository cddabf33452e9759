"""One task for every request timeout of a proxy, instead of one per request.

Timeouts are grouped by deadline: the requests a client connection reads in
one batch get the same clock reading and (on one route) the same timeout,
so they share one deadline. Each deadline is one *bucket* (a dict from
target to tag) and one heap entry, checked by a single task that sleeps
until the earliest deadline. A request that completes takes itself out of
its bucket (:meth:`TimerQueue.call_at` returns it; :func:`leave` is O(1)),
so a finished request is never kept alive by its timer, and no walk over
the timers asks each one whether it still matters. A bucket left empty
(its table given back) stays in the heap until its deadline; the heap is
rebuilt without empty buckets when they outnumber the others, so memory
follows the requests in flight, not the request rate.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import anyio

from ..io.clock import SYSTEM_CLOCK, Clock

__all__ = ["TimerBucket", "TimerQueue", "TimerTarget", "leave"]

log = logging.getLogger(__name__)


class TimerTarget(Protocol):
    """What a timer calls: ``timer_fired(tag)``; ``timer_live(tag)`` says
    whether the entry still matters when it comes due (False: skip it)."""

    def timer_fired(self, tag: int) -> None: ...

    def timer_live(self, tag: int) -> bool: ...


#: The timers of one deadline: target -> tag. A target that no longer needs
#: its timer leaves it (:func:`leave`).
TimerBucket = dict[TimerTarget, int]


def leave(bucket: TimerBucket, target: TimerTarget) -> None:
    """Take ``target``'s timer out of ``bucket`` (none there: nothing).

    The bucket's last target also gives back its table: a dict keeps the
    table it grew to when emptied, and the bucket stays in the heap until
    its deadline (a minute, say), with a thousand requests of one read
    batch that table is ~36 KiB.
    """
    if target in bucket:  # not pop(): a call by name compiled (see StreamMultiplexer.take)
        del bucket[target]
    if not bucket:
        bucket.clear()


class TimerQueue:
    """Deadlines on ``clock`` (default anyio's); run :meth:`run` in a task."""

    #: Below this many buckets the heap is never rebuilt.
    compact_floor = 1024

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerBucket]] = []
        self._seq = itertools.count()
        self._next = math.inf
        self._wake: anyio.Event | None = None
        #: The bucket made last, and its deadline (NaN: none open: it fired
        #: or was dropped, so nothing may join it).
        self._last: TimerBucket = {}
        self._last_when = math.nan

    def __len__(self) -> int:
        """The timers pending (targets that took themselves out excluded)."""
        return sum(len(entry[2]) for entry in self._heap)

    def call_at(self, when: float, target: TimerTarget, tag: int) -> TimerBucket:
        """Call ``target.timer_fired(tag)`` at ``when`` unless ``target`` left
        the returned bucket by then (or says the tag is dead). A target has
        one entry per bucket: its timers' deadlines must differ."""
        if when == self._last_when:  # the same batch, the same timeout
            bucket = self._last
        else:
            heap = self._heap
            if len(heap) > self.compact_floor and len(heap) & 255 == 0:
                self._compact()  # before the push: the new bucket is empty yet
                heap = self._heap
            bucket = self._last = {}
            self._last_when = when
            heapq.heappush(heap, (when, next(self._seq), bucket))
            if when < self._next and self._wake is not None:
                self._wake.set()
        bucket[target] = tag
        return bucket

    def _compact(self) -> None:
        heap = self._heap
        live = [entry for entry in heap if entry[2]]
        if len(live) * 2 < len(heap):
            if not self._last:  # dropped: a timer added to it would never fire
                self._last_when = math.nan
            heapq.heapify(live)
            self._heap = live

    async def run(self) -> None:
        """Fire due timers forever (cancel the task to stop)."""
        while True:
            now = self.clock.now()
            heap = self._heap
            while heap and heap[0][0] <= now:
                bucket = heapq.heappop(heap)[2]
                if bucket is self._last:
                    self._last_when = math.nan
                if not bucket:
                    continue
                due = bucket.copy()
                bucket.clear()  # the callbacks' own pop()s find nothing now
                for target, tag in due.items():
                    if target.timer_live(tag):
                        try:
                            target.timer_fired(tag)
                        except Exception:  # one request's failure must not stop every timer
                            log.exception("a timer callback failed (%r)", target)
                heap = self._heap  # a callback may have compacted it
            self._next = heap[0][0] if heap else math.inf
            self._wake = anyio.Event()
            await self.clock.wait(self._wake, self._next)
