"""One attachment of a dubbo call read straight from its hessian2 bytes.

A proxy asks every dubbo request for its ``timeout`` attachment. Decoding
the call for it (:meth:`~sota_xprotocol.DubboFrame.call`: five header
strings and the whole attachment map built, arguments walked) was a third
of the compiled proxy's work per request. :func:`attachment_text` walks the
shape Java's and Python's dubbo clients write instead: header strings,
arguments, then a map whose keys and values are ASCII strings (or null);
keys are compared as bytes and only the value asked for becomes a string.

Anything else (a class definition before a header value, a non-ASCII byte
in a string, a key or value that is not a string, a reference, a malformed
or truncated body) raises :class:`CannotTell`, and the caller decodes the
call as before. So both ways agree on every body: the scan only answers
where decoding would succeed with the same value (a hypothesis test holds
them to it, on calls and on garbage).
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

import sota_xprotocol.hessian2 as hessian2

__all__ = ["CannotTell", "attachment_text"]

#: JVM descriptor letters of primitive types (each one argument), as a
#: table by byte: one index, where a set of ints costs a lookup compiled.
_PRIMITIVE: Final = bytes(1 if chr(byte) in "ZBCSIJFD" else 0 for byte in range(256))
_NULL: Final = 0x4E  # N
_UNTYPED_MAP: Final = 0x48  # H
_TYPED_MAP: Final = 0x4D  # M
_END: Final = 0x5A  # Z


# A short or medium string's head (tag 0x00-0x1F, or 0x30-0x33 and a
# length byte) is read inline in the three walks below, not by a helper:
# a call per value cost the interpreter 8 % of the proxy's instructions per
# dubbo request (measured; nothing compiled).


class CannotTell(Exception):
    """The body is not in the shape the scan reads: decode the call instead."""


def attachment_text(body: bytes, key: bytes) -> str | None:
    """The string value of attachment ``key`` (ASCII bytes) of a dubbo
    call's hessian2 ``body``; None when the call has no such attachment or
    its value is null. Raises :class:`CannotTell` where only decoding the
    call can answer (the caller checked the frame is a hessian2 request)."""
    end: i64 = len(body)
    pos: i64 = 0
    descriptor: i64 = 0  # where the last header string, the descriptor, starts
    for index in range(5):  # dubbo version, path, version (or null), method, descriptor
        if pos >= end:
            raise CannotTell
        tag: i64 = body[pos]
        if tag <= 0x1F:
            descriptor = pos + 1
            pos = descriptor + tag
        elif 0x30 <= tag <= 0x33 and pos + 1 < end:
            descriptor = pos + 2
            pos = descriptor + ((tag - 0x30) << 8) + body[pos + 1]
        elif tag == _NULL and index == 2:
            pos += 1
        else:
            raise CannotTell
    # One check for the whole header: if every byte is ASCII, each string's
    # UTF-16 units are its bytes (so the lengths above were byte counts),
    # and a string with a non-ASCII character fails it (the character's
    # lead byte lies within the units counted).
    if pos > end or not body[:pos].isascii():
        raise CannotTell
    pos = _after_arguments(body, pos, end, _count_arguments(body, descriptor, pos))
    if pos == end:
        return None  # no attachments
    return _map_value(body, pos, end, key)


def _count_arguments(body: bytes, pos: i64, stop: i64) -> i64:
    """:func:`~sota_xprotocol.count_arguments` of the descriptor's bytes."""
    count: i64 = 0
    while pos < stop:
        byte: i64 = body[pos]
        while byte == 0x5B:  # [: an array of what follows
            pos += 1
            if pos >= stop:
                raise CannotTell
            byte = body[pos]
        if byte == 0x4C:  # L...; a class name
            pos += 1
            while pos < stop and body[pos] != 0x3B:
                pos += 1
            if pos >= stop:
                raise CannotTell
        elif not _PRIMITIVE[byte]:
            raise CannotTell
        pos += 1
        count += 1
    return count


def _after_arguments(body: bytes, pos: i64, end: i64, count: i64) -> i64:
    """Past ``count`` arguments: ASCII strings here, the rest (from the
    first other value on, so one reference table serves them all) by the
    hessian2 skipper."""
    reader: hessian2.Reader | None = None
    for _ in range(count):
        if reader is None:
            if pos >= end:
                raise CannotTell
            tag: i64 = body[pos]
            start: i64 = 0
            size: i64 = -1
            if tag <= 0x1F:
                start = pos + 1
                size = tag
            elif 0x30 <= tag <= 0x33 and pos + 1 < end:
                start = pos + 2
                size = ((tag - 0x30) << 8) + body[pos + 1]
            if size >= 0 and start + size <= end and body[start : start + size].isascii():
                pos = start + size
                continue
            reader = hessian2.Reader(body, pos)
        if reader.at_end:
            raise CannotTell
        try:
            reader.skip()
        except (hessian2.Hessian2Error, hessian2.NeedMoreData):
            raise CannotTell from None
    return pos if reader is None else reader.pos


def _map_value(body: bytes, pos: i64, end: i64, key: bytes) -> str | None:
    """The value of ``key`` in the attachment map at ``pos``, the body's
    last value: a map of short ASCII string keys to strings or nulls."""
    start = pos
    tag: i64 = body[pos]
    if tag == _UNTYPED_MAP:
        pos += 1
    elif tag == _TYPED_MAP and pos + 1 < end and body[pos + 1] <= 0x1F:
        pos += 2 + body[pos + 1]  # its type name, a short string
    else:
        raise CannotTell
    wanted: i64 = len(key)
    found: i64 = -1  # where the value of the last ``key`` starts; -1: none or null
    found_end: i64 = 0
    while True:
        if pos >= end:
            raise CannotTell
        tag = body[pos]
        if tag == _END:
            pos += 1
            break
        if tag > 0x1F:  # a key that is not a short string
            raise CannotTell
        key_start = pos + 1
        pos = key_start + tag
        if pos >= end:
            raise CannotTell
        matches = tag == wanted and body[key_start:pos] == key
        tag = body[pos]
        if tag <= 0x1F:
            value_start = pos + 1
            pos = value_start + tag
        elif 0x30 <= tag <= 0x33 and pos + 1 < end:
            value_start = pos + 2
            pos = value_start + ((tag - 0x30) << 8) + body[pos + 1]
        elif tag == _NULL:
            value_start = -1
            pos += 1
        else:
            raise CannotTell
        if matches:  # a later duplicate wins, as in the decoded dict
            found = value_start
            found_end = pos
    # The map ends the body, and all of it is ASCII (so lengths were bytes).
    if pos != end or not body[start:end].isascii():
        raise CannotTell
    return None if found < 0 else body[found:found_end].decode("ascii")
