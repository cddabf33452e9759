"""ZMTP as one protocol class: options, codecs and the proxy's frame semantics.

:class:`ZmtpDispatcher` declares what every ZMTP connection shares; the
ROUTER and DEALER connections (:mod:`~sota_zmtp.router`,
:mod:`~sota_zmtp.dealer`) subclass it, and the ``zmtp`` echo service is a
ROUTER connection.

Behind the bundled proxy, clients connect as to a ROUTER; the proxy
forwards each message to an upstream ROUTER or REP service over its own
DEALER connections, and routes the reply back to the client that asked. A
message has no request id, so the proxy adds one: it sends ``[id,
*message]`` upstream, where ``id`` is a 4-byte big-endian frame. A ROUTER
service sees ``[dealer identity, id, *message]`` and must echo the
envelope (every ROUTER service does); a REP service keeps the frames up to
the first empty one as the envelope, so clients of a REP service send the
REQ envelope (an empty first frame), as REQ sockets do. The reply comes
back as ``[id, *reply]``; the proxy strips the id and sends ``reply`` to
the client whose request carried that id.

Error replies (no route, no healthy upstream, overflow, timeout, upstream
reset, codec error) keep the request's envelope, the frames up to and
including the first empty frame, and add one frame
``error:<failure>[: detail]``, the same text a simple_line client gets.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import sota_zmtp.semantics as semantics
from sota_dispatch import CallAnswer, Codec, Dispatcher, Failure, Match, Option, OptionSchema

from .connection import Heartbeat
from .curve import CurveClientKeys, CurveServerKeys, curve_available, curve_key
from .engine import Authenticator, Limits, ZmtpEngine
from .wire import SocketType, encode_message

__all__ = [
    "ZmtpDispatcher",
    "curve_client_of",
    "curve_server_of",
    "heartbeat_of",
    "limits_of",
    "plain_account",
    "zmtp_error_reply",
]

Message = list[bytes]

_DEFAULTS = Limits()
_SERVICE: frozenset[Any] = frozenset({"service"})
_SERVER_SIDE: frozenset[Any] = frozenset({"service", "listener"})
_PLAIN_FIELD = Option.text_of_at_most(255)  # a ZMTP PLAIN field's length is one byte


def _envelope(message: Message) -> Message:
    for index, frame in enumerate(message):
        if not frame:
            return message[: index + 1]
    return []


def zmtp_error_reply(request: Message, failure: Failure, detail: str = "") -> Message:
    """The request's envelope plus one ``error:`` frame (the documented format)."""
    text = f"error:{failure.value}: {detail}" if detail else f"error:{failure.value}"
    return [*_envelope(request), text.encode("utf-8", "replace")]


def limits_of(options: Mapping[str, Any], max_frame_size: int | None = None) -> Limits:
    """The engine limits of a connection, from its option values."""
    return Limits(
        max_frame_size=max_frame_size or options.get("max_frame_size") or _DEFAULTS.max_frame_size,
        max_message_size=options.get("max_message_size") or _DEFAULTS.max_message_size,
        max_parts=options.get("max_parts") or _DEFAULTS.max_parts,
        handshake_timeout=options.get("handshake_timeout") or _DEFAULTS.handshake_timeout,
    )


def heartbeat_of(options: Mapping[str, Any]) -> Heartbeat | None:
    """Our heartbeat, from option values (None: no ``heartbeat_interval``)."""
    interval = options.get("heartbeat_interval")
    return None if interval is None else Heartbeat(interval, options.get("heartbeat_timeout"))


def plain_account(options: Mapping[str, Any]) -> Authenticator | None:
    """A PLAIN authenticator accepting the one account of the options, if any."""
    user, password = options.get("plain_user"), options.get("plain_password")
    if user is None or password is None:
        return None
    expected = user.encode() + b"\x00" + password.encode()

    def check(username: bytes, secret: bytes) -> bool:
        return hmac.compare_digest(username + b"\x00" + secret, expected)

    return check


def _key(text: str) -> bytes:
    """An option's CURVE key (Z85, 40 characters; or 64 hex digits)."""
    return curve_key(text.strip())


def _keys(text: str) -> tuple[bytes, ...]:
    """Comma-separated CURVE public keys."""
    return tuple(_key(item) for item in text.split(",") if item.strip())


