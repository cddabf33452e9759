"""The local service role's per-frame loop, in a module of its own.

Compiled in the compiled build (the loop runs once per request a local
service answers; as part of the interpreted :mod:`.roles` it ran in the
interpreter). :class:`~.roles.ProtocolRoles` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

from ..io.writer import BufferedWriter
from .loop import CodecLoop
from .multiplexer import StreamMultiplexer
from .semantics import FrameSemantics

__all__ = ["EARLY_REPLIES", "RequestHandler", "RoleConnection", "serve_frames"]

log = logging.getLogger(__name__)

#: Answers one request now (bytes), or not (None: oneway, or answered later).
RequestHandler = Callable[[Any], "bytes | None"]

#: Replies of one read batch after which those written so far are sent at
#: once, the rest with the batch (once per batch). A client that pipelines
#: (100 requests in flight on one connection) then reads and sends again
#: while the service answers the rest, instead of the two taking turns
#: over the whole batch: the compiled bolt echo at 100 in flight went from
#: 405-458k to 563-603k requests a second, dubbo from 245-283k to
#: 287-397k (bench/xprotocol_bench.py, per event loop). Once, not every
#: 48: with 1,000 in flight the two overlap already, and a send per 48
#: replies cost dubbo a tenth there, one per batch nothing measurable.
EARLY_REPLIES: Final = 48


class RoleConnection(Protocol):
    """What the role loops need of a connection (a Dispatcher)."""

    writer: BufferedWriter
    streams: StreamMultiplexer[Any]

    def flush_soon(self) -> None: ...


async def serve_frames(
    connection: RoleConnection,
    loop: CodecLoop[Any],
    semantics: type[FrameSemantics],
    on_request: RequestHandler,
) -> None:
    """Serve every frame ``loop`` yields: heartbeats answered, other
    requests to ``on_request``, responses to the request waiting for them
    (one nobody waits for is counted in ``streams.unmatched`` and dropped)."""
    write = connection.writer.write
    is_heartbeat, is_request = semantics.is_heartbeat, semantics.is_request
    response_id, complete = semantics.response_id, connection.streams.complete
    flush_nowait = connection.writer.flush_nowait
    async for frames in loop:
        replies = 0
        for frame in frames:
            if is_request(frame):
                reply = semantics.heartbeat_reply(frame) if is_heartbeat(frame) else on_request(frame)
                if reply:
                    write(reply)  # sent with the batch: the reader flushes before it waits
                    replies += 1
                    if replies == EARLY_REPLIES:
                        flush_nowait()  # these go now (see EARLY_REPLIES); what the socket refuses, with the batch
                continue
            stream_id = response_id(frame)
            # An answer to a request given up on, or to none, is counted
            # (streams.unmatched) and dropped.
            if stream_id is None:
                connection.streams.unmatched += 1
            elif not complete(stream_id, frame):
                log.debug("an answer (id %d) that no request waits for is dropped", stream_id)
