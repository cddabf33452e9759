"""The per-connection object protocols subclass.

A :class:`Dispatcher` owns one connection: its buffered reader and writer, a
stream multiplexer for request ids, and a task group for helper tasks. A
protocol implements :meth:`Dispatcher.serve`; :meth:`Dispatcher.run` wraps it
in the lifecycle (``on_connect``, ``serve``, ``on_close``) and turns every way a
connection can end into a logged, contained close: a bad peer, a reset, a bug
in ``serve`` or a helper, never reaches the listener or another connection.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
from anyio.abc import ByteStream, TaskGroup

from ..errors import ConnectionLost, FrameTimeout, ProtocolError
from ..io.address import parse_address
from ..io.clock import loop_time
from ..io.reader import DEFAULT_READ_SIZE, BufferedReader
from ..io.tls import open_connection
from ..io.transport import detachable, discard_input
from ..io.writer import DEFAULT_HIGH_WATER, BufferedWriter
from ..logs import connection_id
from .closing import PEER_GONE, drop_tracebacks, linger_out, log_close, primary_error
from .context import ConnectionContext
from .handoff import HandOffSink, hand_over
from .loop import CodecLoop
from .multiplexer import StreamMultiplexer
from .roles import ProtocolRoles
from .sniff import Match

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:
    from typing_extensions import TypeVarTuple, Unpack

if TYPE_CHECKING:
    from typing_extensions import Self  # type checkers bundle it on every Python

__all__ = ["ConnectionContext", "Dispatcher"]

log = logging.getLogger(__name__)

_NO_DEFAULT: Any = object()

T = TypeVar("T")
PosArgs = TypeVarTuple("PosArgs")


class Dispatcher(ProtocolRoles):
    """One connection, served by a protocol; the protocol's one class.

    Subclass it and implement :meth:`serve`; read with :attr:`reader`, answer
    with :attr:`writer`. Class attributes tune the buffers and the
    multiplexer; :attr:`options` declares the protocol's options (an
    :class:`~sota_dispatch.OptionSchema`), whose text arrives in
    ``context.options`` and whose values :meth:`option` reads. The frame
    semantics inherited from :class:`~sota_dispatch.FrameSemantics` (codecs
    of both sides, ids, heartbeats, error replies) are what the proxy and
    health checks use: a class that defines its codecs can be proxied.
    """

    read_size: ClassVar[int] = DEFAULT_READ_SIZE
    write_high_water: ClassVar[int] = DEFAULT_HIGH_WATER
    #: Bound on pending streams of one connection.
    max_in_flight: ClassVar[int] = 1024
    #: Default timeout of a pending stream, seconds (None: none).
    stream_timeout: ClassVar[float | None] = None
    #: How long a close may take: flushing the last replies and reading out
    #: what the peer still sends, so the kernel does not reset the connection
    #: and destroy the replies (a "lingering close"). ``on_close`` gets as
    #: long again.
    linger_timeout: ClassVar[float] = 2.0

    def __init__(self, stream: ByteStream, context: ConnectionContext | None = None) -> None:
        self.stream = stream
        self.context = context or ConnectionContext.for_stream(stream, protocol=self.protocol_name)
        self.writer = BufferedWriter(stream, high_water=self.write_high_water)
        self.reader = BufferedReader(stream, read_size=self.read_size, writer=self.writer)
        self.writer.pair(self.reader, None)
        # Made on first use: most connections (a proxy's client side, a
        # local service, the admin) never send a request of their own.
        self._mux: StreamMultiplexer[Any] | None = None
        self._mux_closed: ConnectionLost | None = None
        #: Why the connection ended, once it has: None for an orderly close.
        self.close_reason: BaseException | None = None
        self._loop: CodecLoop[Any] | None = None
        self._task_group: TaskGroup | None = None
        self._serve_scope: anyio.CancelScope | None = None
        self._flush_event: anyio.Event | None = None
        self._flush_requested = False
        self._finished: anyio.Event | None = None
        self._running = False
        self._stopping = False
        self._closing = False
        self._aborting = False
        #: Where this connection goes instead of closing (see hand_off).
        self._handoff: HandOffSink | None = None
        #: True once the connection went to another process instead of closing.
        self.handed_off = False
        self._flush_scope: anyio.CancelScope | None = None
        self._close_deadline = float("inf")
        self._outer: TaskGroup | None = None

    def __repr__(self) -> str:
        peer = self.context.remote_address or "?"
        return f"<{type(self).__name__} #{self.context.connection_id} {peer}>"

    # -- hooks for subclasses -------------------------------------------------

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """Could a connection starting with ``prefix`` speak this protocol?

        Used for auto-detection; the default never claims a connection.
        """
        return Match.NO

    async def on_connect(self) -> None:
        """Called before :meth:`serve` (greetings, handshakes, helper tasks)."""

    async def serve(self) -> None:
        """The protocol's loop: read requests, write answers.

        The default runs the core's codec loop with the class's codec for
        the connection's role (:meth:`new_codec`): requests go to
        :meth:`on_request`, answers to the :meth:`request` waiting for
        them, heartbeats are answered. Override it for a hand-written
        protocol. Return to close the connection in order.
        :class:`anyio.EndOfStream` from the reader (the peer closed between
        frames) ends it quietly; a :class:`~sota_dispatch.ProtocolError`
        closes it with a log line.
        """
        if not self.proxiable:
            raise NotImplementedError(f"{type(self).__name__} must implement serve() or define its codecs")
        await self.serve_frames(self.new_codec())

    async def on_close(self, reason: BaseException | None) -> None:
        """Called once the connection is closed; ``reason`` is None for an orderly end."""

    def drain_expired(self) -> None:
        """The server's drain timeout passed with this connection still
        open: it is about to be closed. Write what the peer is owed (error
        replies to the requests still in flight), without awaiting; the
        close flushes it. The default does nothing."""

    def flushed(self) -> None:
        """Called after the connection's flusher sent a batch (see
        :meth:`flush_soon`); a proxy uses it to send what waited for room."""

    @classmethod
    def validate_options(cls, options: Mapping[str, str]) -> None:
        """Refuse a local service's bad options before any connection is
        served: raise :class:`ValueError` naming every bad option (see
        :meth:`~sota_dispatch.FrameSemantics.option_errors`)."""
        errors = cls.option_errors(options, "service")
        if errors:
            problems = "; ".join(f"{name}: {problem}" for name, problem in errors.items())
            raise ValueError(problems)

    # -- helpers for subclasses ------------------------------------------------

    def option(self, name: str, default: Any = _NO_DEFAULT, convert: Callable[[str], Any] | None = None) -> Any:
        """The value of option ``name`` for this connection.

        A declared option is read by its schema (its default when absent);
        ``default`` and ``convert`` serve names the schema does not declare
        (how 0.1 subclasses read theirs).
        """
        raw = self.context.options.get(name)
        declared = self.options.get(name)
        if declared is not None and convert is None:
            return declared.default if raw is None else declared.read(raw)
        if raw is None:
            if default is _NO_DEFAULT:
                raise KeyError(f"{type(self).__name__} has no option {name!r}")
            return default
        return raw if convert is None else convert(raw)

    @property
    def streams(self) -> StreamMultiplexer[Any]:
        """The connection's requests in flight by id (the client role's
        :meth:`request`), with :attr:`id_bits`, :attr:`max_in_flight` and
        :attr:`stream_timeout`; made on first use."""
        streams = self._mux
        if streams is None:
            streams = self._mux = StreamMultiplexer(
                id_bits=self.id_bits, max_in_flight=self.max_in_flight, timeout=self.stream_timeout
            )
            if self._mux_closed is not None:
                streams.close(self._mux_closed)
        return streams

    @streams.setter
    def streams(self, streams: StreamMultiplexer[Any]) -> None:
        self._mux = streams

    def start_soon(
        self,
        func: Callable[[Unpack[PosArgs]], Coroutine[Any, Any, Any]],
        *args: Unpack[PosArgs],
        name: object = None,
    ) -> None:
        """Run a helper task for the life of this connection.

        The helper is cancelled when the connection ends; if it fails, the
        connection is closed with its error as the reason.
        """
        if self._task_group is None:
            raise RuntimeError("start_soon() needs a running dispatcher (inside run())")
        self._task_group.start_soon(func, *args, name=name)

    def drain(self) -> None:
        """Finish the requests already received, then close in order.

        The reader stops at the next frame boundary; an idle connection stops
        at once.
        """
        if self._loop is not None and self._loop.stop():
            return  # serve() goes on after its loop (answers in flight)
        self.reader.drain()
        if self.reader.idle and self._serve_scope is not None:
            self._serve_scope.cancel()

    def handoff_state(self) -> dict[str, Any] | None:
        """What another process needs to go on serving this connection
        from the current frame boundary (JSON-ready values), or None if it
        cannot move. A dispatcher that returns state reads it back from
        :attr:`ConnectionContext.handoff <sota_dispatch.ConnectionContext.handoff>`
        in the new process, or unparked (:mod:`~sota_dispatch.protocol.parking`).
        The default: :meth:`codec_state`."""
        return self.codec_state()

    def can_hand_off(self) -> bool:
        """Whether :meth:`hand_off` may move this connection: it runs, is not
        closing, and its class gives state (see :meth:`handoff_state`; a
        subclass narrows this to what can move, since the state itself is
        asked only at a frame boundary with nothing in flight)."""
        supported = self.movable_between_requests or type(self).handoff_state is not Dispatcher.handoff_state
        running = self._running and not self._closing and not self._stopping
        return supported and running and detachable(self.stream)  # a TLS session cannot move

    def hand_off(self, sink: HandOffSink) -> None:
        """Move this connection to another process: stop reading at the
        next frame boundary, finish what is in flight (as :meth:`drain`),
        then give it to ``sink`` instead of closing it. If it cannot go
        then, it is closed as a drain closes it."""
        self._handoff = sink
        self.drain()

    def flush_soon(self) -> None:
        """Have the writer flushed the next time this connection's task yields.

        For data written into this connection's writer from elsewhere (another
        connection's task, a callback): it is sent without the writer's
        owner having to do anything, and without the caller waiting for a
        slow peer. Only effective while :meth:`run` is running.
        """
        if self._flush_requested:
            return  # cheap when called once per message: a flag, not the event
        event = self._flush_event
        if event is None:
            # The flusher starts on the first deferred flush: an idle
            # connection (most of them, on a busy proxy) never pays a task.
            if self._task_group is None:
                return  # not serving, or closing (the close flushes)
            event = self._flush_event = anyio.Event()
            self._task_group.start_soon(self._flusher, name=f"{self!r} flusher")
        self._flush_requested = True
        event.set()

    def flush_now(self) -> None:
        """Send what the writer holds from the calling task, without waiting,
        if the socket takes it all now; else as :meth:`flush_soon` does.

        For a task that wrote into this connection's writer and has finished
        its batch (see :class:`~sota_dispatch.Outbox`): it saves waking
        the flusher. Only effective while :meth:`run` is running.
        """
        if not self._running:
            return
        if self.writer.flush_nowait():
            self.flushed()
        else:
            self.flush_soon()

    def close_soon(self) -> None:
        """Stop serving and close, without waiting (see :meth:`aclose`)."""
        self._stopping = True
        self.reader.offer_input(None)  # what arrives from now on is not served where it lands
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    def abort(self) -> None:
        """Close at once, without the lingering close: for a connection shed to make room (an
        overload action), whose peer is owed nothing and must not hold its slot while a linger waits."""
        self._aborting = True
        self.close_soon()

    # -- lifecycle -------------------------------------------------------------

    async def _flusher(self) -> None:
        # Sends deferred replies the next time serve() yields. A batch once
        # started is finished even if the connection is closing (cancelling a
        # send midway would cut a frame in two), within the linger timeout.
        connection_id.set(self.context.connection_id)  # it may start from another connection's task
        while True:
            event = self._flush_event
            assert event is not None
            await event.wait()
            self._flush_event = anyio.Event()
            self._flush_requested = False
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = self._close_deadline
                self._flush_scope = scope
                try:
                    await self.writer.flush()
                finally:
                    self._flush_scope = None
            self.flushed()

    def _closing_begins(self) -> None:
        self._task_group = None  # no new helper (or flusher) once serve() is over
        self._close_deadline = loop_time() + self.linger_timeout
        if self._flush_scope is not None:
            self._flush_scope.deadline = self._close_deadline

    async def run(self) -> None:
        """Serve the connection to its end, then close it; never raises for
        anything the peer did (only cancellation from outside propagates)."""
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        # This task (and the helpers it starts) serves this connection: every
        # log line written meanwhile carries its id (see sota_dispatch.logs).
        connection_id.set(self.context.connection_id)
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                self.writer.pair(self.reader, self.flush_soon)
                try:
                    with anyio.CancelScope() as scope:
                        self._serve_scope = scope
                        if self._stopping:
                            scope.cancel()
                        await self.on_connect()
                        await self.serve()
                finally:
                    self._closing_begins()
                tg.cancel_scope.cancel()
        except BaseException as exc:  # classified below
            reason = primary_error(exc)
            if isinstance(reason, anyio.get_cancelled_exc_class()):
                await self._finish(ConnectionLost(reason), linger=False)
                raise
            if isinstance(reason, anyio.EndOfStream) and await self._handed_off():
                return  # a serve() that ends with the reader's EndOfStream at the boundary
            await self._finish(reason, linger=True)
            if not isinstance(reason, Exception):
                raise reason from None  # KeyboardInterrupt, SystemExit: not ours to swallow
        else:
            if not await self._handed_off():
                await self._finish(None, linger=True)

    async def _handed_off(self) -> bool:
        """Give the connection to the hand-off sink if one was set (see
        :meth:`hand_off`); False: it stays here, to be closed."""
        if self._handoff is None or not await hand_over(self, self._handoff):
            return False
        self.handed_off = True
        await self._finish(None, linger=False, handed_off=True)
        return True

    async def _finish(self, reason: BaseException | None, *, linger: bool, handed_off: bool = False) -> None:
        self._closing = True
        if isinstance(reason, anyio.EndOfStream):
            reason = None  # an orderly end: the peer's EOF, or our drain
        # Linger unless the peer already closed its side (or the connection
        # is broken): replies still in flight must not be destroyed by a
        # reset (see closing.linger_out).
        linger = (
            linger
            and not self._aborting
            and not self.reader.at_eof
            and not self.reader.interrupted  # an idle connection drained: nothing of ours in flight
            and not isinstance(reason, PEER_GONE)
            and (not isinstance(reason, ProtocolError) or reason.linger)  # see ProtocolError.linger
        )
        self._serve_scope = None
        self.writer.pair(self.reader, None)
        self.close_reason = reason
        error = reason if isinstance(reason, ConnectionLost) else ConnectionLost(reason)
        self._mux_closed = error  # a request() after the close fails as one before it
        if self._mux is not None:
            self._mux.close(error)
        if not handed_off:
            log_close(self.context.connection_id, reason)
        with anyio.CancelScope(shield=True):
            # Handed off: only this process's descriptor closes (no flush, no linger).
            with anyio.move_on_after(0 if self._aborting or handed_off else self.linger_timeout):
                try:
                    await self.writer.flush()
                    if linger:
                        await linger_out(self.stream, self.reader)
                except (*PEER_GONE, OSError, FrameTimeout):  # gone, or still not reading: closed as it is
                    pass
                except RuntimeError as exc:  # uvloop: "the handler is closed" on a transport already gone
                    log.debug("closing: %s", exc, extra={"conn": self.context.connection_id})
            await self.stream.aclose()
            with anyio.move_on_after(self.linger_timeout) as hook_scope:
                try:
                    await self.on_close(reason)
                except Exception:
                    log.exception("on_close() failed", extra={"conn": self.context.connection_id})
            if hook_scope.cancelled_caught:
                log.warning(
                    "on_close() took over %.1fs", self.linger_timeout, extra={"conn": self.context.connection_id}
                )
            # Whatever still refers to this object, its buffers go now.
            drop_tracebacks(reason)
            discard_input(self.stream)
            self.reader.release()
            self.writer.release()
            self._loop = None  # and its codec's partial frame
            if self._finished is None:  # made here, not per connection: few ever wait
                self._finished = anyio.Event()
            self._finished.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`run` has closed the connection (at once if it ended)."""
        if self._finished is None:
            self._finished = anyio.Event()  # run() has not started: it will set this one
        await self._finished.wait()

    async def aclose(self) -> None:
        """Close the connection; if it is running, stop it and wait for the end.

        Returns at once when the close is already under way (for instance
        when called from :meth:`on_close`).
        """
        if self._closing:
            return
        if self._running:
            self.close_soon()
            await self.wait_closed()
        else:
            await self.stream.aclose()

    # -- client role -----------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        address: str | tuple[str, int],
        *,
        timeout: float = 10.0,
        options: Mapping[str, str] | None = None,
        **init_kwargs: Any,
    ) -> Self:
        """Open a TCP connection to ``HOST:PORT`` and wrap it (client role).

        Use the result directly (``reader``/``writer``) or as an async context
        manager, which runs :meth:`run` in the background until the block
        ends. ``init_kwargs`` go to the subclass's constructor.
        """
        host, port = parse_address(address)
        with anyio.fail_after(timeout):
            stream = await open_connection(host, port)  # never one to itself
        try:
            context = ConnectionContext.for_stream(stream, protocol=cls.protocol_name, role="client", options=options)
            return cls(stream, context, **init_kwargs)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def __aenter__(self) -> Self:
        outer = anyio.create_task_group()
        await outer.__aenter__()
        self._outer = outer
        outer.start_soon(self.run, name=f"{self!r} run")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        outer, self._outer = self._outer, None
        assert outer is not None
        # No await before the task group's exit: if this block is being
        # cancelled, awaiting here would leave the group's scope unexited.
        self.close_soon()
        return await outer.__aexit__(exc_type, exc, tb)
