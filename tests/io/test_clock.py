"""The injected clock: a ManualClock moves only when told, and the proxy's
timer queue fires on it; the system clock waits on anyio's."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from sota_dispatch import Clock
from sota_dispatch.io.clock import SYSTEM_CLOCK
from sota_dispatch.proxy.timers import TimerQueue
from sota_dispatch.testing import ManualClock

pytestmark = pytest.mark.anyio


class Target:
    def __init__(self) -> None:
        self.fired: list[int] = []
        self.event = anyio.Event()

    def timer_fired(self, tag: int) -> None:
        self.fired.append(tag)
        self.event.set()

    def timer_live(self, tag: int) -> bool:
        return True


async def test_a_manual_clock_ends_a_wait_only_when_advanced_past_its_deadline() -> None:
    clock: Clock = ManualClock(start=10.0)
    assert isinstance(clock, ManualClock)
    done = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep_until(15.0)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        with anyio.fail_after(5):
            while not clock.waiting:
                await anyio.lowlevel.checkpoint()
        clock.advance(4.9)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert not done.is_set()  # 14.9 < 15
        clock.advance(0.1)
        with anyio.fail_after(5):
            await done.wait()
    assert clock.now() == 15.0
    assert clock.waiting == 0
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


async def test_the_timer_queue_fires_on_the_clock_it_was_given() -> None:
    clock = ManualClock()
    timers = TimerQueue(clock)
    early, late = Target(), Target()
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        timers.call_at(clock.now() + 30, late, 2)
        timers.call_at(clock.now() + 5, early, 1)
        clock.advance(5)
        with anyio.fail_after(5):
            await early.event.wait()
        assert (early.fired, late.fired) == ([1], [])  # 30 s had not passed
        clock.advance(25)
        with anyio.fail_after(5):
            await late.event.wait()
        tg.cancel_scope.cancel()
    assert late.fired == [2]


async def test_the_system_clock_waits_for_the_event_or_the_deadline() -> None:
    event = anyio.Event()
    start = SYSTEM_CLOCK.now()
    await SYSTEM_CLOCK.wait(event, start + 0.05)  # the deadline ends it
    assert SYSTEM_CLOCK.now() >= start + 0.05
    event.set()
    with anyio.fail_after(5):
        await SYSTEM_CLOCK.wait(event, start + 3600)  # the event ends it at once


async def test_the_system_clock_measures_below_a_millisecond() -> None:
    # uvloop's loop.time() moves in whole milliseconds, once per loop turn:
    # a 0.3 ms span measured with it reads 0 or 1 ms, so the latency
    # histograms' sub-millisecond buckets would never fill.
    spans = []
    for _ in range(5):
        start = SYSTEM_CLOCK.now()
        began = time.perf_counter()
        while time.perf_counter() - began < 0.0003:
            pass
        spans.append(SYSTEM_CLOCK.now() - start)
    assert all(0.0003 <= span < 0.5 for span in spans), spans
    assert any(round(span * 1000, 6) % 1 for span in spans), spans  # not all whole milliseconds
