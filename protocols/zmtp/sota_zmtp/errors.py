"""The two ZMTP failures that are final, so a caller can tell them apart.

Anything malformed is a plain :class:`~sota_dispatch.ProtocolError` (or a
:class:`~sota_dispatch.LimitExceeded`): the connection is closed and a client
may reconnect. These two subclasses mean reconnecting would fail the same way,
so a :class:`~sota_zmtp.Dealer` stops instead. They live apart from the
engine so that the handshake pieces that raise them need not import it.
"""

from __future__ import annotations

from sota_dispatch import ProtocolError

__all__ = ["DowngradeRefused", "PeerError"]


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
