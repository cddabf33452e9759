"""The ROUTER role: many peers, each with an identity, messages routed by it.

A :class:`Router` is shared by every connection of one server. Each
connection runs a :class:`RouterConnection`, which performs the handshake,
registers the peer's identity, and hands every message to
:meth:`Router.on_message` as ``identity, frames`` in the connection's own
task (no task or channel per message). :meth:`Router.send` routes a reply by
identity into that peer's writer without waiting: a peer that does not read
has its queue capped at ``send_hwm`` bytes, past which messages to it are
dropped (or, in mandatory mode, raise), so it never blocks anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import anyio
from anyio.abc import ByteStream

from sota_dispatch import ConnectionContext, ProtocolError, SotaError

from .connection import Heartbeat, Liveness, open_loop, pump, start_keepalive
from .curve import CurveServerKeys
from .dispatcher import ZmtpDispatcher, curve_server_of, heartbeat_of, limits_of, plain_account
from .engine import Authenticator, Limits, ZmtpEngine, generate_identity
from .wire import SocketType, encode_message

__all__ = [
    "EchoRouter",
    "HighWaterMarkError",
    "Router",
    "RouterConnection",
    "UnroutableError",
    "ZmtpEchoDispatcher",
]

log = logging.getLogger(__name__)


class UnroutableError(SotaError):
    """Mandatory mode: no peer has the message's identity (libzmq: EHOSTUNREACH)."""


class HighWaterMarkError(SotaError):
    """Mandatory mode: the peer's send queue is full (libzmq: EAGAIN)."""


