"""ZMTP wire formats: greeting bytes, frame headers, commands, metadata.

Pure functions and constants shared by the engine and by tests. The frame
layout is the same in ZMTP 2.0 and 3.x: a flags byte (MORE, LONG, COMMAND)
and a 1-byte or 8-byte big-endian size. Encoders use the LONG form only above
255 bytes, as libzmq does, and decide it from the final size (libzmq#4367).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from sota_dispatch import ProtocolError

__all__ = [
    "COMMAND",
    "COMPATIBLE_PEERS",
    "LONG",
    "MORE",
    "SocketType",
    "append_frames",
    "encode_command",
    "encode_message",
    "encode_part",
    "encode_properties",
    "last_header",
    "parse_command",
    "parse_properties",
    "signature",
]

MORE: Final = 0x01
LONG: Final = 0x02
COMMAND: Final = 0x04


class SocketType(enum.IntEnum):
    """Socket types with their ZMTP 2.0 numbers (RFC 15) and 3.x names."""

    PAIR = 0
    PUB = 1
    SUB = 2
    REQ = 3
    REP = 4
    DEALER = 5
    ROUTER = 6
    PULL = 7
    PUSH = 8
    XPUB = 9
    XSUB = 10


#: Which peer socket types each type accepts (RFC 23/37, libzmq check_socket_type).
COMPATIBLE_PEERS: Mapping[SocketType, frozenset[SocketType]] = {
    SocketType.ROUTER: frozenset({SocketType.REQ, SocketType.DEALER, SocketType.ROUTER}),
    SocketType.DEALER: frozenset({SocketType.REP, SocketType.DEALER, SocketType.ROUTER}),
    SocketType.REQ: frozenset({SocketType.REP, SocketType.ROUTER}),
    SocketType.REP: frozenset({SocketType.REQ, SocketType.DEALER}),
    SocketType.PUB: frozenset({SocketType.SUB, SocketType.XSUB}),
    SocketType.XPUB: frozenset({SocketType.SUB, SocketType.XSUB}),
    SocketType.SUB: frozenset({SocketType.PUB, SocketType.XPUB}),
    SocketType.XSUB: frozenset({SocketType.PUB, SocketType.XPUB}),
    SocketType.PUSH: frozenset({SocketType.PULL}),
    SocketType.PULL: frozenset({SocketType.PUSH}),
    SocketType.PAIR: frozenset({SocketType.PAIR}),
}


def signature(identity_size: int = 0) -> bytes:
    """The first 10 greeting bytes: ``FF``, padding, ``7F``.

    The padding carries ``identity_size + 1`` as a 64-bit number, as libzmq
    writes it for ZMTP 1.0 peers; receivers must not validate it.
    """
    return b"\xff" + (identity_size + 1).to_bytes(8, "big") + b"\x7f"


_SHORT: Final = [bytes((0, n)) for n in range(256)]
_SHORT_MORE: Final = [bytes((MORE, n)) for n in range(256)]
#: A long frame's flags byte; its 8-byte size follows (int.to_bytes: a C
#: call compiled, where a struct's bound pack was a generic one).
_LONG: Final = bytes((LONG,))
_LONG_MORE: Final = bytes((LONG | MORE,))
#: A size under 64 KiB as two table entries, its first seven bytes and its
#: last: appended to a list that is joined anyway, they allocate nothing,
#: where ``to_bytes`` made a new object (~350 instructions compiled).
_SIZE_HEAD: Final = [bytes(6) + bytes((n,)) for n in range(256)]
_SIZE_TAIL: Final = [bytes((n,)) for n in range(256)]
#: A last long frame's flags and its size's first seven bytes, for sizes
#: under 64 KiB (``_SIZE_TAIL`` has the last).
_LONG_HEAD: Final = [_LONG + head for head in _SIZE_HEAD]


def encode_part(frame: bytes) -> bytes:
    """``frame`` as a message's last ZMTP frame (a one-part message)."""
    size = len(frame)
    if size < 256:  # inline: one call fewer for the interpreter
        return _SHORT[size] + frame
    return last_header(size) + frame


