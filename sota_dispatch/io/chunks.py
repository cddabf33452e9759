"""The unparsed tail of a byte stream, for sans-I/O decoders.

A decoder needs a frame's bytes in one piece to parse it, but joining what
arrived on every feed copies a large frame once per chunk: quadratic. A
:class:`ChunkBuffer` keeps the chunks as they came and joins them only once
the decoder's next frame can be complete: one copy per frame. Small chunks
are merged as they arrive, so a peer dribbling a byte at a time costs a few
KiB of copying per KiB, not a Python object per byte.
"""

from __future__ import annotations

__all__ = ["ChunkBuffer"]

#: Chunks below this size are merged with the one before (bytes objects cost
#: ~33 bytes each, so a buffer of 2-byte reads would cost 17x its data).
MERGE_BELOW = 4096


class ChunkBuffer:
    """Bytes fed and not yet consumed by the decoder that owns the buffer.

    ``take(data, need)`` adds ``data`` and, once at least ``need`` bytes are
    buffered, returns them all as one ``bytes`` for the decoder to parse;
    ``keep(work, pos)`` then keeps what it did not consume.
    """

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def take(self, data: bytes, need: int) -> bytes | None:
        """Add ``data``; return everything buffered, joined, if that is at
        least ``need`` bytes (else None, and nothing is copied but small
        chunks). The bytes stay buffered until :meth:`keep`."""
        chunks = self._chunks
        if data:
            if chunks and len(data) < MERGE_BELOW and len(chunks[-1]) < MERGE_BELOW:
                chunks[-1] = chunks[-1] + data  # a new object: never the caller's, in place
            else:
                chunks.append(data)
            self._size += len(data)
        if self._size < need or not chunks:
            return None
        if len(chunks) == 1:
            return chunks[0]
        work = b"".join(chunks)
        self._chunks = [work]
        return work

    def keep(self, work: bytes, pos: int) -> None:
        """Keep ``work[pos:]``: the decoder consumed ``work[:pos]``."""
        rest = len(work) - pos
        self._chunks = [work[pos:]] if rest else []
        self._size = rest
