"""The client role: many concurrent calls on one upstream connection.

:class:`BoltClient` and :class:`DubboClient` give each outgoing request a
fresh id from the connection's :class:`~sota_dispatch.StreamMultiplexer`
(32 bits for bolt, 64 for dubbo; never one still in flight), rewrite only
the id bytes of the raw frame, and match responses back by id; answers
nobody waits for are dropped and counted. Losing the connection fails every
pending call with :class:`~sota_dispatch.ConnectionLost`. On an idle
connection they send keepalive heartbeats and close after
``max_missed_heartbeats`` unanswered ones.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Generic, TypeVar

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo

from .dispatchers import BoltDispatcher, DubboDispatcher, XProtocolDispatcher

__all__ = ["BoltClient", "DubboClient"]

log = logging.getLogger(__name__)

F = TypeVar("F", bolt.BoltFrame, dubbo.DubboFrame)


class _MultiplexedClient(XProtocolDispatcher, Generic[F]):
    #: Seconds of silence before a keepalive heartbeat (None: never); the
    #: core's client role sends it (see Dispatcher.keepalive_interval).
    keepalive_interval: ClassVar[float | None] = 15.0
    max_frame_size: ClassVar[int] = bolt.DEFAULT_MAX_FRAME_SIZE

    async def call(self, request: F, *, timeout: float | None = None) -> F | None:
        """Send ``request`` under a fresh id; return the response (None for oneway).

        The request's own id and raw bytes are left alone; the caller maps
        the response back (``response.with_request_id(original_id)``). The
        same as :meth:`~sota_dispatch.Dispatcher.request`.
        """
        response: F | None = await self.request(request, timeout=timeout)
        return response


class BoltClient(BoltDispatcher, _MultiplexedClient[bolt.BoltFrame]):
    """A multiplexed bolt connection to an upstream (client role, 32-bit ids)."""


class DubboClient(DubboDispatcher, _MultiplexedClient[dubbo.DubboFrame]):
    """A multiplexed dubbo connection to an upstream (client role, 64-bit ids)."""

    def on_request(self, frame: dubbo.DubboFrame) -> bytes | None:
        """Heartbeats are answered by the core; a oneway event (a provider's
        READONLY before a graceful shutdown) is logged, and its calls in
        flight still complete; any other request is a protocol error."""
        if frame.is_event and not frame.is_twoway:
            log.info("dubbo upstream event (id %d): %r", frame.request_id, frame.body[:32])
            return None
        return super().on_request(frame)
