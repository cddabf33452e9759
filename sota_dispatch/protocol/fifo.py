"""A first-in first-out queue for the per-request paths, picked by the build.

An ordered client's replies and a pool's in-order requests go through a
queue twice per request (in, and out). ``collections.deque`` is the
interpreter's fastest, but the compiled build has no native calls for it:
each ``append``/``popleft``/``[0]`` was a method looked up by name, four
per query-line request (with :class:`Fifo` the compiled proxy runs 0.97x
the instructions per query line). :class:`Fifo` is the same operations on
a list and a head index, native calls once compiled and slower than
``deque`` interpreted, so :func:`new_fifo` gives a ``deque`` to the
interpreter and a :class:`Fifo` to compiled code. Callers use only what
both have.
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Iterator
from typing import Final, Generic, TypeVar, cast

__all__ = ["Fifo", "new_fifo"]

T = TypeVar("T")

#: Popped slots kept before the list is cut back (amortises the cut).
_SLACK: Final = 32


class Fifo(Generic[T]):
    """``append`` at the tail, ``popleft`` at the head, ``[i]`` counted from
    the head, ``index``, ``len``, iteration, ``clear``: the part of
    ``deque``'s interface the per-request paths use.

    Popped slots are cleared at once (the queue keeps no reference to what
    left it) and the list is cut back once they are half of it.
    """

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[T | None] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def __iter__(self) -> Iterator[T]:
        items = self._items
        for i in range(self._head, len(items)):
            yield cast(T, items[i])

    def append(self, item: T) -> None:
        self._items.append(item)

    def popleft(self) -> T:
        items, head = self._items, self._head
        if head >= len(items):
            raise IndexError("pop from an empty Fifo")
        item = items[head]
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= _SLACK and head * 2 >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return cast(T, item)

    def __getitem__(self, index: int) -> T:
        return cast(T, self._items[self._position(index)])

    def __setitem__(self, index: int, item: T) -> None:
        self._items[self._position(index)] = item

    def index(self, item: T) -> int:
        """The position of ``item`` (compared by ``==``) from the head."""
        items = self._items
        for i in range(self._head, len(items)):
            if items[i] == item:
                return i - self._head
        raise ValueError("not in the Fifo")

    def clear(self) -> None:
        self._items.clear()
        self._head = 0

    def _position(self, index: int) -> int:
        size = len(self._items) - self._head
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("Fifo index out of range")
        return self._head + index


def _probe() -> None:
    """Compiled, this is a built-in function: how the module knows its build."""


_COMPILED: Final = not isinstance(_probe, types.FunctionType)


def new_fifo() -> Fifo[T]:
    """An empty queue: a :class:`Fifo` where this module is compiled, a
    ``deque`` (the same operations, at C speed) where it is interpreted."""
    if _COMPILED:
        return Fifo()
    return cast(Fifo[T], deque())