def last_header(size: int) -> bytes:
    """The header of a message's last frame, of ``size`` bytes. Put in
    front of the part by concatenation, with the part the last operand,
    the part is copied once; compiled, a list and a join cost ~2,500
    instructions more for a two-part message (a buffer taken and released
    per item)."""
    if size < 256:
        return _SHORT[size]
    if size < 65536:
        return _LONG_HEAD[size >> 8] + _SIZE_TAIL[size & 255]
    return _LONG + size.to_bytes(8, "big")


def encode_message(frames: Sequence[bytes]) -> bytes:
    """Encode a multipart message (at least one part) as ZMTP frames."""
    last = len(frames) - 1
    if last == 0:  # the common single-part message
        return encode_part(frames[0])
    if last < 0:
        raise ValueError("a message has at least one part")
    out: list[bytes] = []
    append_frames(out, frames if isinstance(frames, list) else list(frames))
    return b"".join(out)


def append_frames(out: list[bytes], frames: list[bytes], start: int = 0) -> None:
    """Append the ZMTP frames of ``frames[start:]`` (the last without MORE)
    to ``out``, whose ``b"".join`` is then the encoding (each part copied
    once, whatever was appended in front of them).

    A list, not any sequence: compiled, a sequence's items and length are
    generic calls (~100 instructions a part), a list's are native."""
    last = len(frames) - 1
    # out.append itself, not a local alias of it: compiled, the method is a
    # C call and an alias a generic one (~120 instructions, twice a frame).
    for i in range(start, last + 1):
        frame = frames[i]
        size = len(frame)
        if size < 256:
            out.append(_SHORT_MORE[size] if i < last else _SHORT[size])
        else:
            out.append(_LONG_MORE if i < last else _LONG)
            if size < 65536:
                out.append(_SIZE_HEAD[size >> 8])
                out.append(_SIZE_TAIL[size & 255])
            else:
                out.append(size.to_bytes(8, "big"))
        out.append(frame)


def encode_command(name: bytes, data: bytes = b"") -> bytes:
    """Encode a command frame: ``u8 name_len, name, data``."""
    if not 0 < len(name) < 256:
        raise ValueError("a command name has 1 to 255 bytes")
    body = bytes((len(name),)) + name + data
    if len(body) < 256:
        return bytes((COMMAND, len(body))) + body
    return bytes((COMMAND | LONG,)) + len(body).to_bytes(8, "big") + body


def parse_command(body: bytes) -> tuple[bytes, bytes]:
    """Split a command body into ``(name, data)``.

    Tolerates libzmq's PLAIN server ERROR, whose name length byte is 0x5E
    (``"\\x05ERROR"`` read as ``"\\x5E" "RROR"`` in C): it is taken as ERROR.
    """
    if not body:
        raise ProtocolError("empty command frame")
    size = body[0]
    if size == 0x5E and body[1:5] == b"RROR" and len(body) < 1 + size:
        return b"ERROR", body[5:]
    if size == 0 or 1 + size > len(body):
        raise ProtocolError(f"command name length {size} does not fit a {len(body)}-byte command")
    return body[1 : 1 + size], body[1 + size :]


def encode_properties(properties: Iterable[tuple[str, bytes]]) -> bytes:
    """Encode metadata: ``u8 name_len, name, u32 value_len, value`` each."""
    out = bytearray()
    for name, value in properties:
        raw = name.encode("ascii")
        out += bytes((len(raw),)) + raw + len(value).to_bytes(4, "big") + value
    return bytes(out)


def parse_properties(data: bytes) -> dict[str, bytes]:
    """Decode metadata; names are case-insensitive, so they are lower-cased."""
    properties: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        size = data[pos]
        if size == 0:
            raise ProtocolError("metadata property with an empty name")
        if pos + 1 + size + 4 > end:
            raise ProtocolError("truncated metadata property")
        name = data[pos + 1 : pos + 1 + size]
        pos += 1 + size
        value_size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + value_size > end:
            raise ProtocolError(f"metadata value of {value_size} bytes past the end of the command")
        try:
            key = name.decode("ascii").lower()
        except UnicodeDecodeError:
            raise ProtocolError("metadata property name is not ASCII") from None
        properties[key] = data[pos : pos + value_size]
        pos += value_size
    return properties
