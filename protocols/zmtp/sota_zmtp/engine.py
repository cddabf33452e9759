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

This module is the state machine: which step comes next, and what to send
and to check at each. The bytes each step reads and writes are in the
modules below it, each importing only downward: :mod:`.greeting` (signature,
version negotiation), :mod:`.mechanisms` (NULL and PLAIN commands, ERROR),
:mod:`.curve` (CURVE's commands, crypto and sealed traffic),
:mod:`.frames` (the frame reader, the hot loop), :mod:`.wire` (encoders),
:mod:`.limits` and :mod:`.errors`. The names other modules import from here
(:class:`Limits`, :class:`PeerError`, :class:`DowngradeRefused`,
:data:`Authenticator`, :func:`generate_identity`) are re-exported.
"""

from __future__ import annotations

from collections.abc import Callable

from sota_dispatch import ChunkBuffer, LimitExceeded, ProtocolError

from .curve import CurveClient, CurveClientKeys, CurveServer, CurveServerKeys, CurveSession, SealedReader, z85_encode
from .errors import DowngradeRefused, PeerError
from .frames import V2_RESERVED, FrameReader
from .greeting import (
    START_SIZE,
    V3_REST_SIZE,
    greeting_start,
    opens_identity_frame,
    peer_revision,
    read_v3_rest,
    v2_rest,
    v2_socket_type,
    v3_rest,
)
from .handoff import HandOffMixin
from .handshake import EXPECTED, State
from .identity import generate_identity
from .limits import Limits
from .mechanisms import (
    Authenticator,
    compatible_peer_type,
    error_command,
    error_reason,
    hello_command,
    metadata,
    parse_hello,
)
from .wire import COMMAND, SocketType, encode_command, encode_message, parse_command, parse_properties

__all__ = ["Authenticator", "DowngradeRefused", "Limits", "PeerError", "ZmtpEngine", "generate_identity"]

#: Longest PING context echoed in a PONG (zeromq/rfc#130).
MAX_PING_CONTEXT = 16


class ZmtpEngine(HandOffMixin):
    """One ZMTP connection's protocol state.

    ``socket_type`` is ours; ``identity`` is the routing id we announce (for a
    DEALER) or empty. The mechanism is NULL unless ``plain_credentials`` (we
    are a PLAIN client: ``(username, password)``), ``plain_authenticator``
    (we are a PLAIN server, RFC 24), ``curve_client`` or ``curve_server``
    (CURVE, RFC 26: see :mod:`~sota_zmtp.curve`) is given; an endpoint with
    a mechanism never falls back to ZMTP 2.0 or NULL. After the handshake,
    :attr:`version`, :attr:`peer_socket_type`, :attr:`peer_identity`,
    :attr:`peer_properties` and, for a PLAIN or CURVE server,
    :attr:`user_id` (the username, or the client's long-term public key in
    Z85) describe the peer.
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
        curve_client: CurveClientKeys | None = None,
        curve_server: CurveServerKeys | None = None,
        on_peer_ready: Callable[[ZmtpEngine], None] | None = None,
    ) -> None:
        if len(identity) > 255:
            raise ValueError("an identity has at most 255 bytes")
        given = [plain_credentials, plain_authenticator, curve_client, curve_server]
        if sum(x is not None for x in given) > 1:
            raise ValueError("an endpoint has one mechanism, in one role (PLAIN or CURVE, client or server)")
        if plain_credentials is not None and not all(len(x) < 256 for x in plain_credentials):
            raise ValueError("PLAIN username and password have at most 255 bytes")
        self.plain_credentials = plain_credentials
        self.plain_authenticator = plain_authenticator
        self.on_peer_ready = on_peer_ready
        self.curve_client = curve_client
        self.curve_server = curve_server
        self.mechanism = b"NULL"
        if plain_credentials is not None or plain_authenticator is not None:
            self.mechanism = b"PLAIN"
        elif curve_client is not None or curve_server is not None:
            self.mechanism = b"CURVE"
        #: The PLAIN username, or CURVE long-term public key (Z85), the
        #: peer authenticated with (server side).
        self.user_id: bytes | None = None
        self._curve: CurveClient | CurveServer | None = None
        #: The sealed traffic of a CURVE connection (None: plaintext frames).
        self.session: CurveSession | None = None
        #: Whether :meth:`encode` and :meth:`data_to_send` seal (CURVE) what
        #: they give; False once :meth:`output_sealing` handed that to a writer.
        self.seal_output = True
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
        self._state = State.SIGNATURE
        self._out = bytearray(greeting_start(len(identity)))
        # Unparsed input: a frame's chunks joined only once it can be complete.
        self._buffer = ChunkBuffer()
        self._reader = FrameReader(self.limits, START_SIZE)
        #: The reader of the traffic (CURVE: one that opens sealed frames).
        self._active: FrameReader | SealedReader = self._reader

    # -- state ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once messages may flow (the peer's READY has arrived)."""
        return self._state is State.TRAFFIC

    def check(self) -> None:
        """Raise the error found after the last messages handed out, if any."""
        if self.pending_error is not None:
            raise self.pending_error

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed (a partial frame or greeting), and
        the parts of a message not complete yet (a drain waits for both)."""
        return len(self._buffer) + self._active.pending

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
        if self._state is not State.TRAFFIC:
            raise RuntimeError("the ZMTP handshake is not complete")
        if self.session is not None and self.seal_output:
            return self.session.seal_message(frames)
        return encode_message(frames)

    def output_sealing(self) -> Callable[[bytes], bytes] | None:
        """After a CURVE handshake, hand the sealing of outgoing frames to the
        connection's writer (see :class:`~sota_dispatch.Codec`): what it is
        given is plaintext ZMTP frames, from this engine or anyone else, and
        :meth:`encode` and :meth:`data_to_send` give plaintext from now on."""
        if self.session is None:
            return None
        self.seal_output = False
        return self.session.seal_frames

    def _command_frame(self, name: bytes, data: bytes = b"") -> bytes:
        """A command after the handshake (sealed on a CURVE connection)."""
        if self.session is not None and self.seal_output:
            return self.session.seal_command(name, data)
        return encode_command(name, data)

    def ping(self, ttl_deciseconds: int = 0, context: bytes = b"") -> None:
        """Queue a PING (ZMTP 3.1 only)."""
        if self.version != (3, 1):
            raise RuntimeError(f"PING needs ZMTP 3.1, the peer speaks {self.version}")
        if not 0 <= ttl_deciseconds <= 0xFFFF or len(context) > MAX_PING_CONTEXT:
            raise ValueError("ttl is 0..65535 deciseconds, context at most 16 bytes")
        self._out += self._command_frame(b"PING", ttl_deciseconds.to_bytes(2, "big") + context)

    def error(self, reason: str) -> bytes:
        """The ERROR command to send before closing (3.x; empty for 2.0)."""
        if (self.version is not None and self.version < (3, 0)) or self.session is not None:
            return b""  # 2.0 has no ERROR; after a CURVE handshake only sealed frames travel
        return error_command(reason)

    # -- incoming --------------------------------------------------------------

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Parse ``data``; return the messages it completed, oldest first.

        Messages that arrived before bad bytes are returned first; the error
        is raised by the next call (or by :meth:`check`).
        """
        self.check()
        messages: list[list[bytes]] = []
        buffer = self._buffer
        pos = 0
        if self._state is not State.TRAFFIC:
            work = buffer.take(data, self._active.need)
            if work is None:
                return messages
            pos = self._handshake(work, messages)
            if not self.ready:
                buffer.keep(work, pos)
                return messages
            buffer.keep(work, len(work))  # the messages right behind it are read below
            data = work
        # Only a frame begun in an earlier feed is copied (see ChunkBuffer.parse).
        self.pending_error = buffer.parse(data, messages, self._traffic, self._needed, pos)
        return messages

    def _needed(self) -> int:
        return self._active.need

    def _traffic(self, work: bytes, pos: int, messages: list[list[bytes]]) -> int:
        """Read messages (and answer commands) in ``work`` from ``pos``;
        return where the first unfinished frame starts."""
        reader = self._active
        pos = reader.read(work, pos, messages)
        while reader.command is not None:  # it stopped at a command
            command, reader.command = reader.command, None
            self._command(command)
            pos = reader.read(work, pos, messages)
        return pos

    def _handshake(self, work: bytes, messages: list[list[bytes]]) -> int:
        """Advance through the greeting and handshake; return the bytes used."""
        reader = self._reader
        pos = 0
        while self._state is not State.TRAFFIC:
            avail = len(work) - pos
            state = self._state
            if state is State.SIGNATURE:
                if avail < START_SIZE:
                    reader.need = START_SIZE
                    return pos
                self._signature(work[pos : pos + START_SIZE])
                pos += START_SIZE
            elif state is State.V3_PROBE:
                if avail < 2:
                    reader.need = 2
                    return pos
                if opens_identity_frame(work[pos + 1]):
                    # Byte 12 opens an identity frame, not a mechanism name:
                    # a peer that took us for 2.0 (as libzmq does facing a
                    # revision-1 server) sent its socket type as byte 11.
                    self._downgrade_to_v2()
                else:
                    self._v3_greeting_start()
            elif state is State.V2_SOCKET_TYPE:
                if avail < 1:
                    reader.need = 1
                    return pos
                # libzmq does not check 2.0 socket types; neither do we, but we record it.
                self.peer_socket_type = v2_socket_type(work[pos])
                self._state = State.V2_IDENTITY
                pos += 1
            elif state is State.V3_GREETING:
                if avail < V3_REST_SIZE:
                    reader.need = V3_REST_SIZE
                    return pos
                self._v3_greeting(work[pos : pos + V3_REST_SIZE])
                pos += V3_REST_SIZE
            else:  # a frame: the v2 identity frame, or the v3 READY command
                frame = reader.read_one(work, pos)
                if frame is None:
                    return pos
                flags, body, pos = frame
                if state is State.V2_IDENTITY:
                    self._v2_identity(flags, body)
                else:
                    self._v3_handshake_frame(flags, body)
        reader.need = 2
        return pos

    # -- greeting and handshake steps -----------------------------------------

    def _signature(self, head: bytes) -> None:
        revision = peer_revision(head)
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
                self._state = State.V3_PROBE
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
        self._reader.reserved = V2_RESERVED
        self._out += v2_rest(self.socket_type, self.identity)
        self._state = State.V2_SOCKET_TYPE

    def _v3_greeting_start(self) -> None:
        as_server = self.plain_authenticator is not None or self.curve_server is not None
        self._out += v3_rest(self.mechanism, as_server)
        self._state = State.V3_GREETING

    def _v2_identity(self, flags: int, body: bytes) -> None:
        if flags & COMMAND:
            raise ProtocolError("ZMTP 2.0 has no commands")
        self._set_identity(body)
        self._peer_ready()
        self._state = State.TRAFFIC

    def _peer_ready(self) -> None:
        """Let the owner accept or refuse the peer before the handshake ends."""
        if self.on_peer_ready is not None:
            try:
                self.on_peer_ready(self)
            except ProtocolError as exc:
                self._out += self.error(str(exc))
                raise

    def _v3_greeting(self, rest: bytes) -> None:
        self.version, mechanism = read_v3_rest(self._peer_major, rest)
        if mechanism != self.mechanism:
            self._out += self.error("unsupported mechanism")
            raise ProtocolError(f"peer wants mechanism {mechanism!r}; this endpoint speaks {self.mechanism.decode()}")
        if self.plain_credentials is not None:
            self._out += hello_command(*self.plain_credentials)
            self._state = State.PLAIN_WELCOME
        elif self.plain_authenticator is not None:
            self._state = State.PLAIN_HELLO
        elif self.curve_client is not None:
            curve = self._curve = CurveClient(self.curve_client)
            self._out += encode_command(b"HELLO", curve.hello())
            self._state = State.CURVE_WELCOME
        elif self.curve_server is not None:
            self._curve = CurveServer(self.curve_server)
            self._state = State.CURVE_HELLO
        else:
            if self.on_peer_ready is None:
                self._out += encode_command(b"READY", self._metadata())
            # else: our READY waits for the peer's, so that a refusal (say, a
            # duplicate identity) is an ERROR *during* the handshake, which
            # libzmq takes as final, rather than after it, which it ignores.
            self._state = State.V3_READY

    def _metadata(self) -> bytes:
        return metadata(self.socket_type, self.identity)

    def _v3_handshake_frame(self, flags: int, body: bytes) -> None:
        if not flags & COMMAND:
            raise ProtocolError("a message frame before the handshake completed")
        name, data = parse_command(body)
        if name == b"ERROR":
            raise PeerError(error_reason(data))
        state = self._state
        expected = EXPECTED[state]
        if name != expected:
            raise ProtocolError(f"unexpected command {name!r} during the handshake (expected {expected!r})")
        if state is State.V3_READY:  # NULL, or a PLAIN client after INITIATE
            self._peer_metadata(data)
            self._peer_ready()
            if self.on_peer_ready is not None and self.mechanism == b"NULL":
                self._out += encode_command(b"READY", self._metadata())
            self._state = State.TRAFFIC
        elif state is State.PLAIN_WELCOME:
            self._out += encode_command(b"INITIATE", self._metadata())
            self._state = State.V3_READY
        elif state is State.PLAIN_HELLO:
            user, password = parse_hello(data)
            assert self.plain_authenticator is not None
            if not self.plain_authenticator(user, password):
                self._out += self.error("invalid username or password")
                raise ProtocolError(f"PLAIN authentication failed for user {user!r}")
            self.user_id = user
            self._out += encode_command(b"WELCOME")
            self._state = State.PLAIN_INITIATE
        elif state is State.PLAIN_INITIATE:
            self._peer_metadata(data)
            self._peer_ready()
            self._out += encode_command(b"READY", self._metadata())
            self._state = State.TRAFFIC
        else:
            self._curve_step(state, data)

    def _curve_step(self, state: State, data: bytes) -> None:
        """One CURVE handshake command (RFC 26), in the order :data:`EXPECTED` allows."""
        curve = self._curve
        if state is State.CURVE_HELLO:
            assert isinstance(curve, CurveServer)
            self._out += encode_command(b"WELCOME", curve.hello(data))
            self._state = State.CURVE_INITIATE
        elif state is State.CURVE_WELCOME:
            assert isinstance(curve, CurveClient)
            curve.welcome(data)
            self._out += encode_command(b"INITIATE", curve.initiate(self._metadata()))
            self._state = State.CURVE_READY
        elif state is State.CURVE_INITIATE:
            assert isinstance(curve, CurveServer)
            client_key, metadata = curve.initiate(data)
            check = curve.keys.authenticator
            if check is not None and not check(client_key):
                self._out += self.error("400")  # as ZAP refuses: libzmq reports HANDSHAKE_FAILED_AUTH 400
                raise ProtocolError(f"CURVE client key {z85_encode(client_key)} is not allowed")
            self.user_id = z85_encode(client_key).encode()
            self._peer_metadata(metadata)
            self._peer_ready()
            ready, session = curve.ready(self._metadata())
            self._out += encode_command(b"READY", ready)
            self._start_sealed(session)
        else:  # CURVE_READY
            assert isinstance(curve, CurveClient)
            metadata, session = curve.ready(data)
            self._peer_metadata(metadata)
            self._peer_ready()
            self._start_sealed(session)

    def _start_sealed(self, session: CurveSession) -> None:
        self.session = session
        self._active = SealedReader(self.limits, session)
        self._curve = None  # the transient secrets are in the session now
        self._state = State.TRAFFIC

    def _peer_metadata(self, data: bytes) -> None:
        properties = parse_properties(data)
        self.peer_properties = properties
        raw_type = properties.get("socket-type")
        if raw_type is not None:
            peer_type = compatible_peer_type(raw_type, self.socket_type)
            if peer_type is None:
                self._out += self.error("invalid socket type")
                raise ProtocolError(f"a {raw_type!r} peer cannot talk to a {self.socket_type.name}")
            self.peer_socket_type = peer_type
        self._set_identity(properties.get("identity", b""))

    def _set_identity(self, identity: bytes) -> None:
        if len(identity) > self.limits.max_identity_size:
            raise LimitExceeded(f"identity of {len(identity)} bytes", self.limits.max_identity_size)
        self.peer_identity = identity

    # -- commands after the handshake -------------------------------------------

    def _command(self, body: bytes) -> None:
        """A command after the handshake: PING is answered, PONG noted,
        ERROR is fatal, anything else is dropped (as libzmq does)."""
        name, data = parse_command(body)
        if name == b"PING":
            context = data[2 : 2 + MAX_PING_CONTEXT] if len(data) >= 2 else b""
            ttl = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
            self.peer_ttl = ttl / 10 if ttl else None
            self._out += self._command_frame(b"PONG", context)
            self.pings_answered += 1
        elif name == b"PONG":
            self.pongs.append(data[:MAX_PING_CONTEXT])
            del self.pongs[:-8]
        elif name == b"ERROR":
            raise PeerError(error_reason(data))
