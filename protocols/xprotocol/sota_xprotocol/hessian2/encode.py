"""Encoding Hessian 2 as Java's Hessian2Output does, for reply bodies."""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .values import _EPOCH, _F64, _I32, _I64, _U16, JavaDate

__all__ = ["encode", "encode_long"]


def _encode_string(text: str, out: bytearray) -> None:
    units = text
    if not text.isascii():
        units = "".join(
            ch if ord(ch) < 0x10000 else chr(0xD800 + ((ord(ch) - 0x10000) >> 10)) + chr(0xDC00 + (ord(ch) & 0x3FF))
            for ch in text
        )
    length = len(units)
    offset = 0
    while length - offset > 0x8000:
        size = 0x8000
        if 0xD800 <= ord(units[offset + size - 1]) <= 0xDBFF:
            size -= 1  # never split a surrogate pair across chunks (as Java)
        out += b"R" + _U16.pack(size) + units[offset : offset + size].encode("utf-8", "surrogatepass")
        offset += size
    size = length - offset
    if size <= 31:
        out.append(size)
    elif size <= 1023:
        out += bytes((0x30 + (size >> 8), size & 0xFF))
    else:
        out += b"S" + _U16.pack(size)
    out += units[offset:].encode("utf-8", "surrogatepass")


def _encode_int(value: int, out: bytearray) -> None:
    if -16 <= value <= 47:
        out.append(0x90 + value)
    elif -2048 <= value <= 2047:
        out += bytes((0xC8 + (value >> 8), value & 0xFF))
    elif -262144 <= value <= 262143:
        out += bytes((0xD4 + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
    elif -(2**31) <= value < 2**31:
        out += b"I" + _I32.pack(value)
    else:
        _encode_long(value, out)


def _encode_long(value: int, out: bytearray) -> None:
    if -8 <= value <= 15:
        out.append(0xE0 + value)
    elif -2048 <= value <= 2047:
        out += bytes((0xF8 + (value >> 8), value & 0xFF))
    elif -262144 <= value <= 262143:
        out += bytes((0x3C + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
    elif -(2**31) <= value < 2**31:
        out += b"Y" + _I32.pack(value)
    elif -(2**63) <= value < 2**63:
        out += b"L" + _I64.pack(value)
    else:
        raise ValueError(f"{value} does not fit a Java long")


def _encode_double(value: float, out: bytearray) -> None:
    if math.isfinite(value) and value == int(value):
        whole = int(value)
        if whole == 0:
            out.append(0x5B)
            return
        if whole == 1:
            out.append(0x5C)
            return
        if -128 <= whole <= 127:
            out += b"\x5d" + struct.pack(">b", whole)
            return
        if -32768 <= whole <= 32767:
            out += b"\x5e" + struct.pack(">h", whole)
            return
    if abs(value) * 1000 < 2**31:  # (also false for inf and nan)
        mills = int(value * 1000)
        if mills * 0.001 == value:
            out += b"\x5f" + _I32.pack(mills)
            return
    out += b"D" + _F64.pack(value)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > 64:
        raise ValueError("nesting deeper than 64")
    if value is None:
        out.append(0x4E)
    elif value is True:
        out.append(0x54)
    elif value is False:
        out.append(0x46)
    elif isinstance(value, int):
        _encode_int(value, out)
    elif isinstance(value, float):
        _encode_double(value, out)
    elif isinstance(value, str):
        _encode_string(value, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_binary(bytes(value), out)
    elif isinstance(value, _dt.datetime):
        _encode_date(round((value - _EPOCH).total_seconds() * 1000), out)
    elif isinstance(value, JavaDate):
        _encode_date(value.millis, out)
    elif isinstance(value, Mapping):
        type_name = getattr(value, "type", None)
        if isinstance(type_name, str):
            out.append(0x4D)
            _encode_string(type_name, out)
        else:
            out.append(0x48)
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
        out.append(0x5A)
    elif isinstance(value, Sequence):
        if len(value) <= 7:
            out.append(0x78 + len(value))
        else:
            out.append(0x58)
            _encode_int(len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as Hessian 2")


def _encode_date(millis: int, out: bytearray) -> None:
    """As Java's Hessian2Output.writeUTCDate: ``K`` + int32 minutes when the
    date is whole minutes that fit, else ``J`` + int64 milliseconds. Every
    date Java writes thus encodes back to its own bytes."""
    minutes, rest = divmod(millis, 60000)
    if rest == 0 and -(2**31) <= minutes < 2**31:
        out += b"K" + _I32.pack(minutes)
    elif -(2**63) <= millis < 2**63:
        out += b"J" + _I64.pack(millis)
    else:
        raise ValueError(f"a date {millis} ms from 1970 does not fit a Java long")


def _encode_binary(data: bytes, out: bytearray) -> None:
    offset = 0
    while len(data) - offset > 0x8000:
        out += b"A" + _U16.pack(0x8000) + data[offset : offset + 0x8000]
        offset += 0x8000
    size = len(data) - offset
    if size <= 15:
        out.append(0x20 + size)
    elif size <= 1023:
        out += bytes((0x34 + (size >> 8), size & 0xFF))
    else:
        out += b"B" + _U16.pack(size)
    out += data[offset:]


def encode(value: Any) -> bytes:
    """Encode ``value`` as Java's Hessian2Output would, for reply bodies.

    None, bool, int (compact int forms, then long forms beyond 32 bits),
    float, str (lone surrogates included, as Java writes them), bytes,
    aware datetime and :class:`JavaDate` (both as Java writes a Date),
    mappings (``H``, or ``M`` for a :class:`TypedMap`) and sequences
    (untyped lists). Integers that fit 32 bits are written as Java ints; use
    :func:`encode_long` for a Java long.
    """
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def encode_long(value: int) -> bytes:
    """Encode ``value`` as a Java long (Caucho writes 300L as ``f9 2c``)."""
    out = bytearray()
    _encode_long(value, out)
    return bytes(out)
