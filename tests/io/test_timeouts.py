"""The reader's alarm: one lazily set timer per connection in place of a
cancel scope and a timer per wait (sota_dispatch.io.timeouts).

The timer logic is checked against a scheduler that records what it is
asked (deterministic: no time passes); the waits it ends, over real TCP on
every backend, by the reader tests here and the server guard tests
(tests/protocol/test_server_guards.py)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketStream

from sota_dispatch import BufferedReader, FrameTimeout, ReadTimeouts
from sota_dispatch.io.timeouts import InputAlarm
from sota_dispatch.io.transport import input_alarm, input_queued
from sota_dispatch.testing import tcp_stream_pair


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """``call_at`` that records each timer; :meth:`ring` runs the live one."""

    def __init__(self) -> None:
        self.made: list[Timer] = []

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self.made.append(timer)
        return timer

    def live(self) -> list[Timer]:
        return [t for t in self.made if not t.cancelled and t.callback is not None]

    def ring(self) -> None:
        (timer,) = self.live()
        callback, timer.callback = timer.callback, None  # type: ignore[assignment]
        callback()


def alarm() -> tuple[InputAlarm, Timers, list[int]]:
    timers, woken = Timers(), []
    return InputAlarm(timers.call_at, lambda: woken.append(1)), timers, woken


def test_a_deadline_that_moves_later_costs_no_timer() -> None:
    a, timers, _ = alarm()
    now = time.monotonic()
    a.expect(math.inf)
    assert timers.made == []  # no deadline: no timer
    for i in range(1, 100):
        a.expect(now + 10 + i)  # each read's deadline, later and later
    assert len(timers.made) == 1
    assert timers.made[0].when == now + 11


def test_an_earlier_deadline_sets_the_timer_again() -> None:
    a, timers, _ = alarm()
    now = time.monotonic()
    a.expect(now + 3600)  # idle
    a.expect(now + 30)  # a frame begun: its timeout is sooner
    assert [t.when for t in timers.made] == [now + 3600, now + 30]
    assert timers.made[0].cancelled
    assert not timers.made[1].cancelled


def test_a_ring_before_the_deadline_sets_it_again_and_wakes_nobody() -> None:
    a, timers, woken = alarm()
    now = time.monotonic()
    a.expect(now + 50)
    a.expect(now + 100)  # moved on: the timer still rings at +50
    a.waiting = True
    timers.ring()
    assert woken == []
    assert not a.fired
    assert [t.when for t in timers.live()] == [now + 100]


def test_a_ring_at_the_deadline_ends_the_wait() -> None:
    a, timers, woken = alarm()
    a.expect(time.monotonic() - 1)
    a.waiting = True
    timers.ring()
    assert woken == [1]
    assert a.fired
    assert timers.live() == []


def test_a_ring_between_waits_does_nothing_and_the_next_wait_sets_it_again() -> None:
    a, timers, woken = alarm()
    a.expect(time.monotonic() - 1)
    timers.ring()  # not waiting: the connection is busy with what it read
    assert woken == []
    assert timers.live() == []
    a.expect(time.monotonic() + 5)
    assert len(timers.live()) == 1


def test_close_cancels_the_timer() -> None:
    a, timers, _ = alarm()
    a.expect(time.monotonic() + 5)
    a.close()
    assert timers.live() == []
    a.expect(time.monotonic() + 5)  # a wait after close (none should come) still works
    assert len(timers.live()) == 1


@pytest.mark.anyio
async def test_anyio_asyncio_sockets_get_an_alarm_and_trio_ones_the_scope(anyio_backend_name: str) -> None:
    # If anyio's internals change, the reader falls back to a scope per
    # wait: correct, but ~25 % more work per request at one in flight. This
    # says so.
    async with tcp_stream_pair() as (near, _):
        made = input_alarm(near)
        assert (made is not None) == (anyio_backend_name == "asyncio")


@contextlib.asynccontextmanager
async def timed_reader(timeouts: ReadTimeouts) -> AsyncIterator[tuple[BufferedReader, SocketStream]]:
    """A reader under ``timeouts`` on one end of a TCP pair, and the other end."""
    async with tcp_stream_pair() as (near, far):
        reader = BufferedReader(near)
        reader.set_timeouts(timeouts)
        yield reader, far


def reader_stream(reader: BufferedReader) -> object:
    """The stream a reader reads (the test's own near end)."""
    return reader._stream


@pytest.mark.anyio
async def test_a_frame_begun_and_never_finished_times_out_from_its_first_byte() -> None:
    async with timed_reader(ReadTimeouts(frame=0.2, idle=30)) as (reader, far):
        with anyio.fail_after(5):
            await far.send(b"ab")
            assert await reader.read_exactly(2) == b"ab"
            await far.send(b"c")  # one byte of two, then nothing
            start = anyio.current_time()
            with pytest.raises(FrameTimeout):
                await reader.read_exactly(2)
            assert anyio.current_time() - start >= 0.15


@pytest.mark.anyio
async def test_the_idle_timeout_runs_from_the_last_input_however_often_it_moved() -> None:
    # Each read moves the idle deadline later; the one timer set at the
    # first read rings while input still comes (set again, it wakes nobody)
    # and the wait ends only once the peer has been silent for the timeout:
    # an orderly end, not an error.
    async with timed_reader(ReadTimeouts(frame=5, idle=0.3)) as (reader, far):
        with anyio.fail_after(10):
            for _ in range(12):  # 0.6 s of input: twice the idle timeout
                await far.send(b"x")
                assert await reader.read_exactly(1) == b"x"
                await anyio.sleep(0.05)
            last = anyio.current_time()
            with pytest.raises(anyio.EndOfStream):
                await reader.read_exactly(1)
            assert anyio.current_time() - last >= 0.25


@pytest.mark.anyio
async def test_input_that_arrived_before_an_interrupt_is_read_and_the_wait_is_not_interrupted(
    anyio_backend_name: str,
) -> None:
    # The race only the alarm has: the peer's bytes are in the stream's
    # queue (its read event set) and the reader's task has not run yet when
    # a drain interrupts the wait. The bytes are read (the drain stops after
    # them), and the wait does not count as interrupted: that would skip the
    # lingering close that protects the answers to them.
    if anyio_backend_name != "asyncio":
        pytest.skip("trio has no read event: its waits end by their cancel scope")
    async with timed_reader(ReadTimeouts(frame=5, idle=30)) as (reader, far):
        queued = input_queued(reader_stream(reader))
        assert queued is not None
        got: list[bytes] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    got.append(await reader.read_exactly(1))

                tg.start_soon(read)
                await anyio.wait_all_tasks_blocked()
                assert reader.idle
                await far.send(b"x")
                # One loop turn at a time (no event marks the bytes landing):
                # in the turn they land, this task runs before the reader's.
                while not queued():
                    await anyio.lowlevel.checkpoint()
                assert reader.interrupt()
        assert got == [b"x"]
        assert not reader.interrupted
