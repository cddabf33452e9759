"""Reading ZMTP frames: the traffic loop and the handshake's single frames.

The writing side is :mod:`~sota_zmtp.wire`: encoders are pure functions.
Reading keeps state from one feed to the next (the parts of a message so
far, how many bytes the next step needs), so it is a class,
:class:`FrameReader`, which the engine owns. The engine decides what a
frame means (a handshake command, a message part); the reader finds where
frames are and refuses bad headers: every size is checked against
:class:`~sota_zmtp.limits.Limits` as soon as its header is read, before
anything is buffered for it.

:meth:`FrameReader.read` is the hot path: one call per feed, every frame
parsed inline in its loop, no call per frame. A command (PING, PONG, ERROR:
rare) stops the loop and waits in :attr:`FrameReader.command` for the
engine, which answers it and calls again, so the reader holds no reference
back to the engine and the order of messages, commands and errors stays the
order on the wire.
"""

from __future__ import annotations

import types
from typing import Final

from mypy_extensions import i64, mypyc_attr

from sota_dispatch import LimitExceeded, ProtocolError

from .limits import HANDSHAKE_FRAME_MAX, Limits
from .wire import COMMAND, LONG, MORE

__all__ = ["V2_RESERVED", "V3_RESERVED", "FrameReader"]

#: Flag bits that must be zero: 3.x has MORE, LONG and COMMAND ...
V3_RESERVED: Final = 0xF8
#: ... and 2.0 has no COMMAND.
V2_RESERVED: Final = 0xFC


def _long_size(work: bytes, at: int) -> int:
    """The 8-byte big-endian size at ``at`` (a LONG frame's), by byte
    arithmetic on machine ints: compiled, ``int.from_bytes`` of a slice is
    a generic call and a new bytes object (~1,000 instructions per frame of
    256 bytes or more). The interpreter keeps ``int.from_bytes``."""
    high: i64 = i64(work[at]) << 24 | i64(work[at + 1]) << 16 | i64(work[at + 2]) << 8 | i64(work[at + 3])
    low: i64 = i64(work[at + 4]) << 24 | i64(work[at + 5]) << 16 | i64(work[at + 6]) << 8 | i64(work[at + 7])
    return int(high) << 32 | int(low)


#: Whether this module runs compiled (mypyc makes its functions built-in ones).
_COMPILED: Final = not isinstance(_long_size, types.FunctionType)


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class FrameReader:
    """Frames out of the bytes the engine was fed, one connection's worth.

    :attr:`need` is how many bytes, from the first unparsed one, the next
    step needs before parsing is worth trying again; the engine sets it
    while it reads the greeting, the reader once frames follow.
    :attr:`reserved` is the flag bits a frame must not set
    (:data:`V3_RESERVED` unless the engine falls back to 2.0).
    :attr:`command` is the body of the command :meth:`read` stopped at, for
    the engine to take (and set back to None) before reading on.
    """

    __slots__ = ("_limits", "_message_size", "_parts", "command", "need", "reserved")

    def __init__(self, limits: Limits, need: int) -> None:
        self.need = need
        self.command: bytes | None = None
        self.reserved = V3_RESERVED
        self._limits = limits
        self._parts: list[bytes] = []
        self._message_size = 0

    @property
    def pending(self) -> int:
        """Bytes (and parts) held of a multipart message not complete yet."""
        return self._message_size + len(self._parts)

    def check(self, flags: int, size: int) -> None:
        """Refuse a header with reserved bits, an oversized frame or a
        command flagged MORE."""
        if flags & self.reserved:
            raise ProtocolError(f"frame flags 0x{flags:02x} set reserved bits")
        if size > self._limits.max_frame_size:
            raise LimitExceeded(f"frame of {size} bytes", self._limits.max_frame_size)
        if flags & COMMAND and flags & MORE:
            raise ProtocolError("a command frame with the MORE flag")

    def read_one(self, work: bytes, pos: int) -> tuple[int, bytes, int] | None:
        """One handshake frame at ``pos``: ``(flags, body, end)``, or None
        until it is complete. At most :data:`~sota_zmtp.limits.HANDSHAKE_FRAME_MAX`
        bytes: nothing larger is buffered for a peer not yet authenticated."""
        avail = len(work) - pos
        if avail < 2:
            self.need = 2
            return None
        flags = work[pos]
        if flags & LONG:
            if avail < 9:
                self.need = 9
                return None
            size = int.from_bytes(work[pos + 1 : pos + 9], "big")
            header = 9
        else:
            size = work[pos + 1]
            header = 2
        self.check(flags, size)
        if size > HANDSHAKE_FRAME_MAX:  # before authentication: no 16 MiB buffers
            raise LimitExceeded(f"handshake frame of {size} bytes", HANDSHAKE_FRAME_MAX)
        end = pos + header + size
        if end > len(work):
            self.need = end - pos
            return None
        return flags, work[pos + header : end], end

    def read(self, work: bytes, pos: int, messages: list[list[bytes]]) -> int:
        """The hot loop: parse every complete frame in ``work`` from ``pos``.

        Completed messages are appended to ``messages``. Returns the bytes
        used: up to the first incomplete frame, or up to and including the
        first command, whose body is then in :attr:`command`.
        """
        end_of_data = len(work)
        limits = self._limits
        max_frame, max_message, max_parts = limits.max_frame_size, limits.max_message_size, limits.max_parts
        reserved = self.reserved
        parts = self._parts
        message_size = self._message_size
        try:
            while True:
                avail = end_of_data - pos
                if avail < 2:
                    self.need = 2
                    break
                flags = work[pos]
                if flags & LONG:
                    if avail < 9:
                        self.need = 9
                        break
                    at = pos + 1
                    size = _long_size(work, at) if _COMPILED else int.from_bytes(work[at : at + 8], "big")
                    start = pos + 9
                else:
                    size = work[pos + 1]
                    start = pos + 2
                if flags & reserved or size > max_frame:
                    self.check(flags, size)
                if message_size + size > max_message and not flags & COMMAND:
                    # On the header, before the frame is buffered.
                    raise LimitExceeded(f"message of {message_size + size}+ bytes", max_message)
                end = start + size
                if end > end_of_data:
                    self.need = end - pos
                    break
                pos = end
                if flags & COMMAND:
                    if flags & MORE:
                        raise ProtocolError("a command frame with the MORE flag")
                    if parts:
                        raise ProtocolError("a command frame inside a multipart message")
                    self.command = work[start:end]
                    break
                parts.append(work[start:end])
                message_size += size
                if not flags & MORE:
                    messages.append(parts)
                    parts = []
                    message_size = 0
                elif len(parts) >= max_parts:
                    raise LimitExceeded(f"message of more than {max_parts} parts", max_parts)
        finally:
            self._parts = parts
            self._message_size = message_size
        return pos
