"""ZMTP's per-message proxy semantics as plain functions, made static
methods of :class:`~sota_zmtp.ZmtpDispatcher`.

Compiled in the compiled build: the proxy calls them for every message (as
classmethods of the interpreted dispatcher class each call cost ~1.1k
instructions there). A message has no id of its own: the proxy sends
``[id, *message]`` upstream, ``id`` a 4-byte big-endian frame, and strips
it from the answer.

A long last part is handed on as it was decoded, behind its header as a
piece of its own (a list: see :data:`sota_dispatch.Encoded`): copying a
1 KiB part behind a header cost a ``malloc``, a ``memmove`` and a ``free`` of
glibc's per message and direction, about 5 % of a broker's CPU at 1 KiB.
"""

from __future__ import annotations

import types
from typing import Final

from mypy_extensions import i64

from sota_dispatch import PIECE_FROM, Encoded

from .wire import _SHORT, _SHORT_MORE, MORE, append_frames, last_header

__all__ = ["encode_request", "encode_response", "response_id"]


def _probe() -> None:
    """Only its type is looked at: see ``_COMPILED``."""


#: Whether this module runs compiled (mypyc makes its functions built-in
#: ones). :func:`response_id` has two spellings: ``int.from_bytes`` in the
#: interpreter, byte arithmetic on machine ints when compiled, where
#: ``int.from_bytes`` is a generic call (~1k instructions, once per answer).
_COMPILED: Final = not isinstance(_probe, types.FunctionType)
#: The id frame's header (flags MORE, size 4), in front of the id in one int.
_ID_HEADER: Final = 0x0104


def encode_request(frame: list[bytes], upstream_id: int) -> Encoded:
    """The message for upstream, behind a frame holding ``upstream_id``."""
    if not 0 <= upstream_id <= 0xFFFFFFFF:
        raise OverflowError(f"id {upstream_id} does not fit the 4-byte id frame")
    # The id frame, header and id, as one int: one to_bytes.
    head = _ID_HEADER << 32 | upstream_id
    count = len(frame)
    if count == 1:
        part = frame[0]
        size = len(part)
        if size < 256:  # one short part: its header joins the int
            return (head << 16 | size).to_bytes(8, "big") + part
        # One long part: the id frame, then the part's header as answers
        # get it (last_header: tables under 64 KiB, no int past 64 bits).
        header = head.to_bytes(6, "big") + last_header(size)
        return [header, part] if size >= PIECE_FROM else header + part
    if count == 2:  # a REQ's delimiter or a DEALER's id, and a body
        first = frame[0]
        size = len(first)
        if size < 256:  # the id frame and the first part's header in one int
            second = frame[1]
            size2 = len(second)
            # A short part's header from the table here: one call fewer for
            # the interpreter, which calls last_header for a long one.
            header = _SHORT[size2] if size2 < 256 else last_header(size2)
            if size2 >= PIECE_FROM:
                return [(head << 16 | MORE << 8 | size).to_bytes(8, "big") + first + header, second]
            return (head << 16 | MORE << 8 | size).to_bytes(8, "big") + first + header + second
    if not count:
        raise ValueError("a message has at least one part")
    out = [head.to_bytes(6, "big")]
    append_frames(out, frame)
    return b"".join(out)


def response_id(frame: list[bytes]) -> int | None:
    """The id frame the answer carries in front; None without one."""
    if not frame:
        return None
    first = frame[0]
    if len(first) != 4:
        return None
    if _COMPILED:
        return i64(first[0]) << 24 | i64(first[1]) << 16 | i64(first[2]) << 8 | i64(first[3])
    return int.from_bytes(first, "big")


def encode_response(response: list[bytes], request: list[bytes]) -> Encoded:
    """The answer for the client: without the id frame in front."""
    count = len(response)
    if count == 2:  # the id and a one-part answer
        part = response[1]
        size = len(part)
        if size >= PIECE_FROM:
            return [last_header(size), part]
        # encode_part's two spellings inline: its length is known here.
        return _SHORT[size] + part if size < 256 else last_header(size) + part
    if count == 3:  # the id and a two-part answer (a REP's delimiter and body)
        first = response[1]
        size = len(first)
        if size < 256:
            second = response[2]
            size2 = len(second)
            header = _SHORT[size2] if size2 < 256 else last_header(size2)
            if size2 >= PIECE_FROM:
                return [_SHORT_MORE[size] + first + header, second]
            return _SHORT_MORE[size] + first + header + second
    elif count < 2:
        raise ValueError("a message has at least one part")
    out: list[bytes] = []
    append_frames(out, response, 1)  # from the part after the id: no list copied
    return b"".join(out)
