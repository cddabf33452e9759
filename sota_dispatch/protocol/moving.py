"""A server's side of moving connections between processes (hot restart).

:class:`~sota_dispatch.Server` hands every connection that can move to a
successor process (:meth:`Moving.hand_off`) and takes over the ones a
predecessor hands it (:meth:`Moving.adopt`): served connections with
their dispatchers' state, and connections still waiting at the doorstep
(never spoke: they wait again; parked: they go on from their state).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

from anyio.abc import ByteStream, SocketStream, TaskGroup

from ..io.address import format_address
from ..io.transport import pause_reading
from .dispatcher import Dispatcher
from .doorstep import Doorstep
from .handoff import HandOff, HandOffSink
from .parking import Parking

__all__ = ["WAITING", "Moving"]

log = logging.getLogger(__name__)

#: The hand-off state of a connection that had sent nothing (see Moving.hand_off).
WAITING = "waiting_for_first_bytes"


class Moving:
    """The hand-off half of :class:`~sota_dispatch.Server` (see the module docstring)."""

    address: str | None
    connections_adopted: int
    connections_handed_off: int
    _connections: TaskGroup | None
    _accept_requested_stop: bool
    _doorstep: Doorstep | None
    _dispatchers: set[Dispatcher]
    _starting: int
    _handoff_sink: HandOffSink | None
    _parking: Parking | None

    async def _handle(self, accepted: SocketStream) -> None:
        raise NotImplementedError

    async def _run(self, stream: ByteStream, early: bytes, handoff: Mapping[str, Any] | None, cid: int = 0) -> None:
        raise NotImplementedError

    def _maybe_idle(self) -> None:
        raise NotImplementedError

    def adopt(self, sock: socket.socket, unread: bytes, state: Mapping[str, Any]) -> bool:
        """Serve a connection another process handed over (hot restart):
        its socket, the bytes it had read and not decoded, and its
        dispatcher's state (see :mod:`sota_dispatch.protocol.handoff`).
        False (the caller closes the socket) unless this server is serving
        and accepting."""
        if self._connections is None or self._accept_requested_stop:
            return False
        self.connections_adopted += 1
        self._connections.start_soon(self._adopted, sock, unread, state)
        return True

    async def _adopted(self, sock: socket.socket, unread: bytes, state: Mapping[str, Any]) -> None:
        waiting = state.get(WAITING) is True and not unread  # it had sent nothing: it waits again
        try:
            if waiting and self._doorstep is not None:
                sock.setblocking(False)
                self._doorstep.hold(sock)
                return
            stream = await SocketStream.from_socket(sock)
            pause_reading(stream)
        except Exception as exc:  # noqa: BLE001 - gone meanwhile, or not a socket: that connection only
            log.warning("%s: could not take over a handed-over connection: %r", self.address, exc)
            sock.close()
            return
        if waiting:  # as a new connection (its TLS handshake, say, is still to come)
            self._starting += 1
            await self._handle(stream)
        else:
            await self._run(stream, unread, state)

    def hand_off(self, sink: HandOffSink) -> int:
        """Move every connection that can move to another process (see
        :meth:`Dispatcher.hand_off <sota_dispatch.Dispatcher.hand_off>`);
        the others go on here. Returns how many were asked to move."""
        self._handoff_sink = sink
        if self._parking is not None:
            # No more parking here; a connection on its way to the doorstep follows the others.
            self._parking.after = None
            self._parking.forward = self._move_waiting
        moved = 0
        if self._doorstep is not None:  # silent so far: they wait there instead
            moved = len(self._doorstep)
            self._doorstep.move_all(self._move_waiting)
        moving = [d for d in self._dispatchers if d.can_hand_off()]
        for dispatcher in moving:
            dispatcher.hand_off(sink)
        return moved + len(moving)

    def _move_waiting(self, sock: socket.socket, state: Mapping[str, Any] | None, cid: int) -> None:
        assert self._connections is not None
        self._starting += 1  # held until handed over: serve() waits for it
        self._connections.start_soon(self._hand_over_waiting, sock, state, cid)

    async def _hand_over_waiting(self, sock: socket.socket, state: Mapping[str, Any] | None, cid: int) -> None:
        """Hand a connection that has sent nothing over as one still waiting
        (see :meth:`_adopted`); a parked one with its state."""
        sink = self._handoff_sink
        assert sink is not None
        try:
            peer = format_address(sock.getpeername())
            await sink(HandOff(sock.fileno(), b"", {WAITING: True} if state is None else state, cid, peer))
            self.connections_handed_off += 1
        except Exception as exc:  # noqa: BLE001 - that connection only: it closes, as a drain would close it
            log.debug("%s: could not hand over a waiting connection: %r", self.address, exc)
        finally:
            sock.close()
            self._starting -= 1
            self._maybe_idle()
