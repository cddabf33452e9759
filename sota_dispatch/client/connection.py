"""One connection of the client tool: any proxiable protocol, client role.

:class:`CallConnection` is a :class:`~sota_dispatch.Dispatcher` that speaks
the protocol of another class, named when it is made, the way the proxy's
upstream connections do: that class's client codec (a ZMTP DEALER engine,
a bolt or dubbo decoder, a line codec), handshake included, and its frame
semantics. A request goes out under a fresh id of the connection's
:class:`~sota_dispatch.StreamMultiplexer`; its answer comes back by id
where the protocol multiplexes (bolt, dubbo, ZMTP's id frame) and by order
where it pipelines (simple_line has no ids). A protocol class is not asked
to serve the client role itself: its own class (the echo service the
registry holds) may answer requests, and ZMTP's calls every message a
request, so the semantics used here are the ones the proxy relies on.

:func:`call_connection` opens one (TCP, optionally TLS), waits for the
handshake and closes it when the block ends.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import ByteStream

from ..errors import ConnectionLost, ProtocolError, SotaError
from ..io.address import parse_address
from ..io.tls import ClientTLS, open_connection
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from ..protocol.multiplexer import StreamMultiplexer
from ..protocol.semantics import FrameSemantics

__all__ = ["CallConnection", "CannotConnect", "call_connection"]

log = logging.getLogger(__name__)


class CannotConnect(SotaError):
    """The server cannot be reached: refused, unreachable, no connection in
    time, a TLS certificate that does not verify. The message says which
    in plain words ("connection refused")."""


def connect_failure(address: str, error: BaseException, timeout: float) -> CannotConnect:
    """``error`` from connecting to ``address``, as one plain line."""
    return CannotConnect(f"cannot connect to {address}: {_why(error, timeout)}")


def _why(error: BaseException, timeout: float) -> str:
    # anyio says "All connection attempts failed" from the attempts' own
    # errors (one, or a group of one per address tried).
    causes = getattr(error.__cause__, "exceptions", None) or [error.__cause__ or error]
    if all(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, TimeoutError):
        return f"no connection within {timeout:g}s"
    first = causes[0]
    if isinstance(first, OSError) and first.strerror:
        return first.strerror[:1].lower() + first.strerror[1:]  # "Connection reset by peer" mid-sentence
    return str(first) or type(first).__name__


class CallConnection(Dispatcher):
    """A client connection speaking ``protocol`` (a class with both codecs).

    Run it (``async with``), wait for :meth:`wait_ready`, then
    :meth:`request` as many frames as you like, concurrently: each gets its
    own answer. ``options`` in the context are the protocol's ``cluster``
    options (a ZMTP identity, PLAIN credentials, ...).
    """

    linger_timeout = 0.5

    def __init__(
        self,
        stream: ByteStream,
        context: ConnectionContext,
        *,
        protocol: type[FrameSemantics],
        max_in_flight: int = 1024,
    ) -> None:
        super().__init__(stream, context)
        self.protocol = protocol
        self._frames = protocol.bound_semantics()
        values = protocol.option_values(context.options, "cluster")
        self.codec = protocol.client_codec(values, values.get("max_frame_size") or Dispatcher.max_frame_size)
        #: Answers come in the order of the requests (no ids to match them by).
        self.in_order = protocol.pool_mode != "multiplex"
        limit = min(max(1, max_in_flight), (1 << protocol.id_bits) - 2)
        self.streams = StreamMultiplexer(id_bits=protocol.id_bits, max_in_flight=limit)
        #: The ids of the requests sent and not yet answered, in order (in_order only).
        self._sent: deque[int] = deque()
        self._ready = anyio.Event()
        self._handshaken = False

    async def wait_ready(self) -> None:
        """Wait for the protocol's handshake (at once for one without);
        :class:`~sota_dispatch.ConnectionLost` if the connection ends first."""
        await self._ready.wait()
        if not self._handshaken:
            raise ConnectionLost(self.close_reason)

    async def serve(self) -> None:
        try:
            # The handshake's time is the caller's (call_connection): no
            # second clock here. Codec errors close without last words.
            loop = self.codec_loop(self.codec, handshake_timeout=None, last_words=False)
            frames = await loop.handshake()
            self._handshaken = True
            self._ready.set()
            self._answers(frames)
            async for frames in loop:
                self._answers(frames)
        finally:
            self._ready.set()  # wait_ready() tells a connection that never got ready

    def _answers(self, frames: list[Any]) -> None:
        semantics, streams = self._frames, self.streams
        for frame in frames:
            if semantics.is_heartbeat(frame):
                if semantics.is_request(frame):
                    self.writer.write(semantics.heartbeat_reply(frame))
                    self.flush_soon()
                continue
            if self.in_order:
                if not self._sent:
                    raise ProtocolError("an answer to no request (answers are matched by their order)")
                stream_id: int | None = self._sent.popleft()
            else:
                stream_id = semantics.response_id(frame)
            if stream_id is None:
                streams.unmatched += 1
            elif not streams.complete(stream_id, frame):
                log.debug("an answer (id %d) that no request waits for is dropped", stream_id)

    async def request(self, frame: Any, *, timeout: float | None = None) -> Any:
        """Send ``frame`` and return its answer (None for a oneway request);
        :class:`~sota_dispatch.StreamTimeout` after ``timeout`` seconds,
        :class:`~sota_dispatch.ConnectionLost` if the connection ends first."""
        await self.wait_ready()
        pending = self.streams.open(timeout=timeout)
        try:
            writer = self.writer
            writer.write(self._frames.encode_request(frame, pending.stream_id))
            if self.in_order:
                self._sent.append(pending.stream_id)
            if writer.pending >= writer.high_water:
                await writer.flush()  # a server that does not read holds us, not our memory
            else:
                self.flush_soon()  # the requests of this tick leave in one send
        except BaseException:
            pending.cancel()
            raise
        if self._frames.is_oneway(frame):
            pending.cancel()
            return None
        return await pending.result()


@asynccontextmanager
async def call_connection(
    protocol: type[FrameSemantics],
    address: str,
    *,
    timeout: float,
    tls: ClientTLS | None = None,
    options: Mapping[str, str] | None = None,
    max_in_flight: int = 1024,
) -> AsyncIterator[CallConnection]:
    """A running :class:`CallConnection` to ``address``, handshake done,
    for the block.

    Raises :class:`CannotConnect` when the server cannot be reached
    within ``timeout`` seconds (refused, unreachable, TLS refused);
    :class:`TimeoutError` when its handshake does not finish in that time,
    :class:`~sota_dispatch.ConnectionLost` when it closes during it."""
    host, port = parse_address(address)
    try:
        with anyio.fail_after(timeout):
            stream = await open_connection(host, port, tls)
    except (OSError, TimeoutError) as exc:
        raise connect_failure(address, exc, timeout) from exc
    try:
        context = ConnectionContext.for_stream(stream, protocol=protocol.protocol_name, role="client", options=options)
        connection = CallConnection(stream, context, protocol=protocol, max_in_flight=max_in_flight)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    # An error of the block (or of the handshake) is raised after the
    # connection's task group ends, not in it: the group would wrap it in an
    # ExceptionGroup, and the caller wants the error itself.
    error: Exception | None = None
    async with connection:
        try:
            with anyio.move_on_after(timeout) as scope:
                await connection.wait_ready()
            if scope.cancelled_caught:
                raise TimeoutError(f"no {protocol.protocol_name} handshake within {timeout:g}s")
            yield connection
        except Exception as exc:  # noqa: BLE001 - raised again below, unwrapped
            error = exc
    if error is not None:
        raise error
