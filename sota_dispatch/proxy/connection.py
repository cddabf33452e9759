"""A client connection to the proxy: requests in, answers (or error replies) out.

A :class:`ProxyConnection` decodes the requests of a read batch with its
protocol's codec, answers heartbeats itself, routes every request and
starts its first try, all without awaiting; the upstream connections'
readers write the answers back. It knows the protocol only through its
:class:`~sota_dispatch.FrameSemantics` of its protocol's class, and its listener through
:class:`~.sites.ListenerSite`.

Errors are replies: no route, no healthy upstream, overflow, timeout, an
upstream reset each end the request with the protocol's own error reply,
and the client connection stays up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import anyio
from anyio.abc import ByteStream

from ..cluster.balancers import Endpoint
from ..cluster.cluster import Cluster
from ..cluster.pool import Pool
from ..errors import ProtocolError
from ..filters.api import FilterRequest, LocalReply
from ..io.reader import BufferedReader, ReadTimeouts
from ..io.transport import input_queued
from ..io.writer import BufferedWriter, Encoded, encoded_size
from ..protocol.codec import Codec, Failure, codec_handoff_state, codec_movable
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from ..protocol.fifo import Fifo, new_fifo
from ..protocol.semantics import BoundSemantics, FrameSemantics
from .exchange import Exchange, ExchangeSink, FilteredExchange, start_try
from .filter_waits import FilterWaits
from .holdings import Holdings
from .replies import Slot
from .routing import Route
from .sites import ListenerSite
from .sniffing import MAX_SNIFF, sniff_protocol

__all__ = ["MAX_SNIFF", "ProxyConnection"]

log = logging.getLogger(__name__)

# What a batch waits for before it goes on (ProxyConnection._go_on).
_ROOM: Final = 1  # room in a cluster at max_requests, for the request held back
_IN_FLIGHT: Final = 2  # max_in_flight: an answer
_BUDGET: Final = 3  # the process's buffer budget
_FLUSH: Final = 4  # the client to read what is written to it


class ProxyConnection(FilterWaits, Dispatcher, ExchangeSink):
    """A client connection: requests in, answers (or error replies) out."""

    # Slots: with the Dispatcher's, one dict would outgrow CPython's shared keys (~1.5 KiB per connection).
    __slots__ = tuple(
        "listener protocol semantics in_flight closed _exchanges _ordered _wake _read_scope _codec _streams _turn"  # noqa: SIM905
        " _room_scope _filtering _expired _holdings _ref upstream_pools _max_in_flight"
        " _stats _outbox _timers _policy _wake_at _wait_for _left _left_bytes _resumed _held_back".split()
    )
    # Declared here (the Dispatcher sets them): compiled, an attribute this class declares is
    # a field of its own, read directly; one only its interpreted base declares, a lookup by name.
    writer: BufferedWriter
    reader: BufferedReader

    def __init__(self, stream: ByteStream, context: ConnectionContext, *, listener: ListenerSite) -> None:
        super().__init__(stream, context)
        self.listener: ListenerSite = listener
        self.protocol: type[FrameSemantics] | None = listener.protocol
        self.semantics: BoundSemantics | None = None  # its per-frame methods, bound
        self.in_flight: int = 0
        # The listener's parts read per request, which last as long as it does.
        self._stats, self._outbox, self._timers = listener.stats, listener.outbox, listener.timers
        self._policy = listener.policy  # read per request: a reload changes it in place
        self.closed = False
        self._exchanges: set[Exchange] = set()
        self._ordered: Fifo[Exchange | Slot] | None = None
        #: Set when the reader waits for in_flight to come down to _wake_at.
        self._wake: anyio.Event | None = None
        self._wake_at = 0
        self._read_scope: anyio.CancelScope | None = None
        self._codec: Codec[Any] | None = None
        self._streams = 0  # requests decoded so far (a request's number is its stream id)
        #: The cluster that let it in after a wait for room, for the rest of the batch (see Cluster.has_room).
        self._turn: Cluster | None = None
        #: What a batch stopped at: the wait (_ROOM...), the frames left, the request held back for room.
        self._wait_for = self._left_bytes = self._max_in_flight = 0
        self._left: list[Any] | None = None
        self._resumed = False
        self._held_back: tuple[Any, tuple[Cluster, float, FilterRequest | None]] | None = None
        self._room_scope: anyio.CancelScope | None = None
        #: The waits of requests their stream filters hold (see _after_filters).
        self._filtering: dict[anyio.CancelScope, tuple[FilterRequest, Slot | None]] = {}
        self._expired: bool = False  # the drain timeout passed: what comes now gets a timeout reply
        self._holdings = Holdings(listener.budget, input_queued(stream))
        #: This connection's part of the references its error replies carry.
        self._ref: str | None = None
        #: This client's own upstream pools (of clusters that share none), closed with it.
        self.upstream_pools: dict[tuple[Cluster, Endpoint], Pool] = {}

    # -- life cycle -------------------------------------------------------------

    def drain(self) -> None:
        """Stop reading at the next frame boundary, answer what is in flight, close."""
        super().drain()
        if self._read_scope is not None:  # still detecting the protocol
            self._read_scope.cancel()

    async def on_close(self, reason: BaseException | None) -> None:
        self._abandon()

    def can_hand_off(self) -> bool:
        """Its protocol is known and its codec could move (not a CURVE session, say)."""
        return super().can_hand_off() and self._codec is not None and codec_movable(self._codec)

    def handoff_state(self) -> dict[str, Any] | None:
        """Its protocol and codec state; None before the protocol is known,
        with requests in flight, or if the codec cannot move."""
        codec, protocol = self._codec, self.protocol
        if codec is None or protocol is None or self.in_flight:
            return None
        state = codec_handoff_state(codec)
        return None if state is None else {"protocol": protocol.protocol_name, "codec": state}

    def _abandon(self) -> None:
        self.closed = True
        self.listener.budget.release(self)
        # A partial frame the codec held goes now, not at the next collection.
        self._codec = self._loop = None
        for exchange in list(self._exchanges):
            exchange.abandon()
        self._exchanges.clear()
        for pool in self.upstream_pools.values():
            pool.close()
        self.upstream_pools.clear()

    async def _wait_in_flight(self, limit: int) -> None:
        while self.in_flight > limit:
            self._wake_at = limit
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _sniff(self) -> type[FrameSemantics] | None:
        # drain() may end the wait; the reader's frame timeout bounds it.
        with anyio.CancelScope() as self._read_scope:
            return await sniff_protocol(self.reader, self.listener.candidates)
        return None

    async def serve(self) -> None:
        limits = self.listener.config.limits
        # A handshake or first bytes, then every frame, must arrive within
        # frame_timeout (no slowloris); a connection with nothing in flight
        # may sit idle for idle_timeout, then ends as if the client closed.
        self.reader.set_timeouts(ReadTimeouts(limits.frame_timeout, limits.idle_timeout), busy=self._busy)
        self._max_in_flight = limits.max_in_flight  # a reload's limits are for connections accepted after it
        protocol = self.protocol
        adopted = self.context.handoff
        if adopted is not None:
            protocol = self.listener.protocol_named(adopted.get("protocol"))
            if protocol is None:
                log.warning("a handed-over connection spoke %r, which this listener does not", adopted.get("protocol"))
                return
            self.protocol = protocol
        if protocol is None:
            protocol = await self._sniff()
            self._read_scope = None
            if protocol is None:
                return
            self.protocol = protocol
        self.semantics = protocol.bound_semantics()
        if protocol.ordered:
            self._ordered = new_fifo()
        options = protocol.option_values(self.context.options, "listener")
        codec = self._codec = protocol.server_codec(options, limits.max_frame_size)
        # Every read, even one that completes no frame: the budget counts a
        # partial frame as it grows. A codec error waits for the answers
        # owed to the requests before it (below).
        loop = self.codec_loop(codec, last_words=False, empty_batches=True, flush=self.flush_now)
        loop.take_inline(self._batch)  # where the socket allows: each batch where its bytes arrive
        try:
            async for frames in loop:
                received = loop.received
                while self._left is not None or not self._batch(frames, received):
                    frames, received = await self._go_on()
        except ProtocolError as error:
            self._stats.decode_errors += 1
            # The requests before the bad bytes still get their answers,
            # then whatever the codec says about the bad bytes.
            with anyio.move_on_after(self.linger_timeout):
                await self._wait_in_flight(0)
            self.writer.write(codec.data_to_send())
            raise error  # not a bare raise: compiled, it lost the error across the await (SystemError)
        if loop.stopping:
            await self._wait_in_flight(0)  # a drain: the server's drain timeout bounds it
        else:
            # The client half-closed, is gone, or was idle too long: answers
            # arriving within the linger time still go out, the rest is
            # abandoned (on_close).
            with anyio.move_on_after(self.linger_timeout):
                await self._wait_in_flight(0)

    def _batch(self, frames: list[Any], received: int) -> bool:
        """One read batch (``received`` bytes, its complete ``frames``),
        without awaiting: from the task, or where its bytes arrived (see
        CodecLoop.take_inline). False: a wait must come first; the frames
        not begun are left for :meth:`_go_on`."""
        stats, writer = self._stats, self.writer
        resumed, self._resumed = self._resumed, False
        if not resumed:
            stats.bytes_in += received
            self._turn = None  # the room a wait found was for the read batch it held up
        if frames:
            now = self.listener.clock.now()  # once per batch
            semantics = self.semantics
            assert semantics is not None
            max_in_flight = self._max_in_flight
            outbox = self._outbox
            stats.requests += len(frames)
            outbox.begin()  # each upstream written to gets one send, at the end
            try:
                for index, frame in enumerate(frames):
                    full = self._request(semantics, frame, now)
                    if full is not None:
                        # Its cluster is at max_requests: this client is not
                        # read from until its turn comes (or the request's
                        # deadline passes).
                        self._held_back = (frame, full)
                        return self._stop(_ROOM, frames[index + 1 :], received)
                    if self.in_flight >= max_in_flight:  # the codec holds the rest meanwhile
                        return self._stop(_IN_FLIGHT, frames[index + 1 :], received)
                if writer.pending:
                    outbox.add(self)  # local replies, heartbeats: in the batch's sends
            finally:
                outbox.end()
        codec = self._codec
        assert codec is not None
        if self._holdings.after_read(self, received, codec.buffered, self.in_flight):
            return self._stop(_BUDGET, [], 0)  # past the budget: one read per connection at most
        if writer.pending >= writer.high_water:
            return self._stop(_FLUSH, [], 0)  # a client that does not read is not read from
        return True

    def _stop(self, wait: int, left: list[Any], received: int) -> bool:
        self._stats.requests -= len(left)  # counted when they are begun
        if self.writer.pending:
            self._outbox.add(self)  # replies made before the wait leave now, not after it
        self._wait_for, self._left, self._left_bytes = wait, left, received
        return False

    async def _go_on(self) -> tuple[list[Any], int]:
        """The wait that stopped :meth:`_batch`; then the frames it left, and
        the bytes read that the budget has yet to count."""
        wait, left = self._wait_for, self._left
        assert left is not None
        self._wait_for, self._left, self._resumed = 0, None, True
        max_in_flight = self._max_in_flight
        if wait == _ROOM:
            held_back = self._held_back
            assert held_back is not None
            self._held_back = None
            frame, (cluster, deadline, filtered) = held_back
            room = False
            try:
                with anyio.CancelScope() as self._room_scope:
                    room = await cluster.wait_for_room(deadline)
            finally:
                self._room_scope = None
            # The frame clock restarts at the next read: the proxy was slow.
            admission = "admitted" if room else "refused"
            semantics = self.semantics
            assert semantics is not None
            with self._outbox:
                self._request(semantics, frame, self.listener.clock.now(), admission, deadline, filtered)
            if self.in_flight >= max_in_flight:
                wait = _IN_FLIGHT
        if wait == _IN_FLIGHT:
            await self._wait_in_flight(max_in_flight - 1)
        elif wait == _BUDGET:
            await self.listener.budget.wait_to_grow()
        elif wait == _FLUSH:
            await self.writer.flush()
        return left, self._left_bytes

    def _busy(self) -> bool:
        return self.in_flight > 0

    # -- requests ---------------------------------------------------------------

    def _request(
        self,
        semantics: BoundSemantics,
        frame: Any,
        now: float,
        admission: str = "check",
        deadline: float | None = None,
        filtered: FilterRequest | None = None,
        slot: Slot | None = None,
    ) -> tuple[Cluster, float, FilterRequest | None] | None:
        """Answer, refuse or start one request, without awaiting.

        Returns ``(cluster, deadline, filtered)`` instead, with nothing
        done, when the route's cluster has no room under ``max_requests``
        (``admission`` ``check``, or ``filtered``: the request's filters
        ran already); the caller waits for room, then calls again with that
        deadline, the request's :class:`FilterRequest` and ``admitted``
        (room was found: start it) or ``refused`` (the deadline passed
        first: an overflow reply). ``slot``: the place the request holds
        already (its filters made it wait; see :meth:`_wait_for_filters`).
        """
        if admission == "check":
            self._streams += 1
            stream = self._streams
        else:
            stream = self._streams if filtered is None else filtered.stream
        if semantics.is_heartbeat(frame):
            if semantics.is_request(frame):
                reply = semantics.heartbeat_reply(frame)
                self._stats.bytes_out += len(reply)
                self.writer.write(reply)
            return None
        if not semantics.is_request(frame):
            log.debug("dropped a response frame from a client", extra={"stream": stream})
            return None
        oneway = semantics.is_oneway(frame)
        if self._expired:
            if not oneway:
                public = f"the proxy shut down first (drain timeout {self.listener.drain_timeout:g}s)"
                self._local_reply(frame, Failure.TIMEOUT, stream, filtered, slot, public)
            return None
        policy = self._policy
        chain = policy.filters
        if chain is not None and admission == "check":  # a listener without filters pays this test
            filtered = FilterRequest(frame, semantics, self.listener.name, self.context, stream, now)
            verdict = chain.run(filtered, policy.route_filters)
            if verdict is not None:
                if isinstance(verdict, LocalReply):
                    if not oneway:
                        failure, public, detail = verdict.failure, verdict.public, verdict.detail
                        self._local_reply(frame, failure, stream, filtered, None, public, detail)
                    return None
                self._wait_for_filters(semantics, filtered, verdict, oneway)
                return None
        chosen: Route | None = None
        try:
            if filtered is not None:  # the filters may have changed the attributes
                chosen = filtered.matched(policy.match)
                key = None
                if chosen is not None and chosen.hash_key is not None:
                    key = filtered.attributes.get(chosen.hash_key)
            else:
                attributes: Mapping[str, str] | None = None
                for route in policy.routes:
                    if route.matchers:
                        if attributes is None:
                            attributes = semantics.routing_attributes(frame)
                        if not route.matches(attributes):
                            continue
                    chosen = route
                    break
                key = None
                if chosen is not None and chosen.hash_key is not None:
                    if attributes is None:
                        attributes = semantics.routing_attributes(frame)
                    key = attributes.get(chosen.hash_key)
            # The request's own timeout is read from its content too (a dubbo
            # attachment): what cannot be read fails this request alone.
            own = semantics.timeout(frame) if deadline is None else None
        except ProtocolError as exc:
            if not oneway:  # what is wrong with the client's own request is the client's to know
                self._local_reply(frame, Failure.CODEC_ERROR, stream, filtered, slot, str(exc))
            return None
        except Exception:  # a plugin's bug: this request fails, not the connection
            log.exception("reading the routing attributes or the timeout failed", extra={"stream": stream})
            if not oneway:
                self._local_reply(frame, Failure.CODEC_ERROR, stream, filtered, slot)
            return None
        if chosen is None:
            if not oneway:
                self._local_reply(frame, Failure.NO_ROUTE, stream, filtered, slot)
            return None
        if deadline is None:
            timeout = chosen.timeout
            if own is not None and own < timeout:
                timeout = own
            deadline = now + timeout
        cluster = chosen.cluster
        if admission == "admitted":
            self._turn = cluster  # the rest of this batch may use the room there is
        elif not cluster.has_room(self._turn is cluster):
            if admission == "check" or admission == "filtered":
                return cluster, deadline, filtered
            cluster.overflows += 1
            if not oneway:
                detail = f"cluster {cluster.name}: max_requests reached, and stayed so until the request's deadline"
                self._local_reply(frame, Failure.OVERFLOW, stream, filtered, slot, "", detail)
            return None
        if filtered is None:
            exchange = Exchange(self, semantics, frame, chosen, key, deadline, oneway, now, stream, policy.observer)
        else:
            exchange = FilteredExchange(
                self, semantics, frame, chosen, key, deadline, oneway, now, stream, policy.observer, filtered
            )
        if not oneway:
            self._exchanges.add(exchange)
            if slot is None:
                self.in_flight += 1
                if self._ordered is not None:
                    self._ordered.append(exchange)
            elif self._ordered is not None:  # the exchange takes the place its filters held
                self._ordered[self._ordered.index(slot)] = exchange
            exchange.deadline_timer, exchange.deadline_slot = self._timers.call_at(deadline, exchange, 0)
        start_try(exchange, now)
        return None

    def _write_ordered(self) -> None:
        """Write the ready replies at the head of the client's order (here: compiled, once per answer)."""
        ordered = self._ordered
        assert ordered is not None
        writer = self.writer  # compiled, an alias of writer.write and a union's attribute are lookups by name
        written = 0
        while ordered:
            head = ordered[0]
            reply = head.reply if isinstance(head, Exchange) else head.reply  # noqa: RUF034 (narrowed)
            if reply is None:
                break
            writer.write(reply)
            ordered.popleft()
            written += 1
        if written:
            self.in_flight -= written
            self._woken(written)

    def _woken(self, released: int) -> None:
        """``released`` requests left flight: wake the reader if it waits,
        and give their share of bytes back to the buffer budget."""
        self._holdings.answered(self, released, self.in_flight)
        wake = self._wake
        if wake is not None and self.in_flight <= self._wake_at:
            # Once, when the reader can go on (a set() per answer was a call
            # by name, ~1,000 instructions compiled, all but one for nothing).
            self._wake = None
            wake.set()
        if not self.in_flight:
            self.reader.idle_from_now()

    def exchange_done(self, exchange: Exchange, data: Encoded) -> None:
        """An exchange of this connection ended with ``data`` for the client.

        In an ordered connection the exchange stays in flight until its
        reply is written (it may wait for earlier ones): held replies count
        against ``max_in_flight``, so they cannot pile up without bound.
        """
        if exchange.oneway:
            return
        self._exchanges.discard(exchange)
        if self.closed:
            return  # the client is gone: a late answer is dropped
        self._stats.bytes_out += encoded_size(data)
        if self._ordered is not None:
            exchange.reply = data
            self._write_ordered()
        else:
            self.in_flight -= 1
            self._woken(1)
            self.writer.write(data)
        self._outbox.add(self)
