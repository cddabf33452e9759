"""Moving a live connection to another process (hot restart hand-off, MOSN's smooth upgrade).

A dispatcher that can go on in another process says how
(:meth:`~sota_dispatch.Dispatcher.handoff_state`: JSON-ready values, e.g.
a ZMTP peer's identity and version). When asked to move
(:meth:`~sota_dispatch.Dispatcher.hand_off`) it stops reading at the next
frame boundary, finishes what is in flight, and then, instead of closing,
gives a :class:`HandOff` to the sink: a duplicate of its socket's
descriptor, the bytes read but not yet decoded, and that state. The new
process builds the same dispatcher on the descriptor with the state in its
:attr:`ConnectionContext.handoff <sota_dispatch.ConnectionContext.handoff>`
and the unread bytes pushed back into its reader; the peer sees a pause,
never a close. What cannot move (TLS, a dispatcher without state, a peer
that keeps requests in flight) is not asked to, or is closed as a drain
closes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
import attrs
from anyio.abc import ByteStream

from ..errors import SotaError
from ..io.reader import BufferedReader
from ..io.transport import detach_socket
from ..io.writer import BufferedWriter
from .context import ConnectionContext

__all__ = ["HandOff", "HandOffDeclined", "HandOffSink", "Movable", "hand_over"]

log = logging.getLogger(__name__)


@attrs.frozen
class HandOff:
    """A connection on its way to another process.

    ``fd`` is a descriptor of its socket, valid while the sink runs (send
    it with SCM_RIGHTS; it is closed when the sink returns); ``unread`` the bytes read from the peer and
    not yet decoded; ``state`` what the dispatcher needs to go on
    (:meth:`~sota_dispatch.Dispatcher.handoff_state`).
    """

    fd: int
    unread: bytes
    state: Mapping[str, Any]
    connection_id: int
    remote_address: str | None = None


class HandOffDeclined(SotaError):
    """A sink's way to refuse a connection it was not meant to take now
    (parking while the server shuts down): the connection is closed, as a
    drain closes it, and logged at DEBUG, not as a failed hand-off."""


class Movable(Protocol):
    """A dispatcher, as :func:`hand_over` moves it."""

    stream: ByteStream
    context: ConnectionContext
    reader: BufferedReader
    writer: BufferedWriter

    @property
    def linger_timeout(self) -> float: ...

    def handoff_state(self) -> dict[str, Any] | None: ...


#: Takes a :class:`HandOff` on; raising means it could not (the connection
#: is then closed, as a drain closes it; :class:`HandOffDeclined` says so
#: without a warning).
HandOffSink = Callable[[HandOff], Awaitable[None]]


async def hand_over(dispatcher: Movable, sink: HandOffSink) -> bool:
    """Give ``dispatcher``'s connection to ``sink`` (see the module
    docstring); False if it cannot go now, and the caller closes it."""
    state = dispatcher.handoff_state()
    reader, writer = dispatcher.reader, dispatcher.writer
    context = dispatcher.context
    why = None
    if state is None:
        why = "its dispatcher cannot move it now"
    elif reader.at_eof:
        why = "the peer has closed"
    else:
        with anyio.move_on_after(dispatcher.linger_timeout):
            await writer.flush()  # every answer out first: the new process starts with an empty writer
        if writer.pending:
            why = "the peer does not read its answers"
    detached = None if why is not None else detach_socket(dispatcher.stream)
    if detached is None:
        log.debug("not handed off: %s", why or "not a plain TCP stream", extra={"conn": context.connection_id})
        return False
    fd, queued = detached
    assert state is not None
    moving = HandOff(fd, reader.take_buffer() + queued, state, context.connection_id, context.remote_address)
    try:
        await sink(moving)
    except HandOffDeclined as exc:
        log.debug("not handed off: %s", exc, extra={"conn": context.connection_id})
        return False
    except Exception as exc:  # noqa: BLE001 - the sink's failure costs this connection only
        log.warning("hand-off failed (%r); closing it", exc, extra={"conn": context.connection_id})
        return False
    finally:
        os.close(fd)
    log.debug("handed off (%d bytes unread)", len(moving.unread), extra={"conn": context.connection_id})
    return True
