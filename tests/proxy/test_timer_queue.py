"""The proxy's timer queue: one heap entry per deadline (a bucket of
targets), targets that leave their bucket when done, and a heap that
memory-wise follows the timers pending, not the rate they were set at."""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest

from sota_dispatch.proxy import timers as timers_module
from sota_dispatch.proxy.timers import TimerBucket, TimerQueue
from sota_dispatch.testing import ManualClock, build_spelling

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, params=["lists", "dict"])
def bucket_spelling(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test with each spelling of a bucket: ``lists`` by slot (the
    compiled build's) and ``dict`` (the interpreter's). The pure-Python
    build runs either; a compiled module runs its own only (skipped)."""
    with build_spelling(timers_module, request.param == "lists"):
        yield


def test_each_build_takes_its_own_spelling() -> None:
    from sota_dispatch.compiled import build_info

    compiled = "sota_dispatch.proxy.timers" in build_info().compiled
    assert isinstance(timers_module._probe, types.FunctionType) is not compiled


class Target:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self.fired: list[int] = []
        self.live = True
        self.event = anyio.Event()

    def timer_fired(self, tag: int) -> None:
        self.fired.append(tag)
        self.event.set()

    def timer_live(self, tag: int) -> bool:
        return self.live


async def fire(timers: TimerQueue, clock: ManualClock, seconds: float, *targets: Target) -> None:
    """Run the queue, move the clock ``seconds`` on, and wait until each of
    ``targets`` has fired."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        clock.advance(seconds)
        with anyio.fail_after(5):
            for target in targets:
                await target.event.wait()
        tg.cancel_scope.cancel()


async def settle() -> None:
    """Let the timer task run what is due (it runs at the next checkpoints)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


async def test_targets_of_one_deadline_share_a_bucket_and_fire_together() -> None:
    clock = ManualClock(start=100.0)
    timers = TimerQueue(clock)
    targets = [Target(str(i)) for i in range(100)]
    buckets = {id(timers.call_at(105.0, target, 0)[0]) for target in targets}
    assert len(buckets) == 1  # one heap entry for the whole batch
    other = Target("later")
    assert id(timers.call_at(106.0, other, 0)[0]) not in buckets
    assert len(timers) == 101
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        clock.advance(5)
        with anyio.fail_after(5):
            for target in targets:
                await target.event.wait()
        assert all(target.fired == [0] for target in targets)
        assert other.fired == []
        clock.advance(1)
        with anyio.fail_after(5):
            await other.event.wait()
        tg.cancel_scope.cancel()
    assert len(timers) == 0


async def test_a_target_that_left_its_bucket_is_neither_fired_nor_kept_alive() -> None:
    clock = ManualClock(start=0.0)
    timers = TimerQueue(clock)
    gone, stays = Target("gone"), Target("stays")
    bucket, slot = timers.call_at(60.0, gone, 0)
    timers.call_at(60.0, stays, 0)
    ref = weakref.ref(gone)
    bucket.leave(slot, gone)
    del gone
    gc.collect()
    assert ref() is None  # a finished request is freed now, not at its deadline
    assert len(timers) == 1
    await fire(timers, clock, 60, stays)


def test_an_emptied_bucket_gives_its_table_back_before_its_deadline() -> None:
    # A read batch of 1,000 requests with a minute's timeout: once all are
    # answered, their bucket waits in the heap for the minute; it must not
    # hold the table it grew to meanwhile.
    timers = TimerQueue(ManualClock(start=0.0))
    targets = [Target() for _ in range(1000)]
    bucket, first = timers.call_at(60.0, targets[0], 0)
    slots = [first]
    for target in targets[1:]:
        joined, slot = timers.call_at(60.0, target, 0)
        assert joined is bucket
        slots.append(slot)

    def size() -> int:
        return sys.getsizeof(bucket._targets) + sys.getsizeof(bucket._tags) + sys.getsizeof(bucket._by)

    full = size()
    for slot, target in zip(slots[:-1], targets[:-1], strict=True):
        bucket.leave(slot, target)
    assert size() == full  # the slots stay as it empties ...
    assert len(timers) == 1
    bucket.leave(slots[-1], targets[-1])
    assert size() < full / 10  # ... the last one out gives them back
    bucket.leave(slots[-1], targets[-1])  # twice: nothing
    bucket.leave(slots[0], targets[-1])  # a slot of someone else's: nothing
    assert len(timers) == 0
    assert len(bucket) == 0


async def test_a_dead_tag_is_skipped() -> None:
    clock = ManualClock()
    timers = TimerQueue(clock)
    target = Target()
    target.live = False  # say, a try that ended without leaving its bucket
    timers.call_at(clock.now() + 1, target, 3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        clock.advance(1)
        await settle()
        tg.cancel_scope.cancel()
    assert target.fired == []
    assert len(timers) == 0


async def test_a_deadline_set_again_after_its_bucket_fired_fires_too() -> None:
    # The bucket of a deadline is reused while it is the newest; once it has
    # fired, a timer for the same instant must get a bucket of its own.
    clock = ManualClock(start=0.0)
    timers = TimerQueue(clock)
    first, second = Target("first"), Target("second")
    timers.call_at(1.0, first, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        clock.advance(1)
        with anyio.fail_after(5):
            await first.event.wait()
        timers.call_at(1.0, second, 0)  # already due
        with anyio.fail_after(5):
            await second.event.wait()
        tg.cancel_scope.cancel()


async def test_a_callback_may_take_itself_and_others_out_of_the_firing_bucket() -> None:
    clock = ManualClock(start=0.0)
    timers = TimerQueue(clock)
    quiet = Target("quiet")
    bucket, quiet_slot = timers.call_at(1.0, quiet, 0)

    class Leaver(Target):
        def timer_fired(self, tag: int) -> None:
            bucket.leave(leaver_slot, self)  # as a finishing exchange does
            bucket.leave(quiet_slot, quiet)
            super().timer_fired(tag)

    leaver = Leaver("leaver")
    leaver_slot = timers.call_at(1.0, leaver, 0)[1]
    await fire(timers, clock, 1, leaver, quiet)  # quiet was due: it fires, whatever the others do


def test_a_timer_set_as_the_heap_is_rebuilt_is_kept() -> None:
    # The rebuild runs as a new deadline's bucket is pushed: that bucket is
    # still empty then, and must not be dropped as a dead one.
    timers = TimerQueue(ManualClock(start=0.0))
    previous: tuple[TimerBucket, int, Target] | None = None
    rebuilds = 0
    for i in range(4 * timers.compact_floor):
        target = Target()
        before = len(timers._heap)
        bucket, slot = timers.call_at(60.0 + i / 1000, target, 0)
        if len(timers._heap) < before:
            rebuilds += 1
            assert any(entry[2] is bucket for entry in timers._heap)
        if previous is not None:
            previous[0].leave(previous[1], previous[2])  # done: one request pending at a time
        previous = (bucket, slot, target)
    assert rebuilds >= 3
    assert len(timers) == 1


async def test_the_heap_follows_the_pending_timers_not_the_rate() -> None:
    # 20,000 requests, each in a batch of its own and done before the next:
    # 20,000 deadlines set, one pending at a time.
    clock = ManualClock(start=0.0)
    timers = TimerQueue(clock)
    last = Target()
    for i in range(20_000):
        target = Target()
        bucket, slot = timers.call_at(60.0 + i / 1000, target, 0)
        bucket.leave(slot, target)
    bucket, slot = timers.call_at(61.0, last, 0)  # an existing deadline: it joins that bucket
    assert len(timers) == 1
    assert len(timers._heap) <= 2 * timers.compact_floor  # not 20,000
    bucket.leave(slot, last)
    # The newest bucket was emptied; if a rebuild drops it, a timer set for
    # its deadline must still fire.
    for i in range(3 * timers.compact_floor):
        target = Target()
        bucket, slot = timers.call_at(70.0 + i / 1000, target, 0)
        bucket.leave(slot, target)
    late = Target("late")
    timers.call_at(70.0 + (3 * timers.compact_floor - 1) / 1000, late, 0)
    await fire(timers, clock, 80, late)
    assert len(timers._heap) == 0
