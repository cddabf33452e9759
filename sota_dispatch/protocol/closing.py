"""How a connection ends: which error explains it, how it is logged, and
the lingering close that keeps the last replies from being reset away."""

from __future__ import annotations

import logging
import sys

import anyio
from anyio.abc import ByteStream

from ..errors import ConnectionLost, ProtocolError
from ..io.reader import DEFAULT_READ_SIZE, BufferedReader

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["PEER_GONE", "drop_tracebacks", "linger_out", "log_close", "primary_error"]

log = logging.getLogger("sota_dispatch.protocol.dispatcher")  # the name operators filter on

#: Errors that mean "the peer went away", logged quietly.
PEER_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError)


def primary_error(exc: BaseException) -> BaseException:
    """The exception that explains a connection's end, out of exception groups.

    A real error wins over the cancellations it caused in sibling tasks.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = [primary_error(e) for e in exc.exceptions]
        cancelled = anyio.get_cancelled_exc_class()
        for leaf in leaves:
            if not isinstance(leaf, cancelled):
                return leaf
        return leaves[0]
    return exc


def drop_tracebacks(reason: BaseException | None) -> None:
    """Forget the tracebacks of a closed connection's reason (and what caused it).

    Logged already; kept, they hold every frame of the connection's task,
    and through ``self`` the connection with its buffers, in a reference
    cycle that only the cyclic garbage collector breaks: megabytes of a
    client's partial frame outlived its connection until a full collection.
    """
    seen: set[int] = set()
    pending = [reason]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += [exc.__context__, exc.__cause__]
        if isinstance(exc, BaseExceptionGroup):
            pending += list(exc.exceptions)


async def linger_out(stream: ByteStream, reader: BufferedReader) -> None:
    """Half-close, then read out what the peer still sends until it closes:
    closing with unread input would make the kernel send a reset that can
    destroy the replies just written."""
    if reader.at_eof:
        return
    try:
        await stream.send_eof()
    except NotImplementedError:
        return
    while True:
        try:
            await stream.receive(DEFAULT_READ_SIZE)
        except anyio.EndOfStream:
            return


def log_close(connection_id: int, reason: BaseException | None) -> None:
    """One line for a connection's end: quiet for a peer gone, INFO for a
    peer's protocol error, ERROR with the traceback for a bug of ours."""
    if reason is None:
        log.debug("connection closed", extra={"conn": connection_id})
    elif isinstance(reason, ProtocolError):
        log.info("connection closed: %s: %s", type(reason).__name__, reason, extra={"conn": connection_id})
    elif isinstance(reason, (*PEER_GONE, ConnectionLost)):
        log.debug("connection closed: %s", reason or type(reason).__name__, extra={"conn": connection_id})
    else:
        log.error("connection closed by an error in the dispatcher", exc_info=reason, extra={"conn": connection_id})
