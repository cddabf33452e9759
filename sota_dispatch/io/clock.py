"""The clock the proxy's time-based decisions run on.

Request deadlines, per-try timeouts, retry budgets, circuit breakers,
outlier ejections, connect backoffs and health-check rounds all read the
time and wait through one :class:`Clock`, given to the
:class:`~sota_dispatch.proxy.Proxy` (default: :data:`SYSTEM_CLOCK`, anyio's
monotonic clock). A test passes a
:class:`~sota_dispatch.testing.ManualClock` instead and moves time itself:
"the breaker's open timeout passes" becomes a call, not a sleep, and the
test neither waits nor depends on the machine's speed.

Read-level timeouts of a connection (frame, idle, linger) stay on anyio's
clock: they guard sockets, not routing decisions.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Protocol

import anyio
import sniffio
from mypy_extensions import mypyc_attr

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock", "loop_time"]


class Clock(Protocol):
    """What the proxy needs of time: read it, and wait for a moment."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def wait(self, event: anyio.Event, deadline: float) -> None:
        """Return once ``event`` is set or ``deadline`` (:meth:`now`'s
        scale) has passed, whichever comes first."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``deadline`` has passed."""
        ...


#: Where trio (and any other library sniffio knows) names itself; asyncio leaves it None.
_RUNNING = sniffio.thread_local


def loop_time() -> float:
    """The running event loop's time, on the scale of its cancel-scope
    deadlines, read at full resolution and cheaply (see :class:`SystemClock`):
    what the reader, the multiplexer and the keepalive stamp and time out
    with, several times per read batch. :func:`anyio.current_time` looks the
    backend up on every call: 0.69 us a call on uvloop and 0.51 on trio
    against 0.22 and 0.35 for this (timeit, in a running loop)."""
    name = _RUNNING.name
    if name is None:  # asyncio (trio names itself here)
        return time.monotonic()
    if name == "trio":  # running, so imported: its own call, without anyio's lookup
        current: float = sys.modules["trio"].current_time()
        return current
    return anyio.current_time()


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class SystemClock:
    """The running loop's clock, read at full resolution, and cancel-scope deadlines.

    Under asyncio :meth:`now` is :func:`time.monotonic`, the clock asyncio's
    and uvloop's ``loop.time()`` both count on, read directly: uvloop's
    ``loop.time()`` is in whole milliseconds, cached per loop turn, which
    would make every sub-millisecond duration 0 or 1 ms (a deadline fires
    at most that millisecond late, as uvloop's own timers do). Under trio
    (whose clock has its own offset) it is trio's clock, precise there.
    Both through :func:`loop_time`.
    """

    __slots__ = ()

    def now(self) -> float:
        return loop_time()

    async def wait(self, event: anyio.Event, deadline: float) -> None:
        with anyio.CancelScope(deadline=deadline):
            await event.wait()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)


#: The clock of every proxy not given another.
SYSTEM_CLOCK = SystemClock()


@mypyc_attr(allow_interpreted_subclasses=True)
class ManualClock:
    """A clock that moves only when told to (:meth:`advance`), for tests.

    Waits on it end when their event is set or when :meth:`advance` moves
    the time past their deadline, never on their own: a test drives a
    breaker's open timeout or a health-check round with one call.
    """

    __slots__ = ("_began", "_now", "_sleepers")

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._began: anyio.Event | None = None

    def now(self) -> float:
        return self._now

    async def wait(self, event: anyio.Event, deadline: float) -> None:
        if self._now >= deadline:
            return
        entry = (deadline, event)
        if deadline != math.inf:
            self._sleepers.append(entry)
            if self._began is not None:
                self._began.set()
                self._began = None
        try:
            await event.wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    async def sleep_until(self, deadline: float) -> None:
        await self.wait(anyio.Event(), deadline)

    @property
    def waiting(self) -> int:
        """Waits in progress with a deadline (a test can wait for them to begin)."""
        return len(self._sleepers)

    async def until_waiting(self, count: int = 1) -> None:
        """Return once at least ``count`` waits with a deadline are in
        progress: a test learns that the code under test began to wait
        without polling for it."""
        while len(self._sleepers) < count:
            if self._began is None:
                self._began = anyio.Event()
            await self._began.wait()

    def advance(self, seconds: float) -> None:
        """Move the time forward; waits whose deadline passed end (at their
        tasks' next turn)."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self._now += seconds
        for deadline, event in list(self._sleepers):
            if deadline <= self._now:
                event.set()
