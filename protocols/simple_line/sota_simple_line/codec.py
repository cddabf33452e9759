"""The sans-I/O line codec of simple_line, for both sides of a connection.

Lines pass through as they are, line ending included: the proxy forwards
them without re-encoding.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Final

from mypy_extensions import i64, mypyc_attr

from sota_dispatch import LimitExceeded

from .query import render_error

__all__ = ["LineCodec"]

#: How many bytes :func:`_line_end` walks before it calls ``bytes.find``.
_WALK: Final = 128


def _line_end(buf: bytes, start: int) -> int:
    """``buf.find(b"\\n", start)``, the first :data:`_WALK` bytes walked one
    by one: compiled, a ``find`` call costs ~1,000 instructions (its
    arguments parsed on every call), twice per proxied request, where a
    query line of 40 bytes is walked in ~250. A longer line gets ``find``
    after the walk. The interpreter calls ``find`` (see ``_COMPILED``)."""
    size: i64 = len(buf)
    i: i64 = start
    stop: i64 = i + _WALK
    if stop > size:
        stop = size
    while i < stop:
        if buf[i] == 10:
            return i
        i += 1
    if stop == size:
        return -1
    return buf.find(b"\n", stop)


#: Whether this module runs compiled (mypyc makes its functions built-in ones).
_COMPILED: Final = not isinstance(_line_end, types.FunctionType)


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class LineCodec:
    """Split input into lines of at most ``max_line`` bytes (without the
    ending); each frame is the raw line with its ``\\n`` or ``\\r\\n``.

    An over-long line queues an ``error:`` line in :meth:`data_to_send`
    (when ``answer_errors``) and raises :class:`~sota_dispatch.LimitExceeded`,
    as soon as the limit is passed, without buffering the rest; the lines
    before it in the same input are returned first, and the error is raised
    by :meth:`check` (or the next :meth:`feed`).
    """

    ready = True
    #: Its connection can move to another process between frames (hot restart hand-off).
    movable = True

    def __init__(self, max_line: int, *, answer_errors: bool = True) -> None:
        self.max_line = max_line
        self.answer_errors = answer_errors
        self._rest = b""
        self._out = b""
        self.pending_error: LimitExceeded | None = None
        self._answered = False

    def check(self) -> None:
        """Raise the error found after the lines handed out, if any (the
        ``error:`` line is queued then, after the answers to those lines)."""
        error = self.pending_error
        if error is not None:
            if self.answer_errors and not self._answered:
                self._answered = True
                self._out += render_error(f"line too long (limit {self.max_line} bytes)")
            raise error

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def handoff_state(self) -> dict[str, object] | None:
        """Nothing to carry to another process between lines (hot restart
        hand-off); None after an error."""
        return None if self.pending_error is not None or self._out else {}

    def restore_handoff(self, state: Mapping[str, object]) -> None:
        """A new codec is already where a handed-over one was."""

    @property
    def buffered(self) -> int:
        """Bytes of a line whose end has not arrived yet."""
        return len(self._rest)

    def feed(self, data: bytes) -> list[bytes]:
        self.check()
        frames: list[bytes] = []
        pos = 0
        rest = self._rest
        if rest:
            # A line begun in an earlier feed ends in the head of ``data``:
            # only that line is copied, not the whole read (with pipelined
            # requests nearly every read ends inside a line).
            end = _line_end(data, 0) if _COMPILED else data.find(b"\n")
            if end < 0:
                rest += data
                if len(rest) > self.max_line + 1:  # room for the \r of a \r\n
                    return self._fail(frames)
                self._rest = rest
                return frames
            if self._lines(rest + data[: end + 1], frames) < 0:
                return self._fail(frames)
            pos = end + 1
        pos = self._lines(data, frames, pos)
        if pos < 0:
            return self._fail(frames)
        rest = data[pos:] if pos else data
        if len(rest) > self.max_line + 1:  # room for the \r of a \r\n
            return self._fail(frames)
        self._rest = rest
        return frames

    def _lines(self, buf: bytes, frames: list[bytes], pos: int = 0) -> int:
        """Append the lines of ``buf`` from ``pos`` to ``frames``; return
        where the unfinished one starts, or -1 at a line over the limit."""
        max_line = self.max_line
        find = buf.find
        while True:
            end = _line_end(buf, pos) if _COMPILED else find(b"\n", pos)
            if end < 0:
                return pos
            size = end - pos  # the line without its \n
            if size > max_line and not (size == max_line + 1 and buf[end - 1] == 0x0D):
                return -1
            frames.append(buf[pos : end + 1])
            pos = end + 1

    def _fail(self, frames: list[bytes]) -> list[bytes]:
        self._rest = b""
        self.pending_error = LimitExceeded("request line", self.max_line)
        if not frames:
            self.check()
        return frames  # the good lines first
