"""An endpoint's pool of upstream connections, and those connections.

A pool opens connections lazily (up to its ``connections``), queues a
request while none can take it (up to ``max_pending``), and replaces a
connection that fails. Each connection writes requests into its buffer
(one send per batch) and hands every answer to its request from its one
reader task: nothing here spawns a task per request.

Three modes, from the protocol unless configured: ``multiplex`` (a few
connections, many requests each, matched by a fresh upstream id),
``pipeline`` (many requests per connection, answered in order) and
``exclusive`` (one request per connection at a time).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import anyio
from anyio.abc import ByteStream

from ..errors import ProtocolError
from ..io.address import parse_address
from ..io.reader import BufferedReader
from ..io.timeouts import ReadTimeouts
from ..io.tls import open_connection
from ..io.transport import input_queued
from ..io.writer import BufferedWriter
from ..protocol.codec import Failure
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from ..protocol.fifo import Fifo, new_fifo
from ..protocol.multiplexer import StreamMultiplexer
from ..protocol.semantics import FrameSemantics
from .balancers import Endpoint
from .request import PoolOwner, PoolSite, Request

__all__ = ["Pool", "UpstreamConnection"]

log = logging.getLogger(__name__)


class Pool:
    """The connections of one cluster to one endpoint, for one protocol, and
    (``owner``) for one client connection only."""

    def __init__(
        self, cluster: PoolSite, endpoint: Endpoint, protocol: type[FrameSemantics], *, owner: PoolOwner | None = None
    ) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.protocol = protocol
        self.owner = owner
        self.closed = False
        #: Its endpoint left the cluster, or its cluster was replaced: no
        #: new requests; each connection closes once its last answer is in.
        self.retiring = False
        self.mode, self.max_connections, self.max_requests, _ = cluster.config.pool.resolved(protocol.pool_mode)
        if self.mode == "multiplex":  # never more in flight than there are ids
            self.max_requests = min(self.max_requests, (1 << protocol.id_bits) - 2)
        self.max_pending = cluster.config.pool.max_pending
        self.connections: list[UpstreamConnection] = []
        self.connecting = 0
        #: Requests waiting for a connection: (exchange, its try number).
        self.pending: deque[tuple[Request, int]] = deque()
        self.connections_opened = 0

    def submit(self, exchange: Request) -> None:
        """Send ``exchange`` now, or queue it for a connection, or fail it
        with an overflow reply.

        Requests already queued go first (a stalled upstream's queue): one
        that arrives later never overtakes them, so one client's requests
        reach the endpoint in the order it sent them.
        """
        if self.pending:  # a deque's truth is a generic call compiled: once
            self.drain_queue()
            connection = None if self.pending else self._choose()
        else:
            connection = self._choose()
        if connection is not None:
            connection.send(exchange)
            return
        cluster = self.cluster
        if len(self.pending) >= self.max_pending:
            # Requests that timed out while waiting still sit in the queue.
            before = len(self.pending)
            self.pending = deque(entry for entry in self.pending if entry[0].live(entry[1]))
            cluster.queued -= before - len(self.pending)
        if len(self.pending) >= self.max_pending:
            exchange.try_failed("overflow", Failure.OVERFLOW, "too many requests waiting for an upstream connection")
            return
        limit = cluster.thresholds.max_pending_requests
        # The exact count walks every queued request: only near the limit
        # (with 1,000 pipelined it was a scan of the queue per request).
        if cluster.queued >= limit and cluster.pending_requests() >= limit:
            cluster.overflows += 1
            exchange.try_failed("overflow", Failure.OVERFLOW, f"cluster {cluster.name}: max_pending_requests reached")
            return
        if (
            self.owner is not None
            and not self.connections
            and not self.connecting
            and cluster.open_connections >= cluster.thresholds.max_connections
            and not cluster.close_an_idle_client_connection()
        ):
            # A client's own pool cannot wait for another client's busy
            # connection to free up: it would wait for good.
            cluster.overflows += 1
            exchange.try_failed("overflow", Failure.OVERFLOW, f"cluster {cluster.name}: max_connections reached")
            return
        self.pending.append((exchange, exchange.attempt))
        cluster.queued += 1
        if self.connecting == 0 or len(self.pending) > self.connecting * self.max_requests:
            self._open()

    def _choose(self) -> UpstreamConnection | None:
        best: UpstreamConnection | None = None
        for connection in self.connections:
            if (
                connection.ready
                and connection.load < self.max_requests
                and (best is None or connection.load < best.load)
                and connection.writer.pending < connection.writer.high_water  # not a stalled upstream
            ):
                best = connection
        if best is not None and best.load and len(self.connections) + self.connecting < self.max_connections:
            self._open()  # busy: spread the load over another connection
        return best

    def _open(self) -> None:
        cluster = self.cluster
        task_group = cluster.task_group
        if len(self.connections) + self.connecting >= self.max_connections or task_group is None or self.closed:
            return
        if (self.connections or self.connecting) and cluster.open_connections >= cluster.thresholds.max_connections:
            # The cluster's threshold: requests wait for a connection to free
            # up. A pool with none may always open one (as Envoy does), or a
            # busy endpoint could starve another of connections for good.
            return
        self.connecting += 1
        cluster.open_connections += 1
        task_group.start_soon(self._connect, name=f"connect {self.endpoint.address}")

    async def _connect(self) -> None:
        host, port = parse_address(self.endpoint.address)
        try:
            with anyio.fail_after(self.cluster.config.connect_timeout):
                stream = await open_connection(host, port, self.cluster.tls)
        except (OSError, TimeoutError) as exc:
            self.connecting -= 1
            self.cluster.open_connections -= 1
            self._connect_failed(exc if str(exc) else TimeoutError("connect timeout"))
            return
        self.connecting -= 1
        if self.closed:  # its client left meanwhile
            self.cluster.open_connections -= 1
            await anyio.aclose_forcefully(stream)
            return
        try:
            connection = UpstreamConnection(stream, pool=self)
        except Exception as exc:  # a plugin's codec refused its options: fail the queue, not the proxy
            self.cluster.open_connections -= 1
            log.exception("cluster %s: cannot set up a connection to %s", self.cluster.name, self.endpoint.address)
            await anyio.aclose_forcefully(stream)
            self._connect_failed(exc)
            return
        self.connections_opened += 1
        self.connections.append(connection)
        await connection.run()

    def close(self) -> None:
        """Close a client's own pool with its client: its connections carry
        nothing anyone waits for any more."""
        self.closed = True
        waiting, self.pending = self.pending, deque()
        self.cluster.queued -= len(waiting)
        for exchange, attempt in waiting:
            if exchange.live(attempt):
                exchange.abandon()  # its try ends, and gives back its share of max_requests (a oneway too)
        for connection in self.connections:
            connection.ready = False
            connection.close_soon()
        self.cluster.pool_closed(self)

    def retire(self) -> None:
        """Take no new requests (the caller stops handing it any); serve
        what is queued and in flight, closing each connection as it goes
        idle (a reload or a discovery change must lose no request)."""
        self.retiring = True
        for connection in list(self.connections):
            connection.close_if_idle()
        if not self.connections and not self.connecting and not self.pending and self.owner is not None:
            self.cluster.pool_closed(self)

    def _connect_failed(self, error: BaseException) -> None:
        if self.closed:
            return  # nobody waits, and a client leaving says nothing of the endpoint
        if self.connecting or any(c.ready for c in self.connections):
            # An extra connection failed; the endpoint still serves on the
            # others (the queue drains onto them), so it is not down.
            log.debug(
                "cluster %s: another connection to %s failed: %s", self.cluster.name, self.endpoint.address, error
            )
            return
        self.cluster.connect_failed(self.endpoint, self.protocol.protocol_name, error)
        waiting, self.pending = self.pending, deque()
        self.cluster.queued -= len(waiting)
        for exchange, attempt in waiting:
            if exchange.live(attempt):
                exchange.try_failed("connect_failure", Failure.NO_HEALTHY_UPSTREAM, f"{self.endpoint.address}: {error}")

    def ready(self, connection: UpstreamConnection) -> None:
        """``connection`` finished its handshake: serve the queue."""
        self.cluster.connected(self.endpoint, self.protocol.protocol_name)
        self.drain_queue()

    def drain_queue(self) -> None:
        pending = self.pending
        cluster = self.cluster
        while pending:
            exchange, attempt = pending[0]
            if not exchange.live(attempt):
                pending.popleft()
                cluster.queued -= 1
                continue
            connection = self._choose()
            if connection is None:
                return
            pending.popleft()
            cluster.queued -= 1
            connection.send(exchange)

    def lost(self, connection: UpstreamConnection, error: BaseException | None) -> None:
        """``connection`` ended: before its handshake it is a connect failure."""
        if connection.retired:
            return  # closed to make room: counted and forgotten already
        if connection in self.connections:
            self.connections.remove(connection)
            self.cluster.open_connections -= 1
        if not connection.was_ready:
            self._connect_failed(error or ConnectionError("closed during the handshake"))
        elif self.pending:
            self._open()
        elif self.retiring and not self.connections and not self.connecting and self.owner is not None:
            self.cluster.pool_closed(self)


class UpstreamConnection(Dispatcher):
    """One connection to an endpoint, client role, carrying many requests."""

    linger_timeout = 0.5
    # Declared here (the Dispatcher sets them): in the compiled build, an
    # attribute this class declares is a field of its own, read directly.
    writer: BufferedWriter
    reader: BufferedReader

    def __init__(self, stream: ByteStream, *, pool: Pool) -> None:
        config = pool.cluster.config
        context = ConnectionContext.for_stream(
            stream, protocol=pool.protocol.protocol_name, role="client", options=config.options
        )
        super().__init__(stream, context)
        # This reader must never wait on a send before reading: an upstream
        # busy writing answers to us while we wait to write requests to it
        # would deadlock both (every client's requests with them). Requests
        # leave through the flusher task instead.
        self.reader = BufferedReader(stream, read_size=self.read_size)
        self.pool = pool
        self.protocol = pool.protocol
        self._frames = pool.protocol.bound_semantics()
        self.codec = pool.protocol.client_codec(
            pool.protocol.option_values(config.options, "cluster"), config.max_frame_size
        )
        #: The proxy's batch collector (written per request: one lookup, here).
        self.outbox = pool.cluster.outbox
        self.multiplexed = pool.mode == "multiplex"
        self.ready = False
        self.was_ready = False
        #: Closed by its cluster to make room (see Cluster.close_an_idle_client_connection).
        self.retired = False
        #: Requests sent and not yet answered (abandoned pipeline slots included).
        self.load = 0
        #: Requests in flight by upstream id (multiplex mode): the core's
        #: multiplexer allocates the ids and holds ``(request, try)``.
        ids: StreamMultiplexer[tuple[Request, int]]
        ids = StreamMultiplexer(id_bits=pool.protocol.id_bits, max_in_flight=max(1, pool.max_requests))
        self.streams = self._ids = ids  # per request through the plain attribute, not the property
        #: Requests in the order they were sent (pipeline, exclusive).
        self.in_order: Fifo[tuple[Request, int]] = new_fifo()
        #: Answers to no request in order (pipeline, exclusive).
        self.unmatched = 0
        self._held = 0
        self._read_ahead = input_queued(stream)

    def send(self, exchange: Request) -> None:
        """Write the request (it leaves with this batch's flush)."""
        attempt = exchange.attempt
        if self.multiplexed:
            if exchange.oneway:
                data = self._frames.encode_request(exchange.frame, self._ids.unused_id())
            else:
                upstream_id = self._ids.add((exchange, attempt))
                data = self._frames.encode_request(exchange.frame, upstream_id)
                exchange.upstream_id = upstream_id
        else:
            data = self._frames.encode_request(exchange.frame, 0)
            if not exchange.oneway:
                self.in_order.append((exchange, attempt))
        self.writer.write(data)
        self.outbox.add(self)
        if exchange.oneway:
            exchange.sent_oneway()
        else:
            self.load += 1
            exchange.upstream = self

    def flushed(self) -> None:
        if self.pool.pending:  # requests that waited for the writer to empty
            self.pool.drain_queue()

    def forget(self, exchange: Request, *, stuck: bool = False) -> None:
        """Stop waiting for ``exchange``'s answer (timeout, client gone): a
        late answer is then dropped.

        A pipelined or exclusive slot cannot be given up: the answers come
        in order. If the upstream is ``stuck`` (it did not answer in time),
        the connection is closed, as Envoy and MOSN do for HTTP/1 and
        ping-pong pools, so it cannot hold every later request hostage;
        the requests behind it get a reset (retried when allowed).
        """
        if self.multiplexed:
            streams = self.streams
            entry = streams.get(exchange.upstream_id)
            if entry is not None and entry[0] is exchange:
                streams.discard(exchange.upstream_id)
                self.load -= 1
                if self.pool.pending:
                    self.pool.drain_queue()
                elif self.pool.retiring:
                    self.close_if_idle()
        elif stuck and self.ready:
            self.ready = False  # no new requests on it
            log.debug("upstream gave no answer in time; closing it", extra={"conn": self.context.connection_id})
            self.close_soon()

    async def serve(self) -> None:
        error: BaseException | None = None
        try:
            # Answers owed to nobody here: a codec error closes the connection
            # without last words to the upstream.
            loop = self.codec_loop(
                self.codec,
                handshake_timeout=self.pool.cluster.config.connect_timeout,
                last_words=False,
                empty_batches=True,
                flush=self.flush_now,  # a PONG: this reader does not flush before it waits
            )
            if loop.take_inline(self._answers):
                # No limits of its own (the requests' deadlines bound the
                # waits), but a watched wait lets answers be taken inline.
                self.reader.set_timeouts(ReadTimeouts(None, None))
            self._answers(await loop.handshake(), 0)
            self.ready = self.was_ready = True
            self.pool.ready(self)
            async for frames in loop:
                self._answers(frames, loop.received)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._lost(error)

    def _answers(self, frames: list[Any], received: int) -> bool:
        """One read batch of answers, from the task or where its bytes
        arrived (CodecLoop.take_inline); it never waits (True)."""
        if frames:
            with self.outbox:  # the clients answered leave with one send each, from here
                self._responses(frames)
        codec = self.codec
        held = codec.buffered if self._read_ahead is None else codec.buffered + self._read_ahead()
        if held != self._held:  # what the process holds of answers counts in its budget
            self._held = held
            self.pool.cluster.budget.hold(self, held, exempt=True)  # counted, never refused or shed: it serves many
        return True

    def _responses(self, frames: list[Any]) -> None:
        protocol, ids = self._frames, self._ids  # no alias of ids.take: a generic call compiled
        is_heartbeat, response_id = protocol.is_heartbeat, protocol.response_id  # once per batch
        now = self.pool.cluster.clock.now()
        # Typed: the multiplexer hands back Any, and an untyped exchange
        # costs the compiled build a lookup by name per field and call. Not
        # Optional: compiled, a tuple in a union is boxed (a new tuple per
        # answer) and unpacked by iteration; this way it stays a C struct.
        entry: tuple[Request, int]
        for response in frames:
            if is_heartbeat(response):
                if protocol.is_request(response):
                    self.writer.write(protocol.heartbeat_reply(response))
                    self.outbox.add(self)
                continue
            if self.multiplexed:
                upstream_id = response_id(response)
                # None (counted as unmatched): e.g. a late answer to a request given up on.
                if upstream_id is None:
                    ids.unmatched += 1
                    continue
                taken = ids.take(upstream_id)
                if taken is None:
                    continue
                entry = taken
            elif self.in_order:
                entry = self.in_order.popleft()
            else:
                # Answers are matched by order alone: one too many means the
                # upstream and we disagree on which answer is whose. Nothing
                # more from it can be trusted.
                self.unmatched += 1
                log.warning(
                    "cluster %s: %s sent an answer to no request; closing that connection",
                    self.pool.cluster.name,
                    self.pool.endpoint.address,
                )
                raise ProtocolError("an answer to no request (answers are matched by their order)")
            self.load -= 1
            exchange, attempt = entry
            if not exchange.done and exchange.attempt == attempt:
                exchange.upstream = None
                try:
                    exchange.on_response(response, now)
                except Exception:  # one bad answer must not reset everyone's requests
                    log.exception("handing an answer to its request failed", extra={"conn": self.context.connection_id})
                    exchange.abandon()
        if self.pool.pending:
            self.pool.drain_queue()
        elif self.pool.retiring:
            self.close_if_idle()

    def close_if_idle(self) -> None:
        """Close this connection of a retiring pool if nothing is in flight on it or queued for it."""
        pool = self.pool
        if not self.load and not pool.pending:
            self.ready = False
            self.close_soon()

    def _lost(self, error: BaseException | None) -> None:
        self.ready = False
        self.pool.cluster.budget.release(self)
        self.pool.lost(self, error)
        entries = [*self.streams.take_all(), *self.in_order]
        self.in_order.clear()
        self.load = 0
        for exchange, attempt in entries:
            if exchange.live(attempt):
                exchange.upstream = None
                exchange.try_failed(
                    "reset", Failure.UPSTREAM_RESET, f"{self.pool.endpoint.address} closed the connection"
                )
