"""A ZMTP connection's state after its handshake, for another process to go on with it.

Hot restart hand-off (see :mod:`sota_dispatch.protocol.handoff`): once the
greeting and handshake are done, what a new engine needs is who the peer is
(version, socket type, identity, properties, the PLAIN user it logged in
as), not the handshake again: the peer would take a second greeting for
garbage. Only at a message boundary (no part of a multipart message held)
and never for CURVE, whose session keys and nonces stay in the process
that made them: such a connection is drained instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .frames import V2_RESERVED, FrameReader
from .handshake import State
from .wire import SocketType

__all__ = ["HandOffMixin"]


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes.fromhex(str(value))


class HandOffMixin:
    """:class:`~sota_zmtp.engine.ZmtpEngine`'s ``handoff_state()`` and
    ``restore_handoff()`` (the codec hooks of a hand-off)."""

    # What the engine has (declared for the type checker).
    mechanism: bytes
    socket_type: SocketType
    version: tuple[int, int] | None
    peer_socket_type: SocketType | None
    peer_identity: bytes
    peer_properties: dict[str, bytes]
    user_id: bytes | None
    peer_ttl: float | None
    session: object
    pending_error: Exception | None
    _state: State
    _out: bytearray
    _reader: FrameReader

    @property
    def buffered(self) -> int:
        raise NotImplementedError

    @property
    def movable(self) -> bool:
        """A NULL or PLAIN connection can move (once at a message boundary);
        a CURVE one cannot (its session keys stay where they were made)."""
        return self.mechanism != b"CURVE"

    def handoff_state(self) -> dict[str, Any] | None:
        """The engine's state as JSON-ready values; None if it cannot move
        now (before traffic, inside a multipart message, with bytes to
        send, after an error) or at all (CURVE)."""
        if (
            self._state is not State.TRAFFIC
            or self.session is not None
            or self.pending_error is not None
            or self.buffered
            or self._out
            or self.version is None
        ):
            return None
        return {
            "version": list(self.version),
            "mechanism": self.mechanism.decode(),
            "socket_type": int(self.socket_type),
            "peer_socket_type": None if self.peer_socket_type is None else int(self.peer_socket_type),
            "peer_identity": _hex(self.peer_identity),
            "peer_properties": {name: value.hex() for name, value in self.peer_properties.items()},
            "user_id": _hex(self.user_id),
            "peer_ttl": self.peer_ttl,
        }

    def restore_handoff(self, state: Mapping[str, Any]) -> None:
        """Become the engine that was exported (same options): in traffic
        with the same peer, the greeting unsent. Raises ValueError for the
        state of an engine unlike this one."""
        if state.get("mechanism") != self.mechanism.decode() or self.mechanism == b"CURVE":
            raise ValueError(f"state for mechanism {state.get('mechanism')!r}; this engine speaks {self.mechanism!r}")
        if state.get("socket_type") != int(self.socket_type):
            raise ValueError("state for another socket type")
        major, minor = (int(x) for x in state["version"])
        self.version = (major, minor)
        peer_type = state.get("peer_socket_type")
        self.peer_socket_type = None if peer_type is None else SocketType(int(peer_type))
        self.peer_identity = _bytes(state.get("peer_identity")) or b""
        properties = dict(state.get("peer_properties", {}))
        self.peer_properties = {str(k): bytes.fromhex(str(v)) for k, v in properties.items()}
        self.user_id = _bytes(state.get("user_id"))
        ttl = state.get("peer_ttl")
        self.peer_ttl = None if ttl is None else float(ttl)
        self._out.clear()  # the greeting went out long ago, from the old process
        self._reader.need = 2  # a frame header next
        if self.version < (3, 0):
            self._reader.reserved = V2_RESERVED
        self._state = State.TRAFFIC
