"""The per-request paths' queue: :class:`Fifo` does what ``deque`` does for
every operation they use, and each build takes its own spelling."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sota_dispatch.compiled import build_info
from sota_dispatch.protocol import fifo
from sota_dispatch.protocol.fifo import Fifo, new_fifo

#: (operation, argument): appends outnumber the rest, so the queue grows
#: past the slack at which popped slots are cut back.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 9)),
        st.tuples(st.just("append"), st.integers(0, 9)),
        st.tuples(st.just("popleft"), st.none()),
        st.tuples(st.just("get"), st.integers(-3, 3)),
        st.tuples(st.just("set"), st.integers(-3, 3)),
        st.tuples(st.just("index"), st.integers(0, 9)),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=300,
)


def apply(queue: Any, operation: str, argument: int | None) -> object:
    """One operation on ``queue``: what it returned, or the kind of error."""
    try:
        if operation == "append":
            queue.append(argument)
            return None
        if operation == "popleft":
            return queue.popleft()
        if operation == "get":
            return queue[argument]
        if operation == "set":
            queue[argument] = 100
            return None
        if operation == "index":
            return queue.index(argument)
        queue.clear()
        return None
    except (IndexError, ValueError) as error:
        return type(error)


@given(operations)
def test_a_fifo_does_what_a_deque_does(steps: list[tuple[str, int | None]]) -> None:
    ours: Fifo[int] = Fifo()
    model: deque[int] = deque()
    for operation, argument in steps:
        assert apply(ours, operation, argument) == apply(model, operation, argument), (operation, argument)
        assert len(ours) == len(model)
        assert bool(ours) == bool(model)
        assert list(ours) == list(model)


def test_a_popped_item_is_no_longer_referenced() -> None:
    queue: Fifo[object] = Fifo()
    kept = [object() for _ in range(100)]
    for item in kept:
        queue.append(item)
    for item in kept[:70]:
        assert queue.popleft() is item
    assert all(slot is None or slot in kept[70:] for slot in queue._items)
    assert list(queue) == kept[70:]


def test_each_build_takes_its_own_spelling() -> None:
    compiled = "sota_dispatch.protocol.fifo" in build_info().compiled
    assert fifo._COMPILED is compiled
    assert type(new_fifo()) is (Fifo if compiled else deque)


def test_an_empty_fifo_says_so() -> None:
    queue: Fifo[int] = Fifo()
    with pytest.raises(IndexError):
        queue.popleft()
    with pytest.raises(IndexError):
        queue[0]
    with pytest.raises(ValueError, match="not in"):
        queue.index(1)
