"""The unparsed tail of a byte stream, for sans-I/O decoders.

A decoder needs a frame's bytes in one piece to parse it, but joining what
arrived on every feed copies a large frame once per chunk: quadratic. A
:class:`ChunkBuffer` keeps the chunks as they came and joins them only once
the decoder's next frame can be complete: one copy per frame. Small chunks
are merged as they arrive, so a peer dribbling a byte at a time costs a few
KiB of copying per KiB, not a Python object per byte.

A decoder of small frames read in large chunks lets :meth:`ChunkBuffer.parse`
finish the frame a chunk left open (that frame's bytes copied, no more)
and parse the rest of the next chunk where it lies. :meth:`take` joins
what is held with the whole chunk: with pipelined traffic nearly every
chunk ends inside a frame, so every byte received was copied once more,
in a new object as large as the read (up to 256 KiB from uvloop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mypy_extensions import mypyc_attr

from ..errors import ProtocolError

__all__ = ["ChunkBuffer"]

T = TypeVar("T")

#: Chunks below this size are merged with the one before (bytes objects cost
#: ~33 bytes each, so a buffer of 2-byte reads would cost 17x its data).
MERGE_BELOW = 4096


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class ChunkBuffer:
    """Bytes fed and not yet consumed by the decoder that owns the buffer.

    ``take(data, need)`` adds ``data`` and, once at least ``need`` bytes are
    buffered, returns them all as one ``bytes`` for the decoder to parse;
    ``keep(work, pos)`` then keeps what it did not consume. Input may be a
    ``bytearray`` too (copied: see :meth:`add`).
    """

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def take(self, data: bytes | bytearray, need: int) -> bytes | None:
        """Add ``data``; return everything buffered, joined, if that is at
        least ``need`` bytes (else None, and nothing is copied but small
        chunks). The bytes stay buffered until :meth:`keep`."""
        self.add(data)
        chunks = self._chunks
        if self._size < need or not chunks:
            return None
        if len(chunks) == 1:
            return chunks[0]
        work = b"".join(chunks)
        self._chunks = [work]
        return work

    def parse(
        self,
        data: bytes | bytearray,
        out: list[T],
        parse: Callable[[bytes, int, list[T]], int],
        need: Callable[[], int],
        start: int = 0,
    ) -> ProtocolError | None:
        """Parse what is held and ``data[start:]``, copying only a frame
        begun in an earlier read; hold the unfinished tail.

        ``parse(work, pos, out)`` appends the frames in ``work`` from
        ``pos`` to ``out`` and returns where the first unfinished one
        starts; ``need()`` is how many bytes from there it needs next. A
        held frame is finished from ``data``'s head (:meth:`fill`), the rest
        of ``data`` is parsed in place. A :class:`~sota_dispatch.ProtocolError`
        after frames in ``out`` is returned, for the decoder to raise next
        time (the good frames are handed out first); with none, it is raised.
        """
        chunk = data if type(data) is bytes else bytes(data)  # a caller's bytearray: see add()
        pos = start
        held = self._size
        try:
            while held:
                work = self.fill(chunk, pos, need())
                if work is None:
                    return None
                pos += len(work) - held
                self.add(work, parse(work, 0, out))  # held again if a header told its size
                held = self._size
            self.add(chunk, parse(chunk, pos, out))
        except ProtocolError as exc:
            if not out:
                raise
            return exc
        return None

    def fill(self, data: bytes | bytearray, start: int, need: int) -> bytes | None:
        """What is held followed by ``data[start:]`` up to ``need`` bytes
        in all, as one ``bytes``, for the decoder to parse the frame begun
        earlier; the buffer is then empty (the decoder :meth:`add` s back
        what it did not consume). None when that is not enough: then
        ``data[start:]`` is held too. The decoder goes on in ``data`` at
        ``start + len(result) - held``, ``held`` being ``len(buffer)``
        before the call. At least one byte of ``data`` is taken, so a loop
        of calls ends (:meth:`parse` is that loop)."""
        missing = need - self._size
        if missing < 1:
            missing = 1
        if len(data) - start < missing:
            self.add(data, start)
            return None
        head = bytes(data[start : start + missing])
        chunks = self._chunks
        work = chunks[0] + head if len(chunks) == 1 else b"".join([*chunks, head])
        self._chunks = []
        self._size = 0
        return work

    def add(self, data: bytes | bytearray, start: int = 0) -> None:
        """Hold ``data[start:]`` after what is held (the unparsed tail of a
        chunk, or a chunk too short to finish a frame). A caller's
        ``bytearray`` is copied, never held or changed in place: the caller
        may change it after the call, and the decoder's frames are ``bytes``."""
        size = len(data) - start
        if size <= 0:
            return
        held = (data[start:] if start else data) if type(data) is bytes else bytes(data[start:])
        chunks = self._chunks
        if chunks and size < MERGE_BELOW and len(chunks[-1]) < MERGE_BELOW:
            chunks[-1] = chunks[-1] + held  # a new object: never the caller's, in place
        else:
            chunks.append(held)
        self._size += size

    def keep(self, work: bytes | bytearray, pos: int) -> None:
        """Keep ``work[pos:]``: the decoder consumed ``work[:pos]``."""
        rest = len(work) - pos
        tail = work[pos:]
        self._chunks = [tail if type(tail) is bytes else bytes(tail)] if rest else []
        self._size = rest