def curve_server_of(options: Mapping[str, Any]) -> CurveServerKeys | None:
    """A CURVE server from option values (None: no ``curve_secret_key``):
    clients must present one of ``curve_clients`` when that is given."""
    secret = options.get("curve_secret_key")
    if secret is None:
        return None
    allowed = options.get("curve_clients")
    check = None if allowed is None else frozenset(allowed).__contains__
    return CurveServerKeys(secret, check)


def curve_client_of(options: Mapping[str, Any]) -> CurveClientKeys | None:
    """A CURVE client from option values (None: no ``curve_server_key``)."""
    server = options.get("curve_server_key")
    if server is None:
        return None
    secret = options.get("curve_secret_key")
    return CurveClientKeys(server) if secret is None else CurveClientKeys(server, secret)


class ZmtpDispatcher(Dispatcher):
    """ZMTP 2.0/3.x: ROUTER to clients, DEALER upstream, ids as an envelope frame.

    Routing attributes: ``body``, the first frame after the envelope,
    decoded as UTF-8 (invalid bytes replaced), and ``parts``, the number of
    frames of the message.
    """

    protocol_name: ClassVar[str] = "zmtp"
    id_bits: ClassVar[int] = 32
    #: Both peers send their greeting at once: a peer that waits for ours
    #: first must get it without having sent anything.
    speaks_first: ClassVar[bool | None] = True
    pool_mode = "multiplex"
    options: ClassVar[OptionSchema] = OptionSchema(
        handover=Option(
            "1: a reused identity takes over the old connection (default 0: refused)", Option.flag, False, _SERVICE
        ),
        send_hwm=Option(
            "bytes queued per peer before messages to it are dropped (default 4 MiB)",
            Option.positive_int,
            4 * 1024 * 1024,
            _SERVICE,
        ),
        max_frame_size=Option(
            "largest frame accepted, bytes (default 16 MiB; a proxy listener has its own max_frame_size)",
            Option.positive_int,
            _DEFAULTS.max_frame_size,
            _SERVICE,
        ),
        max_message_size=Option(
            "largest message accepted, bytes (default 64 MiB)",
            Option.positive_int,
            _DEFAULTS.max_message_size,
            _SERVER_SIDE,
        ),
        max_parts=Option("most parts in one message (default 1024)", Option.positive_int, _DEFAULTS.max_parts),
        handshake_timeout=Option(
            "seconds to complete the handshake (default 10)", Option.seconds, _DEFAULTS.handshake_timeout, _SERVICE
        ),
        plain_user=Option(
            "PLAIN username (with plain_password): required from peers of a service or listener, "
            "used to log in to a cluster's endpoints",
            _PLAIN_FIELD,
            places=frozenset({"service", "listener", "cluster"}),
        ),
        plain_password=Option(
            "the PLAIN password for plain_user", _PLAIN_FIELD, places=frozenset({"service", "listener", "cluster"})
        ),
        curve_secret_key=Option(
            "CURVE: this end's long-term secret key (Z85): a service or listener then requires CURVE "
            "from its peers; a cluster's connections use it as their client key",
            _key,
            places=frozenset({"service", "listener", "cluster"}),
        ),
        curve_clients=Option(
            "CURVE: the public keys (Z85, comma separated) a service or listener accepts (default: any)",
            _keys,
            places=_SERVER_SIDE,
        ),
        curve_server_key=Option(
            "CURVE: the public key (Z85) of a cluster's endpoints; the connections then log in with CURVE",
            _key,
            places=frozenset({"cluster"}),
        ),
        heartbeat_interval=Option(
            "seconds between our PINGs to 3.1 peers (default: none)", Option.seconds, None, _SERVICE
        ),
        heartbeat_timeout=Option(
            "close a 3.1 peer silent this long (default: 3 intervals)", Option.seconds, None, _SERVICE
        ),
        identity=Option(
            "the routing id the proxy's DEALER connections announce",
            Option.text_of_at_most(255),
            "",
            frozenset({"cluster"}),
        ),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any], place: Any) -> dict[str, str]:
        if (values.get("plain_user") is None) != (values.get("plain_password") is None):
            missing = "plain_user" if values.get("plain_user") is None else "plain_password"
            return {missing: "plain_user and plain_password go together"}
        curve = values.get("curve_secret_key") is not None or values.get("curve_server_key") is not None
        if curve and values.get("plain_user") is not None:
            return {"plain_user": "a connection uses PLAIN or CURVE, not both"}
        if values.get("curve_clients") is not None and values.get("curve_secret_key") is None:
            return {"curve_clients": "needs curve_secret_key (the server's own key)"}
        if curve and not curve_available():
            name = "curve_secret_key" if values.get("curve_secret_key") is not None else "curve_server_key"
            return {name: "CURVE needs PyNaCl: pip install 'sota-zmtp[curve]'"}
        return {}

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """A ZMTP 2.0+ greeting: ``FF``, 8 bytes, then a byte with bit 0 set."""
        if prefix[:1] not in (b"", b"\xff"):
            return Match.NO
        if len(prefix) < 10:
            return Match.NEED_MORE
        return Match.YES if prefix[9] & 0x01 else Match.NO

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> ZmtpEngine:
        """A ROUTER engine that may wait for the peer's bytes 11-12 before
        it picks 2.0 or 3.x (we accepted the connection)."""
        return ZmtpEngine(
            SocketType.ROUTER,
            limits=limits_of(options, max_frame_size),
            probe_downgrade=True,
            plain_authenticator=plain_account(options),
            curve_server=curve_server_of(options),
        )

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> ZmtpEngine:
        """A DEALER engine announcing the ``identity`` option."""
        user, password = options.get("plain_user"), options.get("plain_password")
        credentials = None if user is None or password is None else (user.encode(), password.encode())
        return ZmtpEngine(
            SocketType.DEALER,
            identity=(options.get("identity") or "").encode(),
            limits=Limits(max_frame_size=max_frame_size),
            plain_credentials=credentials,
            curve_client=curve_client_of(options),
        )

    # Per message: plain functions (compiled in the compiled build), not
    # classmethods of this interpreted class (see sota_zmtp.semantics).
    encode_request = staticmethod(semantics.encode_request)
    response_id = staticmethod(semantics.response_id)
    encode_response = staticmethod(semantics.encode_response)

    @classmethod
    def routing_attributes(cls, frame: Message) -> Mapping[str, str]:
        envelope = len(_envelope(frame))
        body = frame[envelope] if envelope < len(frame) else b""
        return {"body": body.decode("utf-8", "replace"), "parts": str(len(frame))}

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[Message]) -> bytes | None:
        """A PING to a ZMTP 3.1 peer (older peers have none: the handshake
        is the check)."""
        assert isinstance(codec, ZmtpEngine)
        if codec.version != (3, 1):
            return None
        codec.ping(0, b"health")
        return codec.data_to_send()

    @classmethod
    def health_probe_verdict(cls, codec: Codec[Message]) -> bool | None:
        """Healthy once the PONG is in."""
        assert isinstance(codec, ZmtpEngine)
        return True if codec.pongs else None

    @classmethod
    def error_reply(cls, request: Message, failure: Failure, detail: str = "") -> bytes:
        return encode_message(zmtp_error_reply(request, failure, detail))

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> Message:
        """One message, a frame per word, behind an empty delimiter frame
        (sent as ``[id, "", *words]``: what a REQ socket sends through a
        DEALER). The delimiter ends the envelope, so a ROUTER echo, a REP
        service and the proxy's error replies all answer with the id in
        front, where the answer is matched by it."""
        if fields:
            raise ValueError(f"a ZMTP message has no headers ({', '.join(sorted(fields))})")
        if not words:
            raise ValueError("no message: give its frames, one word each")
        return [b"", *(word.encode() for word in words)]

    @classmethod
    def describe_answer(cls, frame: Message) -> CallAnswer:
        """The answer's frames after the envelope (the id and the
        delimiter), as a JSON list; an ``error:`` frame alone (the proxy's
        error reply) is an error answer."""
        body = frame[1:]  # the id frame
        envelope = _envelope(body)
        body = body[len(envelope) :]
        frames = [CallAnswer.text_of(part) for part in body]
        data: dict[str, Any] = {"frames": frames}
        if envelope[:-1]:  # more than the delimiter: a REP's or a router's routing frames
            data["envelope"] = [CallAnswer.text_of(part) for part in envelope]
        ok = not (len(body) == 1 and body[0].startswith(b"error:"))
        return CallAnswer(ok=ok, text=json.dumps(frames, ensure_ascii=False), data=data)
