"""A sans-I/O ZMTP connection: greeting, handshake, framing, commands.

The engine never touches a socket or a clock. The caller feeds it what the
peer sent (:meth:`ZmtpEngine.feed`, which returns complete messages), sends
what it has to say (:meth:`ZmtpEngine.data_to_send`), and encodes outgoing
messages with :meth:`ZmtpEngine.encode`. It negotiates the way libzmq 4.3.5
does: send the signature and major version 3 at once, read the peer's first
11 bytes, then continue in ZMTP 2.0 for a 2.0 peer (revision 1 or 2) and in
3.x otherwise, treating any future major version as 3.1. A server that
answered only 2.0 would be dropped every 30 s by libzmq 4.3.3-4.3.4 peers.
One refinement on the accepting side (``probe_downgrade``): before answering
a major version 3 it also reads the peer's bytes 11 and 12, and a peer that
sent a socket type and the start of an identity frame there (a libzmq that
took us for a 2.0 server) gets 2.0. The connecting side must not wait for
that: two engines that both waited would deadlock.

Every size is checked against :class:`Limits` as soon as its header is read,
before anything is buffered for it; anything malformed raises
:class:`~sota_dispatch.ProtocolError` (or a subclass) and nothing else.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Callable

import attrs

from sota_dispatch import ChunkBuffer, LimitExceeded, ProtocolError

from .wire import (
    COMMAND,
    COMPATIBLE_PEERS,
    LONG,
    MORE,
    SocketType,
    encode_command,
    encode_message,
    encode_properties,
    parse_command,
    parse_properties,
    signature,
)

__all__ = ["Authenticator", "DowngradeRefused", "Limits", "PeerError", "ZmtpEngine", "generate_identity"]

#: A PLAIN server's check: ``(username, password) -> accepted``.
Authenticator = Callable[[bytes, bytes], bool]

_MECHANISM_SIZE = 20
#: Largest frame accepted before the handshake is complete (READY, HELLO,
#: INITIATE, the 2.0 identity frame): metadata is small, and nothing that
#: large is buffered for a peer that has not authenticated.
_HANDSHAKE_FRAME_MAX = 65536
_GREETING_V3 = 64
#: Longest PING context echoed in a PONG (zeromq/rfc#130).
MAX_PING_CONTEXT = 16


class PeerError(ProtocolError):
    """The peer sent an ERROR command: fatal, and not worth a reconnect."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer sent ERROR: {reason}")
        self.reason = reason


class DowngradeRefused(ProtocolError):
    """The peer speaks ZMTP 1.0 or 2.0, which have no security mechanism,
    and this endpoint requires one (PLAIN): talking on would skip the
    authentication. Final, like :class:`PeerError`: a client does not
    reconnect into it (libzmq refuses such peers when a mechanism is set)."""


@attrs.frozen
class Limits:
    """Bounds on what a peer may make us buffer (checked before allocating)."""

    max_frame_size: int = 16 * 1024 * 1024
    max_message_size: int = 64 * 1024 * 1024
    max_parts: int = 1024
    #: Longest peer identity accepted (RFC 37 says 255).
    max_identity_size: int = 255
    #: Seconds from connect to a completed handshake (enforced by the dispatcher).
    handshake_timeout: float = 10.0


class _State(enum.Enum):
    SIGNATURE = "signature"
    V3_PROBE = "v3-probe"
    V2_SOCKET_TYPE = "v2-socket-type"
    V2_IDENTITY = "v2-identity"
    V3_GREETING = "v3-greeting"
    V3_READY = "v3-ready"
    PLAIN_HELLO = "plain-hello"
    PLAIN_WELCOME = "plain-welcome"
    PLAIN_INITIATE = "plain-initiate"
    TRAFFIC = "traffic"


_id_counter = itertools.count(random.getrandbits(32))


def generate_identity() -> bytes:
    """A routing id for a peer that chose none: ``00`` + a 32-bit counter.

    libzmq's shape: 5 bytes, the leading zero marking it as generated.
    """
    return b"\x00" + (next(_id_counter) & 0xFFFFFFFF).to_bytes(4, "big")


_EXPECTED = {
    _State.V3_READY: b"READY",
    _State.PLAIN_HELLO: b"HELLO",
    _State.PLAIN_WELCOME: b"WELCOME",
    _State.PLAIN_INITIATE: b"INITIATE",
}


