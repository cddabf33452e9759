"""What a protocol class gets from the core in each role, on the one loop.

A local service answers requests (:meth:`Dispatcher.on_request
<sota_dispatch.Dispatcher.on_request>`); a client sends its own and gets
the answers matched back by id through the connection's
:class:`~sota_dispatch.StreamMultiplexer`
(:meth:`Dispatcher.request <sota_dispatch.Dispatcher.request>`). Either
way heartbeats are answered here, from the class's frame semantics, and
the frames come from :class:`~.loop.CodecLoop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import anyio

from ..errors import ProtocolError, StreamLimitError
from ..io.clock import loop_time
from ..io.reader import BufferedReader
from ..io.writer import BufferedWriter
from .codec import Codec, codec_handoff_state, restore_codec
from .context import ConnectionContext
from .loop import CodecLoop
from .multiplexer import StreamMultiplexer
from .semantics import FrameSemantics
from .serving import RoleConnection, serve_frames

__all__ = ["ProtocolRoles"]

log = logging.getLogger(__name__)


async def _send_request(
    connection: RoleConnection, semantics: type[FrameSemantics], frame: Any, timeout: float | None
) -> Any:
    """Send ``frame`` under a fresh id and wait for its answer (None for a
    oneway request); see :meth:`Dispatcher.request
    <sota_dispatch.Dispatcher.request>`."""
    pending = connection.streams.open(timeout=timeout)
    try:
        writer = connection.writer
        writer.write(semantics.encode_request(frame, pending.stream_id))
        if writer.pending >= writer.high_water:
            await writer.flush()  # a peer that does not read holds its callers, not our memory
        else:
            connection.flush_soon()  # the requests of this tick leave in one send
    except BaseException:
        pending.cancel()
        raise
    if semantics.is_oneway(frame):
        pending.cancel()
        return None
    return await pending.result()


class ProtocolRoles(FrameSemantics):
    """The roles a protocol class plays on the core's loop; a
    :class:`~sota_dispatch.Dispatcher` is one. Its frame semantics decide;
    this drives the connection (see :class:`~sota_dispatch.Dispatcher` for
    the attributes used here)."""

    #: Largest frame the codec accepts, unless a ``max_frame_size`` option
    #: of the connection's place says otherwise.
    max_frame_size: ClassVar[int] = 16 * 1024 * 1024
    #: Seconds for a codec's handshake (None: the reader's frame timeout alone).
    handshake_timeout: ClassVar[float | None] = None
    #: Client role: seconds without input before a heartbeat request
    #: (:meth:`heartbeat_request`) is sent (None: never).
    keepalive_interval: ClassVar[float | None] = None
    #: Client role: unanswered heartbeats in a row that close the connection.
    max_missed_heartbeats: ClassVar[int] = 3
    #: Heartbeats unanswered in a row so far.
    missed_heartbeats: int = 0
    #: True: between requests a connection of this class holds nothing but
    #: its codec's state (each request answered from :meth:`on_request`, no
    #: helper tasks, no per-connection bookkeeping in ``on_connect`` or
    #: ``on_close``), so it may move to another process at a hot restart,
    #: or park while idle (``Server(park_idle_after=)``): see
    #: :meth:`codec_state`. Not inherited: a subclass declares it again
    #: once it has checked the same of itself.
    movable_between_requests: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "movable_between_requests" not in cls.__dict__:
            cls.movable_between_requests = False

    # Set by the Dispatcher.
    context: ConnectionContext
    reader: BufferedReader
    writer: BufferedWriter
    streams: StreamMultiplexer[Any]
    _loop: CodecLoop[Any] | None
    _stopping: bool

    def flush_soon(self) -> None:
        raise NotImplementedError

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> None:
        raise NotImplementedError

    def on_request(self, frame: Any) -> bytes | None:
        """Answer one request (the local service role): its reply's bytes,
        or None (a oneway request; or one answered later, written to
        :attr:`writer` by a helper task with :meth:`flush_soon`).

        Called in the connection's task, once per request of a read batch;
        every reply of the batch leaves in one send. Do not block here:
        start a helper (:meth:`start_soon`) for slow work. A client
        connection calls it too, for requests its peer sends (heartbeats
        are answered before it): the default refuses them there, and an
        override that serves both roles checks ``self.context.role``."""
        if self.context.role == "client":
            raise ProtocolError(f"the peer sent a request to a {self.protocol_name} client")
        raise NotImplementedError(f"{type(self).__name__} must implement on_request()")

    def new_codec(self) -> Codec[Any]:
        """The class's codec for this connection's role (client: the
        ``cluster`` place's options; else the ``service`` place's)."""
        client = self.context.role == "client"
        values = self.option_values(self.context.options, "cluster" if client else "service")
        limit = values.get("max_frame_size") or self.max_frame_size
        return self.client_codec(values, limit) if client else self.server_codec(values, limit)

    def codec_loop(self, codec: Codec[Any], **kwargs: Any) -> CodecLoop[Any]:
        """The core's loop over ``codec`` on this connection (see
        :class:`~sota_dispatch.CodecLoop`); :meth:`drain` stops it at a frame
        boundary. ``kwargs`` go to the loop (``handshake_timeout`` defaults
        to the class's)."""
        kwargs.setdefault("handshake_timeout", self.handshake_timeout)
        adopted = self.context.handoff
        if adopted is not None:
            restore_codec(codec, adopted.get("codec", {}))  # handshake done in the old process (or before parking)
        loop: CodecLoop[Any] = CodecLoop(self.reader, self.writer, codec, **kwargs)
        self._loop = loop
        if self._stopping:
            loop.stop()
        return loop

    def codec_state(self) -> dict[str, Any] | None:
        """``{"codec": state}``, what a connection of a class that declares
        :attr:`movable_between_requests` needs to go on elsewhere (its
        codec's hand-off state); None for other classes, before the codec
        loop runs, or when the codec cannot move (mid-frame, say). A new
        dispatcher's :meth:`codec_loop` restores it."""
        loop = self._loop
        if not self.movable_between_requests or loop is None:
            return None
        state = codec_handoff_state(loop.codec)
        return None if state is None else {"codec": state}

    async def serve_frames(
        self,
        codec: Codec[Any],
        *,
        semantics: type[FrameSemantics] | None = None,
        on_request: Callable[[Any], bytes | None] | None = None,
    ) -> None:
        """Serve ``codec``'s frames with the core's loop (what the default
        :meth:`serve` does): requests to ``on_request`` (default
        :meth:`on_request`), heartbeats answered, answers matched to
        :meth:`request`. ``semantics``: another protocol class's frame
        semantics (a service speaking several protocols)."""
        semantics = semantics or type(self)
        loop = self.codec_loop(codec)
        interval = self.keepalive_interval
        if self.context.role == "client" and interval is not None and semantics.heartbeat_request() is not None:
            self.start_soon(self._keepalive, semantics, interval)
        await serve_frames(self, loop, semantics, on_request or self.on_request)

    async def _keepalive(self, semantics: type[FrameSemantics], interval: float) -> None:
        """The client role's keepalive: a heartbeat request after
        ``interval`` seconds without input; the connection closes after
        :attr:`max_missed_heartbeats` unanswered in a row. A connection
        busy with answers never looks quiet, and one whose ids are all in
        flight is busy, not dead."""
        answered = loop_time()
        while True:
            quiet_until = max(answered, self.reader.last_input) + interval
            if loop_time() < quiet_until:
                await anyio.sleep_until(quiet_until)
                continue
            try:
                await _send_request(self, semantics, semantics.heartbeat_request(), interval)
                self.missed_heartbeats = 0
            except StreamLimitError:
                pass  # every id is taken by requests in flight
            except TimeoutError:
                self.missed_heartbeats += 1
                log.info("%r: heartbeat %d unanswered", self, self.missed_heartbeats)
                if self.missed_heartbeats >= self.max_missed_heartbeats:
                    raise ProtocolError(f"{self.missed_heartbeats} heartbeats unanswered") from None
            answered = loop_time()

    async def request(self, frame: Any, *, timeout: float | None = None) -> Any:
        """Send ``frame`` under a fresh id from :attr:`streams` and return
        its answer (None for a oneway request), the client role.

        Many requests may be in flight on one connection; each is written
        with the id rewritten in its raw bytes (:meth:`encode_request`) and
        the requests of one tick leave in one send. The serving loop
        (:meth:`serve`) must run: use the connection as an async context
        manager. Raises :class:`TimeoutError` after ``timeout`` seconds
        (default :attr:`stream_timeout`), :class:`~sota_dispatch.ConnectionLost`
        when the connection ends first, and
        :class:`~sota_dispatch.StreamLimitError` when :attr:`max_in_flight`
        requests wait already."""
        return await _send_request(self, type(self), frame, timeout)
