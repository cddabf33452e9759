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

import anyio

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import ProtocolError, StreamLimitError

from .dispatchers import BoltDispatcher, DubboDispatcher, XProtocolDispatcher

__all__ = ["BoltClient", "DubboClient"]

log = logging.getLogger(__name__)

F = TypeVar("F", bolt.BoltFrame, dubbo.DubboFrame)


class _MultiplexedClient(XProtocolDispatcher, Generic[F]):
    #: Seconds of silence before a keepalive heartbeat (None: never).
    keepalive_interval: ClassVar[float | None] = 15.0
    #: Unanswered heartbeats in a row after which the connection is closed.
    max_missed_heartbeats: ClassVar[int] = 3
    max_frame_size: ClassVar[int] = bolt.DEFAULT_MAX_FRAME_SIZE

    _last_input = 0.0
    missed_heartbeats = 0

    # -- what differs between the protocols (beyond their classes' semantics) ----

    @staticmethod
    def _heartbeat_request() -> F:
        raise NotImplementedError

    def _answer_request(self, frame: F) -> bytes | None:
        """What to send for a request from upstream (b"": nothing); None: a
        request a client must not get."""
        return self.heartbeat_reply(frame) if self.is_heartbeat(frame) else None

    # -- the shared machinery ---------------------------------------------------

    async def on_connect(self) -> None:
        self._last_input = anyio.current_time()
        if self.keepalive_interval is not None:
            self.start_soon(self._keepalive)

    async def serve(self) -> None:
        decoder = self.decoder(self.max_frame_size)
        complete = self.streams.complete
        is_request = self.is_request
        async for data in self.reader.chunks():
            self._last_input = anyio.current_time()
            for frame in decoder.feed(data):
                if not is_request(frame):
                    complete(frame.request_id, frame)
                    continue
                reply = self._answer_request(frame)
                if reply is None:
                    raise ProtocolError(f"upstream sent a request (id {frame.request_id}) to a client")
                if reply:
                    self.writer.write(reply)  # the upstream checks on us: answer
            decoder.check()

    async def call(self, request: F, *, timeout: float | None = None) -> F | None:
        """Send ``request`` under a fresh id; return the response (None for oneway).

        The request's own id and raw bytes are left alone; the caller maps
        the response back (``response.with_request_id(original_id)``).
        """
        pending = self.streams.open(timeout=timeout)
        try:
            await self.writer.send(request.with_request_id(pending.stream_id))
        except BaseException:
            pending.cancel()
            raise
        if self.is_oneway(request):
            pending.cancel()
            return None
        response: F = await pending.result()
        return response

    async def _keepalive(self) -> None:
        interval = self.keepalive_interval
        assert interval is not None
        while True:
            idle_until = self._last_input + interval
            if anyio.current_time() < idle_until:
                await anyio.sleep_until(idle_until)
                continue
            try:
                await self.call(self._heartbeat_request(), timeout=interval)
                self.missed_heartbeats = 0
            except StreamLimitError:
                pass  # every id is taken by calls in flight: busy, not dead; next tick
            except TimeoutError:
                self.missed_heartbeats += 1
                log.info("%r: heartbeat %d unanswered", self, self.missed_heartbeats)
                if self.missed_heartbeats >= self.max_missed_heartbeats:
                    raise ProtocolError(f"{self.missed_heartbeats} heartbeats unanswered") from None
            self._last_input = max(self._last_input, anyio.current_time())


class BoltClient(BoltDispatcher, _MultiplexedClient[bolt.BoltFrame]):
    """A multiplexed bolt connection to an upstream (client role, 32-bit ids)."""

    @staticmethod
    def _heartbeat_request() -> bolt.BoltFrame:
        return bolt.heartbeat_request(0)


class DubboClient(DubboDispatcher, _MultiplexedClient[dubbo.DubboFrame]):
    """A multiplexed dubbo connection to an upstream (client role, 64-bit ids)."""

    @staticmethod
    def _heartbeat_request() -> dubbo.DubboFrame:
        return dubbo.heartbeat_request(0)

    def _answer_request(self, frame: dubbo.DubboFrame) -> bytes | None:
        if frame.is_heartbeat and frame.is_twoway:
            return dubbo.heartbeat_response(frame).encode()
        if frame.is_event and not frame.is_twoway:
            # e.g. a provider's READONLY event before a graceful shutdown:
            # nothing to answer, and its calls in flight will still complete.
            log.info("dubbo upstream event (id %d): %r", frame.request_id, frame.body[:32])
            return b""
        return None