class ZmtpEngine:
    """One ZMTP connection's protocol state.

    ``socket_type`` is ours; ``identity`` is the routing id we announce (for a
    DEALER) or empty. The mechanism is NULL unless ``plain_credentials`` (we
    are a PLAIN client: ``(username, password)``) or ``plain_authenticator``
    (we are a PLAIN server, RFC 24) is given. After the handshake,
    :attr:`version`, :attr:`peer_socket_type`, :attr:`peer_identity`,
    :attr:`peer_properties` and, for a PLAIN server, :attr:`user_id`
    describe the peer.
    """

    def __init__(
        self,
        socket_type: SocketType,
        *,
        identity: bytes = b"",
        limits: Limits | None = None,
        probe_downgrade: bool = False,
        plain_credentials: tuple[bytes, bytes] | None = None,
        plain_authenticator: Authenticator | None = None,
        on_peer_ready: Callable[[ZmtpEngine], None] | None = None,
    ) -> None:
        if len(identity) > 255:
            raise ValueError("an identity has at most 255 bytes")
        if plain_credentials is not None and plain_authenticator is not None:
            raise ValueError("an endpoint is a PLAIN client or a PLAIN server, not both")
        if plain_credentials is not None and not all(len(x) < 256 for x in plain_credentials):
            raise ValueError("PLAIN username and password have at most 255 bytes")
        self.plain_credentials = plain_credentials
        self.plain_authenticator = plain_authenticator
        self.on_peer_ready = on_peer_ready
        self.mechanism = b"NULL" if plain_credentials is None and plain_authenticator is None else b"PLAIN"
        #: The PLAIN username the peer authenticated with (server side).
        self.user_id: bytes | None = None
        self.socket_type = socket_type
        self.identity = identity
        self.limits = limits or Limits()
        self.probe_downgrade = probe_downgrade
        self.version: tuple[int, int] | None = None
        self.peer_socket_type: SocketType | None = None
        self.peer_identity = b""
        self.peer_properties: dict[str, bytes] = {}
        #: PINGs answered, and the contexts of PONGs received (newest last).
        self.pings_answered = 0
        self.pongs: list[bytes] = []
        #: Seconds the peer's last PING asked us to wait for its traffic.
        self.peer_ttl: float | None = None
        #: An error found after messages handed out by the same feed.
        self.pending_error: ProtocolError | None = None
        self._peer_major = 0
        self._state = _State.SIGNATURE
        self._out = bytearray(signature(len(identity)) + b"\x03")
        # Unparsed input: chunks joined only once enough has arrived.
        self._buffer = ChunkBuffer()
        self._need = 11
        self._parts: list[bytes] = []
        self._message_size = 0

    # -- state ---------------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        """True once messages may flow (the peer's READY has arrived)."""
        return self._state is _State.TRAFFIC

    @property
    def ready(self) -> bool:
        """Same as :attr:`handshake_done` (the :class:`~sota_dispatch.ProxyCodec` name)."""
        return self._state is _State.TRAFFIC

    def check(self) -> None:
        """Raise the error found after the last messages handed out, if any."""
        if self.pending_error is not None:
            raise self.pending_error

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed (a partial frame or greeting)."""
        return len(self._buffer)

    def data_to_send(self) -> bytes:
        """Take the bytes the engine wants sent (greeting, READY, PONG, ...)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- outgoing ------------------------------------------------------------

    def encode(self, frames: list[bytes] | tuple[bytes, ...]) -> bytes:
        """Encode a message for this peer; only after the handshake.

        Sending before the peer's READY made libzmq 4.3.5 drop the
        connection, so this refuses to.
        """
        if self._state is not _State.TRAFFIC:
            raise RuntimeError("the ZMTP handshake is not complete")
        return encode_message(frames)

    def ping(self, ttl_deciseconds: int = 0, context: bytes = b"") -> None:
        """Queue a PING (ZMTP 3.1 only)."""
        if self.version != (3, 1):
            raise RuntimeError(f"PING needs ZMTP 3.1, the peer speaks {self.version}")
        if not 0 <= ttl_deciseconds <= 0xFFFF or len(context) > MAX_PING_CONTEXT:
            raise ValueError("ttl is 0..65535 deciseconds, context at most 16 bytes")
        self._out += encode_command(b"PING", ttl_deciseconds.to_bytes(2, "big") + context)

    def error(self, reason: str) -> bytes:
        """The ERROR command to send before closing (3.x; empty for 2.0)."""
        if self.version is not None and self.version < (3, 0):
            return b""
        return encode_command(b"ERROR", _short(reason.encode("utf-8", "replace")))

    # -- incoming --------------------------------------------------------------

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Parse ``data``; return the messages it completed, oldest first.

        Messages that arrived before bad bytes are returned first; the error
        is raised by the next call (or by :meth:`check`).
        """
        self.check()
        work = self._buffer.take(data, self._need)
        if work is None:
            return []
        messages: list[list[bytes]] = []
        pos = 0
        if self._state is not _State.TRAFFIC:
            pos = self._handshake(work, messages)
        if self._state is _State.TRAFFIC:
            try:
                pos = self._frames(work, pos, messages)
            except ProtocolError as exc:
                if not messages:
                    raise
                self.pending_error = exc  # hand out the good messages first
                return messages
        self._buffer.keep(work, pos)
        return messages

    def _handshake(self, work: bytes, messages: list[list[bytes]]) -> int:
        """Advance through the greeting and handshake; return the bytes used."""
        pos = 0
        while self._state is not _State.TRAFFIC:
            avail = len(work) - pos
            state = self._state
            if state is _State.SIGNATURE:
                if avail < 11:
                    self._need = 11
                    return pos
                self._signature(work[pos : pos + 11])
                pos += 11
            elif state is _State.V3_PROBE:
                if avail < 2:
                    self._need = 2
                    return pos
                if work[pos + 1] in (0, MORE):
                    # Byte 12 opens an identity frame, not a mechanism name:
                    # a peer that took us for 2.0 (as libzmq does facing a
                    # revision-1 server) sent its socket type as byte 11.
                    self._downgrade_to_v2()
                else:
                    self._v3_greeting_start()
            elif state is _State.V2_SOCKET_TYPE:
                if avail < 1:
                    self._need = 1
                    return pos
                self._v2_socket_type(work[pos])
                pos += 1
            elif state is _State.V3_GREETING:
                if avail < _GREETING_V3 - 11:
                    self._need = _GREETING_V3 - 11
                    return pos
                self._v3_greeting(work[pos : pos + _GREETING_V3 - 11])
                pos += _GREETING_V3 - 11
            else:  # a frame: the v2 identity frame, or the v3 READY command
                frame = self._one_frame(work, pos)
                if frame is None:
                    return pos
                flags, body, pos = frame
                if state is _State.V2_IDENTITY:
                    self._v2_identity(flags, body)
                else:
                    self._v3_handshake_frame(flags, body)
        self._need = 2
        return pos

    def _one_frame(self, work: bytes, pos: int) -> tuple[int, bytes, int] | None:
        avail = len(work) - pos
        if avail < 2:
            self._need = 2
            return None
        flags = work[pos]
        if flags & LONG:
            if avail < 9:
                self._need = 9
                return None
            size = int.from_bytes(work[pos + 1 : pos + 9], "big")
            header = 9
        else:
            size = work[pos + 1]
            header = 2
        self._check_frame(flags, size)
        if size > _HANDSHAKE_FRAME_MAX:  # before authentication: no 16 MiB buffers
            raise LimitExceeded(f"handshake frame of {size} bytes", _HANDSHAKE_FRAME_MAX)
        end = pos + header + size
        if end > len(work):
            self._need = end - pos
            return None
        return flags, work[pos + header : end], end

    def _check_frame(self, flags: int, size: int) -> None:
        reserved = 0xFC if self.version == (2, 0) else 0xF8
        if flags & reserved:
            raise ProtocolError(f"frame flags 0x{flags:02x} set reserved bits")
        if size > self.limits.max_frame_size:
            raise LimitExceeded(f"frame of {size} bytes", self.limits.max_frame_size)
        if flags & COMMAND and flags & MORE:
            raise ProtocolError("a command frame with the MORE flag")

    def _frames(self, work: bytes, pos: int, messages: list[list[bytes]]) -> int:
        """The hot loop: parse every complete frame in ``work`` from ``pos``."""
        end_of_data = len(work)
        limits = self.limits
        max_frame, max_message, max_parts = limits.max_frame_size, limits.max_message_size, limits.max_parts
        reserved = 0xFC if self.version == (2, 0) else 0xF8
        parts = self._parts
        message_size = self._message_size
        try:
            while True:
                avail = end_of_data - pos
                if avail < 2:
                    self._need = 2
                    break
                flags = work[pos]
                if flags & LONG:
                    if avail < 9:
                        self._need = 9
                        break
                    size = int.from_bytes(work[pos + 1 : pos + 9], "big")
                    start = pos + 9
                else:
                    size = work[pos + 1]
                    start = pos + 2
                if flags & reserved or size > max_frame:
                    self._check_frame(flags, size)
                if message_size + size > max_message and not flags & COMMAND:
                    # On the header, before the frame is buffered.
                    raise LimitExceeded(f"message of {message_size + size}+ bytes", max_message)
                end = start + size
                if end > end_of_data:
                    self._need = end - pos
                    break
                pos = end
                if flags & COMMAND:
                    if flags & MORE:
                        raise ProtocolError("a command frame with the MORE flag")
                    if parts:
                        raise ProtocolError("a command frame inside a multipart message")
                    self._command(work[start:end])
                    continue
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

    # -- greeting and handshake steps -----------------------------------------

    def _signature(self, head: bytes) -> None:
        if head[0] != 0xFF or not head[9] & 0x01:
            raise ProtocolError(f"not a ZMTP 2.0+ greeting (starts {head[:10].hex()})")
        revision = head[10]
        if revision == 0:
            if self.mechanism != b"NULL":
                raise DowngradeRefused(
                    f"the peer speaks ZMTP 1.0, which has no authentication; this endpoint requires "
                    f"{self.mechanism.decode()}"
                )
            raise ProtocolError("ZMTP 1.0 peers are not supported")
        if revision < 3:
            self._downgrade_to_v2()
        else:
            self._peer_major = revision
            if self.probe_downgrade:
                self._state = _State.V3_PROBE
            else:
                self._v3_greeting_start()

    def _downgrade_to_v2(self) -> None:
        if self.mechanism != b"NULL":
            # 2.0 has no mechanism: answering in 2.0 would serve (or log in
            # to) a peer that never authenticated. 2.0 has no ERROR command
            # either: the refusal is the close.
            raise DowngradeRefused(
                f"the peer speaks ZMTP 2.0, which has no authentication; this endpoint requires "
                f"{self.mechanism.decode()}"
            )
        # ZMTP 2.0: our socket type, then our identity frame.
        self.version = (2, 0)
        self._out += bytes((self.socket_type,)) + bytes((0, len(self.identity))) + self.identity
        self._state = _State.V2_SOCKET_TYPE

    def _v3_greeting_start(self) -> None:
        as_server = self.plain_authenticator is not None
        self._out += b"\x01" + self.mechanism.ljust(_MECHANISM_SIZE, b"\x00") + bytes((as_server,)) + bytes(31)
        self._state = _State.V3_GREETING

    def _v2_socket_type(self, value: int) -> None:
        # libzmq does not check 2.0 socket types; neither do we, but we record it.
        try:
            self.peer_socket_type = SocketType(value)
        except ValueError:
            self.peer_socket_type = None
        self._state = _State.V2_IDENTITY

    def _v2_identity(self, flags: int, body: bytes) -> None:
        if flags & COMMAND:
            raise ProtocolError("ZMTP 2.0 has no commands")
        self._set_identity(body)
        self._peer_ready()
        self._state = _State.TRAFFIC

    def _peer_ready(self) -> None:
        """Let the owner accept or refuse the peer before the handshake ends."""
        if self.on_peer_ready is not None:
            try:
                self.on_peer_ready(self)
            except ProtocolError as exc:
                self._out += self.error(str(exc))
                raise

    def _v3_greeting(self, rest: bytes) -> None:
        minor = rest[0]
        self.version = (3, 0) if self._peer_major == 3 and minor == 0 else (3, 1)
        mechanism = rest[1 : 1 + _MECHANISM_SIZE].rstrip(b"\x00")
        if mechanism != self.mechanism:
            self._out += self.error("unsupported mechanism")
            raise ProtocolError(f"peer wants mechanism {mechanism!r}; this endpoint speaks {self.mechanism.decode()}")
        # The peer's as-server byte is not checked: libzmq 4.3.5's PLAIN server
        # sends 0 there (seen on the wire), so roles come from configuration.
        if self.plain_credentials is not None:
            user, password = self.plain_credentials
            self._out += encode_command(b"HELLO", bytes((len(user),)) + user + bytes((len(password),)) + password)
            self._state = _State.PLAIN_WELCOME
        elif self.plain_authenticator is not None:
            self._state = _State.PLAIN_HELLO
        else:
            if self.on_peer_ready is None:
                self._out += encode_command(b"READY", self._metadata())
            # else: our READY waits for the peer's, so that a refusal (say, a
            # duplicate identity) is an ERROR *during* the handshake, which
            # libzmq takes as final, rather than after it, which it ignores.
            self._state = _State.V3_READY

    def _metadata(self) -> bytes:
        properties = [("Socket-Type", self.socket_type.name.encode())]
        if self.socket_type in (SocketType.DEALER, SocketType.REQ, SocketType.ROUTER):
            properties.append(("Identity", self.identity))
        return encode_properties(properties)

    def _v3_handshake_frame(self, flags: int, body: bytes) -> None:
        if not flags & COMMAND:
            raise ProtocolError("a message frame before the handshake completed")
        name, data = parse_command(body)
        if name == b"ERROR":
            raise PeerError(_error_reason(data))
        state = self._state
        expected = _EXPECTED[state]
        if name != expected:
            raise ProtocolError(f"unexpected command {name!r} during the handshake (expected {expected!r})")
        if state is _State.V3_READY:  # NULL, or a PLAIN client after INITIATE
            self._peer_metadata(data)
            self._peer_ready()
            if self.on_peer_ready is not None and self.mechanism == b"NULL":
                self._out += encode_command(b"READY", self._metadata())
            self._state = _State.TRAFFIC
        elif state is _State.PLAIN_WELCOME:
            self._out += encode_command(b"INITIATE", self._metadata())
            self._state = _State.V3_READY
        elif state is _State.PLAIN_HELLO:
            user, password = _plain_hello(data)
            assert self.plain_authenticator is not None
            if not self.plain_authenticator(user, password):
                self._out += self.error("invalid username or password")
                raise ProtocolError(f"PLAIN authentication failed for user {user!r}")
            self.user_id = user
            self._out += encode_command(b"WELCOME")
            self._state = _State.PLAIN_INITIATE
        else:  # PLAIN_INITIATE
            self._peer_metadata(data)
            self._peer_ready()
            self._out += encode_command(b"READY", self._metadata())
            self._state = _State.TRAFFIC

    def _peer_metadata(self, data: bytes) -> None:
        properties = parse_properties(data)
        self.peer_properties = properties
        raw_type = properties.get("socket-type")
        if raw_type is not None:
            try:
                peer_type = SocketType[raw_type.decode("ascii")]
            except (KeyError, UnicodeDecodeError):
                peer_type = None
            if peer_type is None or peer_type not in COMPATIBLE_PEERS.get(self.socket_type, frozenset()):
                self._out += self.error("invalid socket type")
                raise ProtocolError(f"a {raw_type!r} peer cannot talk to a {self.socket_type.name}")
            self.peer_socket_type = peer_type
        self._set_identity(properties.get("identity", b""))

    def _set_identity(self, identity: bytes) -> None:
        if len(identity) > self.limits.max_identity_size:
            raise LimitExceeded(f"identity of {len(identity)} bytes", self.limits.max_identity_size)
        self.peer_identity = identity

    def _command(self, body: bytes) -> None:
        """A command after the handshake: PING is answered, PONG noted,
        ERROR is fatal, anything else is dropped (as libzmq does)."""
        name, data = parse_command(body)
        if name == b"PING":
            context = data[2 : 2 + MAX_PING_CONTEXT] if len(data) >= 2 else b""
            ttl = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
            self.peer_ttl = ttl / 10 if ttl else None
            self._out += encode_command(b"PONG", context)
            self.pings_answered += 1
        elif name == b"PONG":
            self.pongs.append(data[:MAX_PING_CONTEXT])
            del self.pongs[:-8]
        elif name == b"ERROR":
            raise PeerError(_error_reason(data))


def _plain_hello(data: bytes) -> tuple[bytes, bytes]:
    """``u8 len, username, u8 len, password`` (RFC 24's ABNF, not its prose)."""
    if not data:
        raise ProtocolError("malformed PLAIN HELLO")
    user_end = 1 + data[0]
    if user_end >= len(data) or user_end + 1 + data[user_end] != len(data):
        raise ProtocolError("malformed PLAIN HELLO")
    return data[1:user_end], data[user_end + 1 :]


def _short(text: bytes) -> bytes:
    text = text[:255]
    return bytes((len(text),)) + text


def _error_reason(data: bytes) -> str:
    if data and 1 + data[0] <= len(data):
        return data[1 : 1 + data[0]].decode("utf-8", "replace")
    return data.decode("utf-8", "replace")