class Router:
    """A ROUTER socket's peer table and routing policy.

    ``handover``: a second connection announcing an identity already in use
    takes it over and the first is closed (libzmq's ``ROUTER_HANDOVER``).
    Otherwise the first keeps the identity, and the newcomer is refused the
    way that stops it from coming back: a ZMTP 3.x peer gets an ERROR during
    the handshake and is closed (libzmq takes that as final); a ZMTP 2.0
    peer, which has no ERROR command and reconnects whenever it is closed
    (some ten times a second), is kept open and ignored, as libzmq does:
    nothing it sends is delivered, replies to the identity go to the first
    peer, and it is logged once and counted in :attr:`duplicates_ignored`.
    ``mandatory``: sending to an unknown identity or a full queue raises
    instead of dropping (``ROUTER_MANDATORY``). ``send_hwm``: bytes queued per peer at which its
    queue counts as full (a message is always accepted into a queue below it).
    ``plain_authenticator``: require the PLAIN mechanism and accept a peer
    when ``plain_authenticator(username, password)`` is true; a refused peer
    gets an ERROR command (libzmq then does not reconnect). ``curve``:
    require CURVE (:class:`~sota_zmtp.curve.CurveServerKeys`: this server's
    secret key, and the check of each client's public key). ``heartbeat``:
    PING every peer and close silent ones (see :class:`Heartbeat`).
    """

    def __init__(
        self,
        *,
        handover: bool = False,
        mandatory: bool = False,
        send_hwm: int = 4 * 1024 * 1024,
        limits: Limits | None = None,
        plain_authenticator: Authenticator | None = None,
        curve: CurveServerKeys | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.handover = handover
        self.curve = curve
        self.heartbeat = heartbeat
        self.plain_authenticator = plain_authenticator
        self.mandatory = mandatory
        self.send_hwm = send_hwm
        self.limits = limits or Limits()
        self.peers: dict[bytes, RouterConnection] = {}
        #: Messages dropped: unknown identity, or the peer's queue full.
        self.dropped = 0
        #: ZMTP 2.0 connections kept open but ignored: their identity was taken.
        self.duplicates_ignored = 0

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        """Handle one message from peer ``identity``; override this.

        Runs in the sending peer's connection task; keep it quick, or start a
        task for slow work. The default drops the message.
        """

    def send(self, message: Sequence[bytes]) -> bool:
        """Route ``[identity, frame, ...]`` to its peer; True if queued.

        Never waits. Drops (returning False, counted in :attr:`dropped`) when
        the identity is unknown or the peer's queue is over ``send_hwm``; in
        mandatory mode raises :class:`UnroutableError` or
        :class:`HighWaterMarkError` instead.
        """
        if len(message) < 2:
            raise ValueError("a ROUTER message is [identity, frame, ...]")
        peer = self.peers.get(message[0])
        if peer is None:
            if self.mandatory:
                raise UnroutableError(f"no peer with identity {message[0]!r}")
            self.dropped += 1
            return False
        writer = peer.writer
        if writer.pending >= self.send_hwm:  # full: at most send_hwm + one message
            if self.mandatory:
                raise HighWaterMarkError(f"peer {message[0]!r} has {writer.pending} bytes queued")
            self.dropped += 1
            return False
        writer.write(encode_message(message[1:]))
        peer.flush_soon()
        return True

    def factory(self, stream: ByteStream, context: ConnectionContext) -> RouterConnection:
        """The dispatcher factory for a :class:`~sota_dispatch.Server`."""
        return RouterConnection(stream, context, router=self)

    def _attach(self, connection: RouterConnection, identity: bytes) -> bytes | None:
        """Register the peer under its identity; None: a 2.0 duplicate, to ignore."""
        if identity[:1] == b"\x00":
            # RFC 37 reserves a leading zero for generated ids; accepting one
            # from the wire would let a peer impersonate an anonymous peer.
            raise ProtocolError(f"identity {identity!r} starts with a zero byte, reserved for generated ids")
        if not identity:
            identity = generate_identity()
            while identity in self.peers:
                identity = generate_identity()
        old = self.peers.get(identity)
        if old is not None:
            if not self.handover:
                if connection.engine.version == (2, 0):
                    # Closing it would only start a reconnect storm (no ERROR in 2.0).
                    self.duplicates_ignored += 1
                    log.warning(
                        "zmtp: identity %r is already connected; ignoring ZMTP 2.0 conn %d (nothing it sends "
                        "is delivered)",
                        identity,
                        connection.context.connection_id,
                    )
                    return None
                raise DuplicateIdentityError(identity)
            log.info("zmtp: identity %r handed over to conn %d", identity, connection.context.connection_id)
            old.identity = None
            old.close_soon()
        self.peers[identity] = connection
        return identity

    def _detach(self, connection: RouterConnection) -> None:
        identity = connection.identity
        if identity is not None and self.peers.get(identity) is connection:
            del self.peers[identity]


class DuplicateIdentityError(ProtocolError):
    """A peer announced an identity that another connected peer has."""

    def __init__(self, identity: bytes) -> None:
        super().__init__(f"identity {identity!r} is already connected")
        self.identity = identity


class EchoRouter(Router):
    """Sends every message back to its sender (identity envelope kept)."""

    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        self.send([identity, *frames])


class RouterConnection(ZmtpDispatcher):
    """One peer of a :class:`Router`: handshake, then messages both ways."""

    def __init__(self, stream: ByteStream, context: ConnectionContext | None = None, *, router: Router) -> None:
        super().__init__(stream, context)
        self.router = router
        # The accepting side may wait for the peer's bytes 11-12 before it
        # picks 2.0 or 3.x; a connecting ROUTER must not (see ZmtpEngine).
        self.engine = ZmtpEngine(
            SocketType.ROUTER,
            limits=router.limits,
            probe_downgrade=self.context.role == "server",
            plain_authenticator=router.plain_authenticator,
            curve_server=router.curve,
            on_peer_ready=self._identify,
        )
        #: The peer's routing identity once the handshake is done.
        self.identity: bytes | None = None
        #: True for a ZMTP 2.0 peer whose identity another peer has: kept
        #: open, nothing delivered (see :class:`Router`).
        self.ignored = False

    def _identify(self, engine: ZmtpEngine) -> None:
        # Called by the engine when the peer's READY (or 2.0 identity frame)
        # arrives, before our READY: a refusal becomes an ERROR in the handshake.
        self.identity = self.router._attach(self, engine.peer_identity)
        self.ignored = self.identity is None

    async def serve(self) -> None:
        try:
            loop = open_loop(self, self.engine, self.router.limits.handshake_timeout)
            await loop.handshake()
            liveness = Liveness(anyio.current_time())
            start_keepalive(self, self.engine, self.router.heartbeat, liveness)
            if self.ignored:
                # Read on (limits still apply, and the close is noticed),
                # deliver nothing.
                await pump(self, loop, _discard, None, liveness)
                return
            identity = self.identity
            assert identity is not None  # set by _identify during the handshake
            await pump(self, loop, self.router.on_message, identity, liveness)
        finally:
            self.router._detach(self)


async def _discard(_key: None, _frames: list[bytes]) -> None:
    """What an ignored duplicate sends goes nowhere (libzmq's behaviour)."""


class ZmtpEchoDispatcher(RouterConnection):
    """ZeroMQ ROUTER (ZMTP 2.0/3.x, NULL) echoing every message to its sender."""

    #: One router per distinct set of options in this process: the
    #: connections of one server share it, servers configured differently
    #: (say, one with PLAIN and one without) never do.
    _shared: ClassVar[dict[tuple[tuple[str, str], ...], EchoRouter]] = {}

    def __init__(self, stream: ByteStream, context: ConnectionContext | None = None) -> None:
        options = context.options if context is not None else {}
        key = tuple(sorted(options.items()))
        router = ZmtpEchoDispatcher._shared.get(key)
        if router is None:
            values = self.option_values(options, "service")
            router = EchoRouter(
                handover=values["handover"],
                send_hwm=values["send_hwm"],
                limits=limits_of(values),
                plain_authenticator=plain_account(values),
                curve=curve_server_of(values),
                heartbeat=heartbeat_of(values),
            )
            ZmtpEchoDispatcher._shared[key] = router
        super().__init__(stream, context, router=router)
