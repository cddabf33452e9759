"""``async for data in reader.chunks()``: a reader's input, chunk by chunk.

A plain iterator object, not an async generator, so that leaving the loop
by an exception needs no ``aclosing()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

__all__ = ["ChunkIterator"]


class ChunkIterator:
    """Calls ``read_some()`` for each chunk until a clean end of input."""

    __slots__ = ("_read_some",)

    def __init__(self, read_some: Callable[[], Awaitable[bytes]]) -> None:
        self._read_some = read_some

    def __aiter__(self) -> ChunkIterator:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._read_some()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
