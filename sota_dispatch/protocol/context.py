"""What a dispatcher knows about its connection besides the bytes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from anyio.abc import ByteStream, SocketAttribute

from ..io.address import format_address

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
        )


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
