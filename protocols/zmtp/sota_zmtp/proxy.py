"""ZMTP behind the bundled proxy: the ROUTER/DEALER broker, without libzmq.

Clients connect to the proxy as to a ROUTER; the proxy forwards each
message to an upstream ROUTER or REP service over its own DEALER
connections, and routes the reply back to the client that asked. A
message has no request id, so the proxy adds one: it sends
``[id, *message]`` upstream, where ``id`` is a 4-byte big-endian frame. A
ROUTER service sees ``[dealer identity, id, *message]`` and must echo the
envelope (every ROUTER service does); a REP service keeps the frames up to
the first empty one as the envelope, so clients of a REP service send the
REQ envelope (an empty first frame), as REQ sockets do. The reply comes
back as ``[id, *reply]``; the proxy strips the id and sends ``reply`` to
the client whose request carried that id. Each client is its own
connection, so routing by that id is routing by the client's identity.

Error replies (no route, no healthy upstream, overflow, timeout, upstream
reset, codec error) keep the request's envelope, the frames up to and
including the first empty frame, and add one frame
``error:<failure>[: detail]``, the same text a simple_line client gets.
"""

from __future__ import annotations

from collections.abc import Mapping

from sota_dispatch import Failure, ProxyCodec, ProxyHooks

from .engine import Limits, ZmtpEngine
from .wire import SocketType, encode_message

__all__ = ["ZMTP_HOOKS", "ZmtpHooks", "zmtp_error_reply"]

Message = list[bytes]


def _envelope(message: Message) -> Message:
    for index, frame in enumerate(message):
        if not frame:
            return message[: index + 1]
    return []


def zmtp_error_reply(request: Message, failure: Failure, detail: str = "") -> Message:
    """The request's envelope plus one ``error:`` frame (the documented format)."""
    text = f"error:{failure.value}: {detail}" if detail else f"error:{failure.value}"
    return [*_envelope(request), text.encode("utf-8", "replace")]


class ZmtpHooks(ProxyHooks[Message]):
    """ROUTER front end, DEALER upstream connections, ids as an envelope frame.

    Routing attributes: ``body``, the first frame after the envelope,
    decoded as UTF-8 (invalid bytes replaced), and ``parts``, the number of
    frames of the message.
    """

    name = "zmtp"
    id_bits = 32
    pool_mode = "multiplex"

    options: Mapping[str, str] = {
        "plain_user": "require PLAIN from clients with this username (and plain_password)",
        "plain_password": "the PLAIN password for plain_user",
        "max_message_size": "largest message accepted from a client, bytes (default 64 MiB)",
        "max_parts": "most parts in one message (default 1024)",
    }
    upstream_options: Mapping[str, str] = {
        "plain_user": "log in to the upstream with PLAIN as this user (and plain_password)",
        "plain_password": "the PLAIN password for plain_user",
        "identity": "the routing id the proxy's DEALER connections announce",
    }

    def option_errors(self, options: Mapping[str, str], *, upstream: bool = False) -> dict[str, str]:
        errors = super().option_errors(options, upstream=upstream)
        if ("plain_user" in options) != ("plain_password" in options):
            errors["plain_user" if "plain_user" not in options else "plain_password"] = (
                "plain_user and plain_password go together"
            )
        for name in ("plain_user", "plain_password"):
            if len(options.get(name, "").encode()) > 255:
                errors[name] = "at most 255 bytes (a ZMTP PLAIN field)"
        for name in ("max_message_size", "max_parts"):
            raw = options.get(name)
            if not upstream and raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
                errors[name] = f"expected a positive integer, got {raw!r}"
        if upstream and len(options.get("identity", "").encode()) > 255:
            errors["identity"] = "an identity has at most 255 bytes"
        return errors

    def downstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> ZmtpEngine:
        from .router import _plain_account  # router.py imports this module

        defaults = Limits()
        limits = Limits(
            max_frame_size=max_frame_size,
            max_message_size=int(options.get("max_message_size", defaults.max_message_size)),
            max_parts=int(options.get("max_parts", defaults.max_parts)),
        )
        return ZmtpEngine(
            SocketType.ROUTER,
            limits=limits,
            probe_downgrade=True,
            plain_authenticator=_plain_account(options),
        )

    def upstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> ZmtpEngine:
        user, password = options.get("plain_user"), options.get("plain_password")
        credentials = None if user is None or password is None else (user.encode(), password.encode())
        return ZmtpEngine(
            SocketType.DEALER,
            identity=options.get("identity", "").encode(),
            limits=Limits(max_frame_size=max_frame_size),
            plain_credentials=credentials,
        )

    def encode_request(self, frame: Message, upstream_id: int) -> bytes:
        return encode_message([upstream_id.to_bytes(4, "big"), *frame])

    def response_id(self, frame: Message) -> int | None:
        if not frame or len(frame[0]) != 4:
            return None
        return int.from_bytes(frame[0], "big")

    def encode_response(self, response: Message, request: Message) -> bytes:
        return encode_message(response[1:])

    def routing_attributes(self, frame: Message) -> Mapping[str, str]:
        envelope = len(_envelope(frame))
        body = frame[envelope] if envelope < len(frame) else b""
        return {"body": body.decode("utf-8", "replace"), "parts": str(len(frame))}

    def health_probe(self, send: str | None, codec: ProxyCodec[Message]) -> bytes | None:
        """A PING to a ZMTP 3.1 peer (older peers have none: the handshake
        is the check)."""
        assert isinstance(codec, ZmtpEngine)
        if codec.version != (3, 1):
            return None
        codec.ping(0, b"health")
        return codec.data_to_send()

    def health_probe_verdict(self, codec: ProxyCodec[Message]) -> bool | None:
        """Healthy once the PONG is in."""
        assert isinstance(codec, ZmtpEngine)
        return True if codec.pongs else None

    def error_reply(self, request: Message, failure: Failure, detail: str = "") -> bytes:
        return encode_message(zmtp_error_reply(request, failure, detail))


ZMTP_HOOKS = ZmtpHooks()
