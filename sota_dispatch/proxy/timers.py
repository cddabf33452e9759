"""One task for every request timeout of a proxy, instead of one per request.

Timeouts are grouped by deadline: the requests a client connection reads in
one batch get the same clock reading and (on one route) the same timeout,
so they share one deadline. Each deadline is one *bucket* (its targets and
their tags, by slot) and one heap entry, checked by a single task that
sleeps until the earliest deadline. A request that completes takes itself
out of its bucket by the slot it was given (:meth:`TimerBucket.leave`, O(1):
two list stores, where a dict keyed by the request cost a hash, a lookup
and a deletion per request), so a finished request is never kept alive by
its timer, and no walk over the timers asks each one whether it still
matters. A bucket left empty (its lists given back) stays in the heap until
its deadline; the heap is rebuilt without empty buckets when they outnumber
the others, so memory follows the requests in flight, not the request rate.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import types
from typing import Final, Protocol

import anyio

from ..io.clock import SYSTEM_CLOCK, Clock

__all__ = ["TimerBucket", "TimerQueue", "TimerTarget"]

log = logging.getLogger(__name__)


class TimerTarget(Protocol):
    """What a timer calls: ``timer_fired(tag)``; ``timer_live(tag)`` says
    whether the entry still matters when it comes due (False: skip it)."""

    def timer_fired(self, tag: int) -> None: ...

    def timer_live(self, tag: int) -> bool: ...


def _probe() -> None:
    """Only its type is looked at: see ``_COMPILED``."""


#: Whether this module runs compiled (mypyc makes its functions built-in
#: ones). A bucket has two spellings: compiled, two lists by slot (a dict
#: keyed by the request cost a hash, an insertion, a membership test and a
#: deletion, ~800 instructions a request there; list stores are native);
#: interpreted, a dict (fewer bytecodes: the lists cost 1-2 % more there).
_COMPILED: Final = not isinstance(_probe, types.FunctionType)


class TimerBucket:
    """The timers of one deadline: each target and its tag.

    :meth:`TimerQueue.call_at` puts a target in and gives its slot; a
    target that no longer needs its timer leaves (:meth:`leave`); the last
    one out gives the table back (a bucket waits in the heap until its
    deadline, a minute, say: with a thousand requests of one read batch its
    table is ~16-36 KiB). A target has one entry per bucket: its timers'
    deadlines must differ.
    """

    __slots__ = ("_by", "_live", "_tags", "_targets")

    def __init__(self) -> None:
        # Compiled: targets and tags by slot (left slots hold None), and
        # how many are in. Interpreted: target -> tag.
        self._targets: list[TimerTarget | None] = []
        self._tags: list[int] = []
        self._live = 0
        self._by: dict[TimerTarget, int] = {}

    def __len__(self) -> int:
        """Targets still in the bucket."""
        return self._live if _COMPILED else len(self._by)

    def leave(self, slot: int, target: TimerTarget) -> None:
        """Take ``target`` (at ``slot``) out; not in any more (the bucket
        fired, or it left already): nothing."""
        if not _COMPILED:
            by = self._by
            if target in by:  # not pop(): a call by name compiled (see StreamMultiplexer.take)
                del by[target]
            if not by:
                by.clear()  # a dict keeps the table it grew to when emptied
            return
        targets = self._targets
        if slot < len(targets) and targets[slot] is target:
            targets[slot] = None
            self._live -= 1
            if not self._live:
                targets.clear()  # frees the array: a cleared list keeps none
                self._tags.clear()

    def take(self) -> list[tuple[TimerTarget, int]]:
        """Empty the bucket: the targets in it and their tags, in the order
        they came (their own :meth:`leave` then finds nothing)."""
        if not _COMPILED:
            due = list(self._by.items())
            self._by.clear()
            return due
        targets, tags = self._targets, self._tags
        due = [(target, tags[i]) for i, target in enumerate(targets) if target is not None]
        targets.clear()
        tags.clear()
        self._live = 0
        return due


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
        self._last = TimerBucket()
        self._last_when = math.nan

    def __len__(self) -> int:
        """The timers pending (targets that took themselves out excluded)."""
        return sum(len(entry[2]) for entry in self._heap)

    def call_at(self, when: float, target: TimerTarget, tag: int) -> tuple[TimerBucket, int]:
        """Call ``target.timer_fired(tag)`` at ``when`` unless ``target`` left
        the returned bucket by the returned slot by then (or says the tag is
        dead). The requests of one batch share a bucket (the same clock
        reading, the same timeout).

        One call, the bucket filled here: interpreted, a method call more on
        a request's path costs as much as the work itself."""
        bucket = self._last if when == self._last_when else self._open(when)
        if not _COMPILED:
            bucket._by[target] = tag
            return bucket, 0
        targets = bucket._targets
        slot = len(targets)
        targets.append(target)
        bucket._tags.append(tag)
        bucket._live += 1
        return bucket, slot

    def _open(self, when: float) -> TimerBucket:
        """A new bucket for deadline ``when``, in the heap."""
        heap = self._heap
        if len(heap) > self.compact_floor and len(heap) & 255 == 0:
            self._compact()  # before the push: the new bucket is empty yet
            heap = self._heap
        bucket = self._last = TimerBucket()
        self._last_when = when
        heapq.heappush(heap, (when, next(self._seq), bucket))
        if when < self._next and self._wake is not None:
            self._wake.set()
        return bucket

    def _compact(self) -> None:
        heap = self._heap
        live = [entry for entry in heap if len(entry[2])]
        if len(live) * 2 < len(heap):
            if not len(self._last):  # dropped: a timer added to it would never fire
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
                if not len(bucket):
                    continue
                for target, tag in bucket.take():
                    if target.timer_live(tag):
                        try:
                            target.timer_fired(tag)
                        except Exception:  # one request's failure must not stop every timer
                            log.exception("a timer callback failed (%r)", target)
                heap = self._heap  # a callback may have compacted it
            self._next = heap[0][0] if heap else math.inf
            self._wake = anyio.Event()
            await self.clock.wait(self._wake, self._next)
