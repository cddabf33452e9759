"""The greeting's bytes: what we send, and what the peer's say.

Negotiation the way libzmq 4.3.5 does it: both sides send the signature and
major version 3 at once (:data:`START_SIZE` bytes, :func:`greeting_start`),
then read the other's. A 2.0 peer (revision 1 or 2) gets the rest of a 2.0
greeting (:func:`v2_rest`: socket type and identity frame), anyone else the
rest of a 3.x one (:func:`v3_rest`: minor version, mechanism, as-server).
Which to send, and when, is the engine's state machine; this module only
builds and reads the bytes (zmtp-notes 1.1), so both stay short and the
layout can be checked against RFC 15/23/37 in one place.
"""

from __future__ import annotations

from sota_dispatch import ProtocolError

from .wire import MORE, SocketType, signature

__all__ = [
    "GREETING_V3",
    "MECHANISM_SIZE",
    "START_SIZE",
    "V3_REST_SIZE",
    "greeting_start",
    "opens_identity_frame",
    "peer_revision",
    "read_v3_rest",
    "v2_rest",
    "v2_socket_type",
    "v3_rest",
]

#: The signature (10 bytes) and the major version or 2.0 revision (1 byte).
START_SIZE = 11
#: A whole 3.x greeting, and what follows the first :data:`START_SIZE` bytes.
GREETING_V3 = 64
V3_REST_SIZE = GREETING_V3 - START_SIZE
#: The NUL-padded mechanism name (``NULL``, ``PLAIN``, ``CURVE``).
MECHANISM_SIZE = 20


def greeting_start(identity_size: int) -> bytes:
    """Our first :data:`START_SIZE` bytes: the signature and major version 3."""
    return signature(identity_size) + b"\x03"


def peer_revision(head: bytes) -> int:
    """The peer's major version (3.x) or revision (0 for 1.0, 1-2 for 2.0).

    ``head`` is its first :data:`START_SIZE` bytes. The padding is not
    validated: libzmq writes the identity size there.
    """
    if head[0] != 0xFF or not head[9] & 0x01:
        raise ProtocolError(f"not a ZMTP 2.0+ greeting (starts {head[:10].hex()})")
    return head[10]


def opens_identity_frame(byte_12: int) -> bool:
    """Whether a major-3 peer's byte 12 starts a 2.0 identity frame.

    A mechanism name never starts with 0 or 1; a libzmq that took us for a
    2.0 server sends its socket type as byte 11, then an identity frame.
    """
    return byte_12 in (0, MORE)


def v2_rest(socket_type: SocketType, identity: bytes) -> bytes:
    """The rest of our 2.0 greeting: our socket type, then our identity frame."""
    return bytes((socket_type,)) + bytes((0, len(identity))) + identity


def v2_socket_type(value: int) -> SocketType | None:
    """A 2.0 peer's socket type, None if unknown (libzmq does not check it)."""
    try:
        return SocketType(value)
    except ValueError:
        return None


def v3_rest(mechanism: bytes, as_server: bool) -> bytes:
    """The rest of our 3.x greeting: minor version 1, mechanism, as-server, filler."""
    return b"\x01" + mechanism.ljust(MECHANISM_SIZE, b"\x00") + bytes((as_server,)) + bytes(31)


def read_v3_rest(peer_major: int, rest: bytes) -> tuple[tuple[int, int], bytes]:
    """The version both sides speak and the peer's mechanism name.

    ``rest`` is the peer's :data:`V3_REST_SIZE` bytes after the major
    version. Any major above 3 counts as 3.1, as in libzmq. The as-server
    byte is not read: libzmq 4.3.5's PLAIN server sends 0 there (seen on the
    wire), so roles come from configuration.
    """
    minor = rest[0]
    version = (3, 0) if peer_major == 3 and minor == 0 else (3, 1)
    return version, rest[1 : 1 + MECHANISM_SIZE].rstrip(b"\x00")
