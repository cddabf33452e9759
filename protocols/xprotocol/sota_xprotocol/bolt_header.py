"""The bolt header map: ``u32 length, key, u32 length, value`` pairs.

Decoded the way SOFA-RPC does it: a pair with a null key or value (length
-1) is dropped after both strings are read, which keeps the rest aligned
(MOSN skips only the null string and desynchronises). A module of its own
(compiled in the compiled build): a proxy routing on ``service`` decodes
one per request.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

from sota_dispatch import ProtocolError

__all__ = ["decode_header_map", "encode_header_map"]

_U32: Final = struct.Struct(">I")


def decode_header_map(data: bytes) -> dict[str, str]:
    """Decode ``u32 len, key, u32 len, value`` pairs to the end of ``data``."""
    result: dict[str, str] = {}
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _header_string(data, pos, end)
        value, pos = _header_string(data, pos, end)
        if key is not None and value is not None:
            result[key] = value
    return result


def _header_string(data: bytes, pos: int, end: int) -> tuple[str | None, int]:
    if pos + 4 > end:
        raise ProtocolError(f"bolt header map: length field cut at offset {pos}")
    size = _U32.unpack_from(data, pos)[0]
    pos += 4
    if size == 0xFFFFFFFF:
        return None, pos
    if pos + size > end:
        raise ProtocolError(f"bolt header map: a {size}-byte string past the end at offset {pos}")
    try:
        return data[pos : pos + size].decode("utf-8"), pos + size
    except UnicodeDecodeError:
        raise ProtocolError(f"bolt header map: string at offset {pos} is not UTF-8") from None


def encode_header_map(header: Mapping[str, str]) -> bytes:
    """Encode a header map; the result must fit the u16 header length (and
    Java's signed short: under 32768 bytes)."""
    out = bytearray()
    for key, value in header.items():
        k, v = key.encode(), value.encode()
        out += _U32.pack(len(k)) + k + _U32.pack(len(v)) + v
    if len(out) >= 0x8000:
        raise ValueError(f"bolt header map of {len(out)} bytes (Java peers read the length as a signed short)")
    return bytes(out)
