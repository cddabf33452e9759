"""The bolt client role: many concurrent calls on one upstream connection.

:class:`BoltClient` gives each outgoing request a fresh 32-bit id from the
connection's :class:`~sota_dispatch.StreamMultiplexer` (never one still in
flight), rewrites only the id bytes of the raw frame, and matches responses
back by id; answers nobody waits for are dropped and counted. Losing the
connection fails every pending call with :class:`~sota_dispatch.ConnectionLost`.
On an idle connection it sends keepalive heartbeats and closes after
``max_missed_heartbeats`` unanswered ones.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import anyio

from sota_dispatch import Dispatcher, ProtocolError

from . import bolt

__all__ = ["BoltClient"]

log = logging.getLogger(__name__)


class BoltClient(Dispatcher):
    """A multiplexed bolt connection to an upstream (client role)."""

    protocol_name: ClassVar[str] = "bolt"
    stream_id_bits: ClassVar[int] = 32
    #: Seconds of silence before a keepalive heartbeat (None: never).
    keepalive_interval: ClassVar[float | None] = 15.0
    #: Unanswered heartbeats in a row after which the connection is closed.
    max_missed_heartbeats: ClassVar[int] = 3
    max_frame_size: ClassVar[int] = bolt.DEFAULT_MAX_FRAME_SIZE

    _last_input = 0.0
    missed_heartbeats = 0

    async def on_connect(self) -> None:
        self._last_input = anyio.current_time()
        if self.keepalive_interval is not None:
            self.start_soon(self._keepalive)

    async def serve(self) -> None:
        decoder = bolt.BoltDecoder(max_frame_size=self.max_frame_size)
        streams = self.streams
        async for data in self.reader.chunks():
            self._last_input = anyio.current_time()
            for frame in decoder.feed(data):
                if frame.is_response:
                    streams.complete(frame.request_id, frame)
                elif frame.is_heartbeat:  # the upstream checks on us: answer
                    self.writer.write(bolt.heartbeat_ack(frame).encode())
                else:
                    raise ProtocolError(f"upstream sent a request (id {frame.request_id}) to a client")
            decoder.check()

    async def call(self, request: bolt.BoltFrame, *, timeout: float | None = None) -> bolt.BoltFrame | None:
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
        if request.type is bolt.FrameType.ONEWAY:
            pending.cancel()
            return None
        response: bolt.BoltFrame = await pending.result()
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
                await self.call(bolt.heartbeat_request(0), timeout=interval)
                self.missed_heartbeats = 0
            except TimeoutError:
                self.missed_heartbeats += 1
                log.info("bolt client %r: heartbeat %d unanswered", self, self.missed_heartbeats)
                if self.missed_heartbeats >= self.max_missed_heartbeats:
                    raise ProtocolError(f"{self.missed_heartbeats} heartbeats unanswered") from None
            self._last_input = max(self._last_input, anyio.current_time())
