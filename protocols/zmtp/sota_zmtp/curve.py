"""CurveZMQ (RFC 26): the CURVE handshake's four commands and sealed messages.

The client sends HELLO (its transient key C' and a box only the server's
long-term key S opens), the server WELCOME (its transient key S' and a
cookie: C' and s' sealed with a key only it has, so that it need not keep
state for clients that never come back), the client INITIATE (the cookie,
and in a box between the transient keys its long-term key C, a vouch box
from C to S' naming C' and S, and its metadata), the server READY (its
metadata). After that every ZMTP frame travels as a MESSAGE command: a
flags byte (MORE 1, COMMAND 2) and the frame, in a box between C' and S'.
libzmq frames each MESSAGE as a final data frame (flags 0, not COMMAND), and
so do we; either framing is accepted.
Nonces: a 16-byte prefix per kind of box and an 8-byte counter, which each
side starts at 1 and which must strictly increase; long nonces (cookie,
welcome, vouch) are random.

This module holds the byte layouts (checked against libzmq 4.3.5's
``curve_client_tools.hpp``, ``curve_server.cpp`` and
``curve_mechanism_base.cpp``, and against libzmq itself in the tests) and
the crypto (libsodium through PyNaCl, an optional dependency:
``pip install 'sota-zmtp[curve]'``); the order the commands come in is the
engine's. Every data argument is a command's body after its name. Anything
malformed, or a box that does not open, raises
:class:`~sota_dispatch.ProtocolError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import attrs

from sota_dispatch import LimitExceeded, ProtocolError

from .limits import Limits
from .wire import COMMAND, LONG, MORE

try:
    from nacl import bindings as sodium
    from nacl.exceptions import CryptoError
except ImportError:  # pragma: no cover - CURVE is an optional extra; Z85 still works
    sodium = None  # type: ignore[assignment]

__all__ = [
    "CurveClient",
    "CurveClientKeys",
    "CurveServer",
    "CurveServerKeys",
    "CurveSession",
    "KeyAuthenticator",
    "SealedReader",
    "curve_available",
    "curve_key",
    "curve_keypair",
    "public_key",
    "z85_decode",
    "z85_encode",
]

#: A CURVE server's check of a client's long-term public key (ZAP's role).
KeyAuthenticator = Callable[[bytes], bool]

KEY_SIZE = 32
#: A box's authenticator (Poly1305), before its ciphertext.
MAC_SIZE = 16
#: ``\x07MESSAGE``, the short nonce, a box's MAC and the flags byte: what a
#: sealed frame adds to the frame it carries.
SEAL_OVERHEAD = 8 + 8 + MAC_SIZE + 1
#: Command names the CURVE handshake uses, and the sizes libzmq sends.
HELLO_SIZE = 194  # after "\x05HELLO": version 2, padding 72, C' 32, nonce 8, box 80
WELCOME_SIZE = 160  # after "\x07WELCOME": nonce 16, box 144
INITIATE_MIN = 248  # after "\x08INITIATE": cookie 96, nonce 8, box 144 (+ metadata)
READY_MIN = 24  # after "\x05READY": nonce 8, box 16 (+ metadata)
_MORE, _COMMAND = 0x01, 0x02  # the flags inside a sealed frame

_Z85 = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUES = {c: i for i, c in enumerate(_Z85)}


def curve_available() -> bool:
    """Whether PyNaCl (libsodium) is installed, which CURVE needs."""
    return sodium is not None


def _require_sodium() -> None:
    if sodium is None:  # pragma: no cover - the optional dependency is missing
        raise ImportError("ZMTP CURVE needs PyNaCl: pip install 'sota-zmtp[curve]'")


def z85_encode(data: bytes) -> str:
    """ZeroMQ's Z85 (RFC 32): 4 bytes become 5 printable characters."""
    if len(data) % 4:
        raise ValueError("Z85 encodes a multiple of 4 bytes")
    out = bytearray()
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        out += bytes(_Z85[value // 85**k % 85] for k in (4, 3, 2, 1, 0))
    return out.decode("ascii")


def z85_decode(text: str) -> bytes:
    """The bytes of a Z85 string (a multiple of 5 characters)."""
    raw = text.encode("ascii", "replace")
    if len(raw) % 5:
        raise ValueError("Z85 text is a multiple of 5 characters")
    out = bytearray()
    for i in range(0, len(raw), 5):
        value = 0
        for char in raw[i : i + 5]:
            if char not in _Z85_VALUES:
                raise ValueError(f"{chr(char)!r} is not a Z85 character")
            value = value * 85 + _Z85_VALUES[char]
        if value >= 1 << 32:
            raise ValueError("Z85 group out of range")
        out += value.to_bytes(4, "big")
    return bytes(out)


def curve_key(value: str | bytes) -> bytes:
    """A 32-byte key from its Z85 text (40 characters, as libzmq and
    ``zmq.curve_keypair()`` print them), 64 hex digits, or raw bytes."""
    if isinstance(value, bytes) and len(value) == KEY_SIZE:
        return value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if len(text) == 40:
        return z85_decode(text)
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raise ValueError("a CURVE key is 40 Z85 characters, 64 hex digits or 32 bytes")


def curve_keypair() -> tuple[str, str]:
    """A new long-term key pair, ``(public, secret)`` in Z85, as ``zmq.curve_keypair()``."""
    _require_sodium()
    public, secret = sodium.crypto_box_keypair()
    return z85_encode(public), z85_encode(secret)


def public_key(secret: bytes) -> bytes:
    """The public key of a secret one (Curve25519)."""
    _require_sodium()
    return sodium.crypto_scalarmult_base(secret)


@attrs.frozen
class CurveServerKeys:
    """A CURVE server: its long-term secret key, and the check of each
    client's long-term public key (None: any client that completes the
    handshake, as libzmq without a ZAP handler)."""

    secret_key: bytes = attrs.field(converter=curve_key)
    authenticator: KeyAuthenticator | None = None
    public_key: bytes = attrs.field(init=False)

    @public_key.default
    def _public(self) -> bytes:
        return public_key(self.secret_key)


@attrs.frozen
class CurveClientKeys:
    """A CURVE client: the server's long-term public key, and our own
    long-term secret key (a fresh one per process unless given)."""

    server_key: bytes = attrs.field(converter=curve_key)
    secret_key: bytes = attrs.field(converter=curve_key, factory=lambda: curve_key(curve_keypair()[1]))
    public_key: bytes = attrs.field(init=False)

    @public_key.default
    def _public(self) -> bytes:
        return public_key(self.secret_key)


def _open(sodium_open: Callable[[], bytes], what: str) -> bytes:
    try:
        return sodium_open()
    except (CryptoError, ValueError, TypeError):
        raise ProtocolError(f"CURVE {what} does not open (wrong key, or tampered)") from None


def _short(value: int) -> bytes:
    return value.to_bytes(8, "big")


class CurveSession:
    """The traffic after a CURVE handshake: frames sealed into MESSAGE
    commands, and MESSAGE commands opened, with nonces that must increase."""

    __slots__ = ("_box", "_key", "_open", "_open_prefix", "_seal_prefix", "nonce", "peer_nonce")

    def __init__(self, key: bytes, seal_prefix: bytes, open_prefix: bytes, nonce: int, peer_nonce: int) -> None:
        _require_sodium()
        self._key = key
        self._box = sodium.crypto_box_easy_afternm
        self._open = sodium.crypto_box_open_easy_afternm
        self._seal_prefix = seal_prefix
        self._open_prefix = open_prefix
        #: Our next short nonce, and the last one the peer used.
        self.nonce = nonce
        self.peer_nonce = peer_nonce

    def seal(self, flags: int, frame: bytes) -> bytes:
        """One frame as a whole sealed ZMTP command frame (``flags``: MORE 1, COMMAND 2)."""
        short = self.nonce.to_bytes(8, "big")
        self.nonce += 1
        body = b"\x07MESSAGE" + short + self._box(bytes((flags,)) + frame, self._seal_prefix + short, self._key)
        size = len(body)
        # Framed as a final data frame, not a command: libzmq does, and ORs
        # the outer flags into the frame it opens, so COMMAND or MORE here
        # would corrupt what it reads.
        if size > 255:
            return bytes((LONG,)) + size.to_bytes(8, "big") + body
        return bytes((0, size)) + body

    def seal_message(self, frames: Iterable[bytes]) -> bytes:
        """A message's frames, each sealed (MORE on all but the last)."""
        parts = list(frames)
        last = len(parts) - 1
        return b"".join(self.seal(_MORE if i < last else 0, part) for i, part in enumerate(parts))

    def seal_frames(self, data: bytes) -> bytes:
        """Plaintext ZMTP frames (whole ones: what a writer is given), each
        sealed: MORE and COMMAND go inside the box."""
        out = []
        pos, end = 0, len(data)
        while pos < end:
            flags = data[pos]
            if flags & LONG:
                size = int.from_bytes(data[pos + 1 : pos + 9], "big")
                start = pos + 9
            else:
                size = data[pos + 1] if pos + 1 < end else 0
                start = pos + 2
            if start + size > end:
                raise ValueError("seal_frames() needs whole ZMTP frames")
            inner = (_MORE if flags & MORE else 0) | (_COMMAND if flags & COMMAND else 0)
            out.append(self.seal(inner, data[start : start + size]))
            pos = start + size
        return b"".join(out)

    def seal_command(self, name: bytes, data: bytes = b"") -> bytes:
        """A command (PING, PONG) inside a sealed frame."""
        return self.seal(_COMMAND, bytes((len(name),)) + name + data)

    def open(self, body: bytes) -> tuple[bool, bool, bytes]:
        """A MESSAGE command's body (name included): ``(more, command, frame)``."""
        if body[:8] != b"\x07MESSAGE":
            name = body[1 : 1 + body[0]] if body else b""
            raise ProtocolError(f"a {name!r} command where a CURVE MESSAGE was due")
        if len(body) < SEAL_OVERHEAD:
            raise ProtocolError("malformed CURVE MESSAGE")
        nonce = int.from_bytes(body[8:16], "big")
        if nonce <= self.peer_nonce:
            raise ProtocolError(f"CURVE MESSAGE nonce {nonce} not above {self.peer_nonce} (replayed or reordered)")
        plain = _open(lambda: self._open(body[16:], self._open_prefix + body[8:16], self._key), "MESSAGE box")
        self.peer_nonce = nonce
        flags = plain[0]
        return bool(flags & _MORE), bool(flags & _COMMAND), plain[1:]


class CurveClient:
    """The client side of one connection's handshake (fresh transient keys)."""

    def __init__(self, keys: CurveClientKeys) -> None:
        self.keys = keys
        _require_sodium()
        self._public, self._secret = sodium.crypto_box_keypair()
        self._server_transient = b""
        self._cookie = b""
        self._key = b""

    def hello(self) -> bytes:
        """HELLO's data: version 1.0, 72 bytes of padding (the server's answer
        is smaller, so HELLO cannot amplify), C', nonce 1, a box of 64 zeros."""
        short = _short(1)
        box = sodium.crypto_box(bytes(64), b"CurveZMQHELLO---" + short, self.keys.server_key, self._secret)
        return b"\x01\x00" + bytes(72) + self._public + short + box

    def welcome(self, data: bytes) -> None:
        """Read WELCOME: the server's transient key S' and the cookie."""
        if len(data) != WELCOME_SIZE:
            raise ProtocolError(f"malformed CURVE WELCOME ({len(data)} bytes)")
        server_key, secret = self.keys.server_key, self._secret
        plain = _open(
            lambda: sodium.crypto_box_open(data[16:], b"WELCOME-" + data[:16], server_key, secret),
            "WELCOME box (is the server key right?)",
        )
        self._server_transient, self._cookie = plain[:32], plain[32:128]
        self._key = sodium.crypto_box_beforenm(self._server_transient, self._secret)

    def initiate(self, metadata: bytes) -> bytes:
        """INITIATE's data: the cookie, nonce 2, and the box of C, the vouch and ``metadata``."""
        vouch_nonce = os.urandom(16)
        vouch = sodium.crypto_box(
            self._public + self.keys.server_key, b"VOUCH---" + vouch_nonce, self._server_transient, self.keys.secret_key
        )
        short = _short(2)
        box = sodium.crypto_box_easy_afternm(
            self.keys.public_key + vouch_nonce + vouch + metadata, b"CurveZMQINITIATE" + short, self._key
        )
        return self._cookie + short + box

    def ready(self, data: bytes) -> tuple[bytes, CurveSession]:
        """Read READY: the server's metadata, and the session for the traffic."""
        if len(data) < READY_MIN:
            raise ProtocolError("malformed CURVE READY")
        key = self._key
        metadata = _open(
            lambda: sodium.crypto_box_open_easy_afternm(data[8:], b"CurveZMQREADY---" + data[:8], key),
            "READY box",
        )
        session = CurveSession(key, b"CurveZMQMESSAGEC", b"CurveZMQMESSAGES", 3, int.from_bytes(data[:8], "big"))
        return metadata, session


class CurveServer:
    """The server side of one connection's handshake."""

    def __init__(self, keys: CurveServerKeys) -> None:
        self.keys = keys
        _require_sodium()
        self._client_transient = b""
        self._public = self._secret = b""
        self._cookie_key = b""
        self._peer_nonce = 0
        self._key = b""

    def hello(self, data: bytes) -> bytes:
        """Read HELLO; WELCOME's data: a long nonce and the box of S' and the cookie."""
        if len(data) != HELLO_SIZE:
            raise ProtocolError(f"malformed CURVE HELLO ({len(data)} bytes)")
        if data[:2] != b"\x01\x00":
            raise ProtocolError(f"CURVE version {data[0]}.{data[1]} (this server speaks 1.0)")
        client, short = data[74:106], data[106:114]
        secret = self.keys.secret_key
        zeros = _open(
            lambda: sodium.crypto_box_open(data[114:194], b"CurveZMQHELLO---" + short, client, secret),
            "HELLO box (does the client have this server's key?)",
        )
        if zeros != bytes(64):
            raise ProtocolError("CURVE HELLO box does not hold 64 zero bytes")
        self._client_transient, self._peer_nonce = client, int.from_bytes(short, "big")
        self._public, self._secret = sodium.crypto_box_keypair()
        self._cookie_key = os.urandom(32)
        cookie_nonce = os.urandom(16)
        cookie = sodium.crypto_secretbox(client + self._secret, b"COOKIE--" + cookie_nonce, self._cookie_key)
        welcome_nonce = os.urandom(16)
        box = sodium.crypto_box(
            self._public + cookie_nonce + cookie, b"WELCOME-" + welcome_nonce, client, self.keys.secret_key
        )
        return welcome_nonce + box

    def initiate(self, data: bytes) -> tuple[bytes, bytes]:
        """Read INITIATE: ``(the client's long-term public key, its metadata)``.

        The cookie must open and name this connection's keys, the nonce
        must follow HELLO's, and the vouch must name C' and this server's S.
        Whether the key is welcome is the caller's question.
        """
        if len(data) < INITIATE_MIN:
            raise ProtocolError("malformed CURVE INITIATE")
        cookie_key = self._cookie_key
        cookie = _open(
            lambda: sodium.crypto_secretbox_open(data[16:96], b"COOKIE--" + data[:16], cookie_key),
            "INITIATE cookie",
        )
        if cookie != self._client_transient + self._secret:
            raise ProtocolError("CURVE INITIATE carries another connection's cookie")
        self._cookie_key = b""  # one INITIATE per cookie
        nonce = int.from_bytes(data[96:104], "big")
        if nonce <= self._peer_nonce:
            raise ProtocolError(f"CURVE INITIATE nonce {nonce} not above HELLO's {self._peer_nonce}")
        self._peer_nonce = nonce
        self._key = key = sodium.crypto_box_beforenm(self._client_transient, self._secret)
        plain = _open(
            lambda: sodium.crypto_box_open_easy_afternm(data[104:], b"CurveZMQINITIATE" + data[96:104], key),
            "INITIATE box",
        )
        client_key, vouch_nonce, vouch = plain[:32], plain[32:48], plain[48:128]
        secret = self._secret
        vouched = _open(
            lambda: sodium.crypto_box_open(vouch, b"VOUCH---" + vouch_nonce, client_key, secret),
            "INITIATE vouch",
        )
        if vouched != self._client_transient + self.keys.public_key:
            raise ProtocolError("CURVE vouch names other keys")
        return client_key, plain[128:]

    def ready(self, metadata: bytes) -> tuple[bytes, CurveSession]:
        """READY's data (nonce 1 and the box of ``metadata``), and the session."""
        short = _short(1)
        box = sodium.crypto_box_easy_afternm(metadata, b"CurveZMQREADY---" + short, self._key)
        session = CurveSession(self._key, b"CurveZMQMESSAGES", b"CurveZMQMESSAGEC", 2, self._peer_nonce)
        return short + box, session


class SealedReader:
    """The traffic loop of a CURVE connection (:class:`~sota_zmtp.frames.FrameReader`'s
    counterpart): every frame must be a sealed MESSAGE (no MORE outside: it
    is inside the box), which is opened and
    read as the frame it carries, against the same limits (checked on the
    sealed frame's header, before it is buffered). A command it carries
    (PING, PONG) stops the loop in :attr:`command`, as FrameReader does.
    The header parsing repeats FrameReader's on purpose: both are hot
    loops, with no call per frame.
    """

    __slots__ = ("_limits", "_message_size", "_parts", "_session", "command", "need")

    def __init__(self, limits: Limits, session: CurveSession) -> None:
        self.need = 2
        self.command: bytes | None = None
        self._limits = limits
        self._session = session
        self._parts: list[bytes] = []
        self._message_size = 0

    @property
    def pending(self) -> int:
        """Bytes (and parts) held of a multipart message not complete yet."""
        return self._message_size + len(self._parts)

    def read(self, work: bytes, pos: int, messages: list[list[bytes]]) -> int:
        """Open every complete sealed frame from ``pos``; return the bytes used."""
        end_of_data = len(work)
        limits = self._limits
        max_sealed = limits.max_frame_size + SEAL_OVERHEAD
        session = self._session
        parts, message_size = self._parts, self._message_size
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
                    size = int.from_bytes(work[pos + 1 : pos + 9], "big")
                    start = pos + 9
                else:
                    size = work[pos + 1]
                    start = pos + 2
                if flags & ~(LONG | COMMAND):  # MORE, or reserved bits: the real flags are sealed inside
                    raise ProtocolError(f"frame flags 0x{flags:02x} on a CURVE connection (only sealed frames)")
                if size > max_sealed:
                    raise LimitExceeded(f"frame of {size - SEAL_OVERHEAD} bytes", limits.max_frame_size)
                end = start + size
                if end > end_of_data:
                    self.need = end - pos
                    break
                pos = end
                more, command, frame = session.open(work[start:end])
                if command:
                    if more or parts:
                        raise ProtocolError("a sealed command inside a multipart message")
                    self.command = frame
                    break
                message_size += len(frame)
                if message_size > limits.max_message_size:
                    raise LimitExceeded(f"message of {message_size}+ bytes", limits.max_message_size)
                parts.append(frame)
                if not more:
                    messages.append(parts)
                    parts = []
                    message_size = 0
                elif len(parts) >= limits.max_parts:
                    raise LimitExceeded(f"message of more than {limits.max_parts} parts", limits.max_parts)
        finally:
            self._parts, self._message_size = parts, message_size
        return pos
