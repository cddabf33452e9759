"""The security handshake's commands: NULL (RFC 23/37) and PLAIN (RFC 24).

NULL: each side sends READY with its metadata. PLAIN: the client sends HELLO
(username, password), the server WELCOME or ERROR, the client INITIATE
(metadata), the server READY (metadata). Either side may refuse with ERROR,
which libzmq takes as final. This module builds and reads those commands'
bodies; the order they come in, and what to do about them, is the engine's
state machine. Kept apart so that the byte layouts (and the libzmq quirks
they tolerate, zmtp-notes 1.4-1.5) can be read without the state machine.
"""

from __future__ import annotations

from collections.abc import Callable

from sota_dispatch import ProtocolError

from .wire import COMPATIBLE_PEERS, SocketType, encode_command, encode_properties

__all__ = [
    "Authenticator",
    "compatible_peer_type",
    "error_command",
    "error_reason",
    "hello_command",
    "metadata",
    "parse_hello",
]

#: A PLAIN server's check: ``(username, password) -> accepted``.
Authenticator = Callable[[bytes, bytes], bool]


def metadata(socket_type: SocketType, identity: bytes) -> bytes:
    """Our READY (or INITIATE) body: ``Socket-Type``, and ``Identity`` where
    the socket type routes (libzmq always adds it there, even empty)."""
    properties = [("Socket-Type", socket_type.name.encode())]
    if socket_type in (SocketType.DEALER, SocketType.REQ, SocketType.ROUTER):
        properties.append(("Identity", identity))
    return encode_properties(properties)


def compatible_peer_type(raw_type: bytes, ours: SocketType) -> SocketType | None:
    """The peer's ``Socket-Type`` value, None if unknown or not one ``ours``
    talks to (names are matched exactly, as libzmq does)."""
    try:
        peer_type = SocketType[raw_type.decode("ascii")]
    except (KeyError, UnicodeDecodeError):
        return None
    if peer_type not in COMPATIBLE_PEERS.get(ours, frozenset()):
        return None
    return peer_type


def hello_command(user: bytes, password: bytes) -> bytes:
    """A PLAIN client's HELLO: ``u8 len, username, u8 len, password``."""
    return encode_command(b"HELLO", bytes((len(user),)) + user + bytes((len(password),)) + password)


def parse_hello(data: bytes) -> tuple[bytes, bytes]:
    """``u8 len, username, u8 len, password`` (RFC 24's ABNF, not its prose)."""
    if not data:
        raise ProtocolError("malformed PLAIN HELLO")
    user_end = 1 + data[0]
    if user_end >= len(data) or user_end + 1 + data[user_end] != len(data):
        raise ProtocolError("malformed PLAIN HELLO")
    return data[1:user_end], data[user_end + 1 :]


def error_command(reason: str) -> bytes:
    """An ERROR command: ``u8 len, reason`` (cut to 255 bytes)."""
    return encode_command(b"ERROR", _short(reason.encode("utf-8", "replace")))


def _short(text: bytes) -> bytes:
    text = text[:255]
    return bytes((len(text),)) + text


def error_reason(data: bytes) -> str:
    """The reason in an ERROR body (the whole body if its length byte does
    not fit: a refusal is reported, however malformed)."""
    if data and 1 + data[0] <= len(data):
        return data[1 : 1 + data[0]].decode("utf-8", "replace")
    return data.decode("utf-8", "replace")
