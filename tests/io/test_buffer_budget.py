"""The buffer budget: refuse new large frames under pressure, shed the largest
holders past the budget, stop accepting while still past it."""

from __future__ import annotations

import anyio
import pytest

from sota_dispatch import FrameRefused
from sota_dispatch.proxy import BufferBudget

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def test_a_large_frame_begun_under_pressure_is_refused() -> None:
    budget = BufferBudget(8 * MiB, large_frame=MiB)  # pressure from 6 MiB
    budget.hold("a", 5 * MiB)  # large, begun before the pressure: fine
    budget.hold("b", MiB - 1)
    assert budget.held == 6 * MiB - 1
    budget.hold("c", 512 * 1024)  # small: fine under pressure
    with pytest.raises(FrameRefused):
        budget.hold("b", MiB)  # crosses into large while 6 MiB are held
    assert budget.frames_refused == 1
    assert budget.held == 5 * MiB + 512 * 1024  # b's bytes are released with it
    budget.hold("a", 6 * MiB)  # a frame that was large before goes on
    assert budget.accepting


def test_past_the_budget_the_largest_holders_are_shed() -> None:
    shed: list[object] = []
    budget = BufferBudget(8 * MiB, large_frame=MiB, shed=shed.append)
    for name, size in (("a", 3 * MiB), ("b", 2 * MiB), ("c", 2 * MiB)):
        budget.hold(name, size)
    budget.hold("a", 4 * MiB + 1)  # past 8 MiB
    assert shed == ["a"]  # the largest, until what stays is back at 6 MiB
    assert budget.connections_shed == 1
    budget.hold("b", 2 * MiB + 1)  # a's bytes still count, but a is not shed twice
    assert shed == ["a"]
    budget.release("a")  # a closed: its bytes are free
    assert budget.held == 4 * MiB + 1


async def test_accepting_pauses_while_shed_connections_still_hold_memory() -> None:
    shed: list[object] = []
    budget = BufferBudget(8 * MiB, large_frame=MiB, shed=shed.append)
    budget.hold("a", 4 * MiB)
    budget.hold("b", 3 * MiB)
    assert budget.accepting
    budget.hold("a", 6 * MiB)  # 9 MiB: a is shed, and closes later
    assert shed == ["a"]
    assert not budget.accepting  # its 6 MiB are not free yet
    waited = anyio.Event()

    async def listener() -> None:
        await budget.wait_for_room()
        waited.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener)
        await anyio.wait_all_tasks_blocked()
        assert not waited.is_set()
        budget.release("a")  # a closed: accepting again
        with anyio.fail_after(5):
            await waited.wait()
    assert budget.accept_pauses == 1


async def test_past_the_budget_connections_that_grew_wait_until_it_holds_again() -> None:
    # Without this the others read on while the shed ones close: the peak
    # was the budget plus however fast they read meanwhile.
    shed: list[object] = []
    budget = BufferBudget(8 * MiB, large_frame=MiB, shed=shed.append)
    budget.hold("a", 5 * MiB)
    budget.hold("b", 3 * MiB)
    await budget.wait_to_grow()  # 8 MiB is the budget, not past it: no wait
    assert budget.read_pauses == 0
    budget.hold("a", 6 * MiB)  # 9 MiB: a is shed and closes later
    assert shed == ["a"]

    async def grown(done: anyio.Event) -> None:
        await budget.wait_to_grow()
        done.set()

    b_done, c_done = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(grown, b_done)
        tg.start_soon(grown, c_done)
        await anyio.wait_all_tasks_blocked()
        assert not b_done.is_set()
        assert not c_done.is_set()
        budget.hold("b", 2 * MiB)  # b forwarded a frame: 8 MiB, within again
        with anyio.fail_after(0.5):  # woken by that, not by the once-a-second re-check
            await b_done.wait()
            await c_done.wait()
    assert budget.read_pauses == 2

    budget.hold("b", 4 * MiB)  # past it again (a counts until it has closed)
    again = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(grown, again)
        await anyio.wait_all_tasks_blocked()
        assert not again.is_set()
        budget.release("a")  # a closed
        with anyio.fail_after(0.5):
            await again.wait()
    assert budget.read_pauses == 3


def test_a_bad_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        BufferBudget(0)
    with pytest.raises(ValueError, match="refuse_ratio"):
        BufferBudget(MiB, refuse_ratio=1.5)
