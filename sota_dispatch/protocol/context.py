"""What a dispatcher knows about its connection besides the bytes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from ..io.address import format_address
from ..io.tls import peer_names

__all__ = ["ConnectionContext"]

_connection_ids = itertools.count(1)


def _next_connection_id() -> int:
    return next(_connection_ids)


@attrs.frozen
class ConnectionContext:
    """What a dispatcher knows about its connection besides the bytes."""

    #: Unique in this process; appears in every log line about the connection.
    connection_id: int = attrs.field(factory=_next_connection_id)
    protocol: str = ""
    role: Literal["server", "client"] = "server"
    local_address: str | None = None
    remote_address: str | None = None
    #: Protocol options (``--option name=value``), as given.
    options: Mapping[str, str] = attrs.field(factory=dict)
    #: The names the peer's TLS certificate proves (subject alternative
    #: names, then the common name): empty without a client certificate.
    peer_names: tuple[str, ...] = ()
    #: The state the connection's dispatcher gave when it left another
    #: process (hot restart hand-off, see
    #: :meth:`Dispatcher.handoff_state <sota_dispatch.Dispatcher.handoff_state>`);
    #: None for a connection accepted here.
    handoff: Mapping[str, Any] | None = None

    @classmethod
    def for_stream(
        cls,
        stream: ByteStream,
        *,
        protocol: str = "",
        role: Literal["server", "client"] = "server",
        options: Mapping[str, str] | None = None,
    ) -> ConnectionContext:
        """Build a context, reading the addresses from a socket stream if it is one."""
        return cls(
            protocol=protocol,
            role=role,
            local_address=_address_of(stream, SocketAttribute.local_address),
            remote_address=_address_of(stream, SocketAttribute.remote_address),
            options=dict(options or {}),
            peer_names=_certificate_names(stream),
        )


def _certificate_names(stream: ByteStream) -> tuple[str, ...]:
    """The names of the peer's TLS certificate (only a TLS stream has one:
    a plain socket's extras are not even asked, since a reset socket's may
    raise on uvloop)."""
    if not isinstance(stream, TLSStream):
        return ()
    try:
        return peer_names(stream.extra(TLSAttribute.peer_certificate, None))
    except (OSError, AttributeError, RuntimeError, ValueError):
        return ()


def _address_of(stream: ByteStream, attribute: Any) -> str | None:
    # A peer may reset the connection before we look: uvloop then has no
    # socket left (AttributeError inside anyio) and asyncio's getpeername()
    # raises ENOTCONN. The connection is dead, not the listener: no address.
    try:
        value = stream.extra(attribute, None)
    except (OSError, AttributeError, RuntimeError):
        return None
    if isinstance(value, tuple):
        return format_address(value)
    return None if value is None else str(value)
