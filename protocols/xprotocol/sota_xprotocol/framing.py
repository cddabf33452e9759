"""The streaming half shared by the bolt and dubbo decoders.

Bytes arrive in chunks of any size; frames are length-prefixed. The
decoder keeps the chunks of an unfinished frame in a
:class:`~sota_dispatch.ChunkBuffer`, joined only once enough has arrived
for the frame (so a large frame costs one copy, not one per chunk), and hands out the frames that preceded bad bytes
before raising for the bad bytes, so the requests that were fine get their
answers before the connection closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from mypy_extensions import mypyc_attr

from sota_dispatch import ChunkBuffer, ProtocolError

__all__ = ["FrameDecoder", "fields_repr"]

F = TypeVar("F")


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class FrameDecoder(Generic[F]):
    """Feed bytes, get frames. Subclasses implement :meth:`_frame`.

    It is also a :class:`~sota_dispatch.ProxyCodec`: bolt and dubbo have no
    handshake (``ready`` at once) and nothing of their own to send.
    """

    ready = True
    #: Its connection can move to another process between frames (hot restart hand-off).
    movable = True

    def __init__(self, *, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = ChunkBuffer()
        self._need = 1
        #: The size of the frame :meth:`_frame` last returned.
        self._size = 0
        #: An error found after frames that came before it in the same feed;
        #: :meth:`feed` raises it next time (or call :meth:`check`).
        self.pending_error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet part of a complete frame."""
        return len(self._buffer)

    def check(self) -> None:
        """Raise the error found after the last frames handed out, if any."""
        if self.pending_error is not None:
            raise self.pending_error

    def data_to_send(self) -> bytes:
        """Always empty: the codec never speaks on its own."""
        return b""

    def handoff_state(self) -> dict[str, object] | None:
        """Nothing to carry to another process between frames (hot restart
        hand-off): bolt and dubbo keep no connection state; None after an error."""
        return None if self.pending_error is not None else {}

    def restore_handoff(self, state: Mapping[str, object]) -> None:
        """A new decoder is already where a handed-over one was."""

    def feed(self, data: bytes) -> list[F]:
        """Parse ``data``; return every frame it completed, in order (a
        frame begun in an earlier feed finished from its head, the rest
        parsed in place: see :meth:`~sota_dispatch.ChunkBuffer.parse`)."""
        self.check()
        frames: list[F] = []
        self.pending_error = self._buffer.parse(data, frames, self._parse, self._needed)
        return frames

    def _needed(self) -> int:
        return self._need

    def _parse(self, work: bytes, pos: int, frames: list[F]) -> int:
        """Append the frames in ``work`` from ``pos`` to ``frames``; return
        where the first unfinished one starts."""
        end = len(work)
        frame = self._frame(work, pos, end)
        while frame is not None:
            frames.append(frame)
            pos += self._size
            frame = self._frame(work, pos, end)
        return pos

    def _frame(self, work: bytes, pos: int, end: int) -> F | None:
        """Decode the frame at ``pos`` and set ``self._size`` to its size; or
        return None after setting ``self._need`` to the bytes it needs from
        ``pos``. (Not a ``(frame, size)`` tuple: compiled, a tuple in an
        optional result is a new object per frame, ~250 instructions.)"""
        raise NotImplementedError


def fields_repr(name: str, value: object, fields: tuple[str, ...]) -> str:
    """``name(field=value, ...)`` of ``value``'s ``fields``: the repr attrs
    gave the plain value classes (frames, ``Call``) that replaced it."""
    shown = ", ".join(f"{field}={getattr(value, field)!r}" for field in fields)
    return f"{name}({shown})"
