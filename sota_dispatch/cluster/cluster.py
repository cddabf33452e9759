"""Clusters, endpoint pools and upstream connections: where requests go.

A cluster picks an endpoint with its load balancer (skipping endpoints in
connect-failure backoff and, for a retry, the ones already tried); the
endpoint's pool picks one of its connections or opens one. Connections
open lazily and are replaced when they fail. A multiplexed pool is shared
by every client connection (ids keep the answers apart); pipelined and
exclusive pools are one per client connection unless configured
``shared``, because answers matched by order alone would reach another
client if a backend ever answered once too often. Nothing here spawns a task per request: sending is a write into
the connection's buffer (one send per batch, by its flusher), and each
response is handed to its request by the connection's one reader task.

Three pool modes, from the protocol's hooks unless configured:
``multiplex`` (a few connections, many requests each, matched by a fresh
upstream id), ``pipeline`` (many requests per connection, answered in
order) and ``exclusive`` (one request per connection at a time).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream, TaskGroup

from ..config.model import HASH_BALANCERS, ClusterConfig
from ..errors import ProtocolError
from ..io.address import parse_address
from ..io.budget import BufferBudget
from ..io.outbox import Outbox
from ..io.reader import BufferedReader
from ..io.transport import input_queued
from ..protocol.codec import Failure, ProxyHooks
from ..protocol.dispatcher import ConnectionContext, Dispatcher
from .balancers import (
    Balancer,
    Endpoint,
    LeastRequest,
    LowestLatency,
    Maglev,
    ModuloHash,
    RandomBalancer,
    RingHash,
    SmoothWeightedRoundRobin,
    pick_priority,
)
from .health import BreakerState, ProtocolHealth
from .stats import ClusterStats

if TYPE_CHECKING:
    from ..proxy.exchange import Exchange
    from ..proxy.proxy import ProxyConnection

__all__ = ["Cluster", "Pool", "UpstreamConnection"]

log = logging.getLogger(__name__)

_BALANCERS: Mapping[str, type[Balancer]] = {
    "round_robin": SmoothWeightedRoundRobin,
    "random": RandomBalancer,
    "least_request": LeastRequest,
    "lowest_latency": LowestLatency,
    "ring_hash": RingHash,
    "maglev": Maglev,
    "modulo_hash": ModuloHash,
}


class Cluster:
    """A cluster at run time: balancer, endpoint health, one pool per
    endpoint and protocol (or per client connection, see :meth:`pool`).

    Passive health (connect backoff, endpoint breakers, outlier ejection)
    is kept per protocol spoken to the cluster (:meth:`health`); active
    health checks judge the endpoint as a whole.
    """

    def __init__(
        self,
        config: ClusterConfig,
        task_group: TaskGroup | None = None,
        *,
        outbox: Outbox | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        self.config = config
        #: The process's buffer budget, which upstream connections report to.
        self.budget = BufferBudget() if budget is None else budget
        #: Where upstream connections written to during a batch are noted.
        self.outbox = Outbox() if outbox is None else outbox
        self.name = config.name
        self.endpoints = tuple(Endpoint(e.address, e.weight, e.priority) for e in config.endpoints)
        self.balancer = _BALANCERS[config.lb](self.endpoints)
        self._fallback = SmoothWeightedRoundRobin(self.endpoints)  # a hash route without its key
        self._hashing = config.lb in HASH_BALANCERS
        #: Whether the balancer wants to hear of each try's start and end.
        self.tracks_load = isinstance(self.balancer, LeastRequest)
        self._tracks_latency = isinstance(self.balancer, LowestLatency)
        self._priorities = len({e.priority for e in self.endpoints}) > 1
        self._names = {e: e.address for e in self.endpoints}
        self._health: dict[str, ProtocolHealth[Endpoint]] = {}
        #: Shared pools, by endpoint and protocol.
        self._pools: dict[tuple[Endpoint, str], Pool] = {}
        #: Pools of one client connection each (see :meth:`pool`).
        self._client_pools: set[Pool] = set()
        self._shared: dict[str, bool] = {}
        #: Upstream connections open or opening, and requests queued for one
        #: (counted as they change: a sum over per-client pools would cost a
        #: walk of them all per queued request).
        self.open_connections = 0
        self.queued = 0
        self.task_group = task_group
        #: Envoy's thresholds, and what they are checked against.
        self.thresholds = config.circuit_breakers
        self.active_requests = 0
        #: Client connections waiting for room under ``max_requests``, in turn.
        self.waiting: deque[_Waiter] = deque()
        self.active_retries = 0
        self.overflows = 0
        self.failure_statuses = frozenset(config.failure_statuses)
        self.stats = ClusterStats()
        #: Endpoints failing their active health checks: no traffic.
        self.unhealthy: set[Endpoint] = set()
        #: Whether try outcomes matter (a breaker or outlier detection is on).
        self.judged = config.endpoint_breaker is not None or config.outlier_detection is not None

    # -- room under max_requests -------------------------------------------------

    def has_room(self, my_turn: bool = False) -> bool:
        """Whether a new request may start now: under ``max_requests``, and
        no client connection is waiting for its turn (unless ``my_turn``:
        the caller's connection was just let in, and takes what room there
        is for the rest of its read batch)."""
        return self.active_requests < self.thresholds.max_requests and (my_turn or not self.waiting)

    async def wait_for_room(self, deadline: float) -> bool:
        """Wait, in turn with other client connections, until a request may
        start (True; start it before the next await), or until ``deadline``
        (False).

        Envoy's ``max_requests`` guards the upstream; a client the proxy can
        simply stop reading from need not be refused: its connection waits
        here, unread, while the others take their turns.
        """
        waiter = _Waiter()
        self.waiting.append(waiter)
        try:
            with anyio.CancelScope(deadline=deadline):
                while self.waiting[0] is not waiter or self.active_requests >= self.thresholds.max_requests:
                    waiter.event = anyio.Event()
                    await waiter.event.wait()
                return True
            return False
        finally:
            self.waiting.remove(waiter)
            self.room_freed()

    def room_freed(self) -> None:
        """A request ended (or a waiter left): wake the next in turn if it fits."""
        if self.waiting and self.active_requests < self.thresholds.max_requests:
            self.waiting[0].event.set()

    def health(self, protocol: str) -> ProtocolHealth[Endpoint]:
        """The passive health of the endpoints for ``protocol``'s traffic."""
        health = self._health.get(protocol)
        if health is None:
            health = self._health[protocol] = ProtocolHealth(
                protocol,
                self._names,
                self.name,
                breaker=self.config.endpoint_breaker,
                outlier=self.config.outlier_detection,
            )
        return health

    @property
    def protocol_health(self) -> list[ProtocolHealth[Endpoint]]:
        """The passive health of each protocol that has sent traffic here."""
        return list(self._health.values())

    def pool(self, endpoint: Endpoint, hooks: ProxyHooks[Any], owner: ProxyConnection | None = None) -> Pool:
        """The pool that carries ``owner``'s requests to ``endpoint``: the
        shared one, or ``owner``'s own if this cluster does not share
        connections for the protocol."""
        key = (endpoint, hooks.name)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        shared = self._shared.get(hooks.name)
        if shared is None:
            shared = self._shared[hooks.name] = self.config.pool.resolved(hooks.pool_mode)[3]
        if shared or owner is None:
            pool = self._pools[key] = Pool(self, endpoint, hooks)
            return pool
        own = owner.upstream_pools
        pool = own.get((self, endpoint))
        if pool is None:
            pool = own[(self, endpoint)] = Pool(self, endpoint, hooks, owner=owner)
            self._client_pools.add(pool)
        return pool

    def pool_closed(self, pool: Pool) -> None:
        """A client connection's own pool is done (its client closed)."""
        self._client_pools.discard(pool)

    def close_an_idle_client_connection(self) -> bool:
        """Make room under ``max_connections`` for a client that has no
        upstream connection yet: close one that another client holds with
        nothing in flight. False if every one is busy.

        Idle clients must not pin the cluster's connections (1,024 idle
        clients would otherwise lock everyone else out); a busy one keeps
        its own. Runs only at the limit, so the walk costs nothing in the
        ordinary case.
        """
        for pool in self._client_pools:
            for connection in pool.connections:
                if connection.ready and not connection.load and not connection.writer.pending:
                    log.debug("cluster %s: closing an idle client's upstream connection to make room", self.name)
                    pool.connections.remove(connection)
                    self.open_connections -= 1  # counted free now: the close runs on its own
                    connection.retired = True
                    connection.ready = False
                    connection.close_soon()
                    return True
        return False

    @property
    def pools(self) -> list[Pool]:
        return [*self._pools.values(), *self._client_pools]

    # -- choosing an endpoint -------------------------------------------------

    def _unavailable(self, now: float, health: ProtocolHealth[Endpoint]) -> set[Endpoint] | dict[Endpoint, float]:
        """Endpoints not to pick now: failing active checks, or for this
        protocol in connect backoff, ejected, or behind an open breaker."""
        down = health.down
        if down:
            for endpoint, until in list(down.items()):
                if until <= now:
                    del down[endpoint]
        if not health.judged and not self.unhealthy:
            return down
        bad = set(down) | self.unhealthy
        for endpoint in self.endpoints:
            if health.unavailable(endpoint, now):
                bad.add(endpoint)
        return bad

    def pick(
        self, key: str | None, tried: list[Endpoint], now: float, health: ProtocolHealth[Endpoint]
    ) -> Endpoint | None:
        """The endpoint for a try of ``health``'s protocol: available, of the
        best priority level that has an available one, not tried yet if
        possible."""
        exclude = self._unavailable(now, health)
        if self._priorities:
            allowed = pick_priority(self.endpoints, [e for e in self.endpoints if e not in exclude])
            exclude = {e for e in self.endpoints if e not in allowed}
        balancer = self._fallback if self._hashing and key is None else self.balancer
        endpoint = balancer.pick(key, {*exclude, *tried}) if tried else None
        if endpoint is None:
            endpoint = balancer.pick(key, exclude)
        breakers = health.breakers
        if endpoint is not None and breakers is not None and not breakers[endpoint].allow(now):
            return None  # its half-open probes are taken
        return endpoint

    def describe(self) -> dict[str, Any]:
        """The cluster's state for the admin's ``/clusters``: each endpoint's
        best state over the protocols that send it traffic (it serves those
        it is healthy for), and each protocol's own under ``protocols``."""
        now = anyio.current_time()
        endpoints = []
        ranks = {"healthy": 0, "unreachable": 1, "ejected": 2}
        breaker_ranks = {"closed": 0, "half-open": 1, "open": 2}
        for endpoint in self.endpoints:
            by_protocol: dict[str, dict[str, str | None]] = {}
            for health in self._health.values():
                breakers = health.breakers
                by_protocol[health.protocol] = {
                    "health": health.state(endpoint, now),
                    "breaker": None if breakers is None else breakers[endpoint].state.value,
                }
            if endpoint in self.unhealthy:
                state = "unhealthy"
            else:
                healths = [p["health"] or "healthy" for p in by_protocol.values()]
                state = min(healths, key=ranks.__getitem__, default="healthy")
            breaker = None
            if self.config.endpoint_breaker is not None:
                states = [p["breaker"] or "closed" for p in by_protocol.values()]
                breaker = min(states, key=breaker_ranks.__getitem__, default=BreakerState.CLOSED.value)
            endpoints.append(
                {
                    "address": endpoint.address,
                    "weight": endpoint.weight,
                    "priority": endpoint.priority,
                    "health": state,
                    "breaker": breaker,
                    "in_flight": self.in_flight(endpoint),
                    "protocols": by_protocol,
                }
            )
        return {
            "lb": self.config.lb,
            "active_requests": self.active_requests,
            "waiting_clients": len(self.waiting),
            "connections": self.connection_count(),
            "pending_requests": self.pending_requests(),
            "outcomes": dict(self.stats.outcomes),
            "endpoints": endpoints,
        }

    def in_flight(self, endpoint: Endpoint) -> int:
        """Requests sent to ``endpoint`` or waiting for a connection to it
        (read from the pools, so the hot path keeps no extra count)."""
        return sum(
            len(pool.pending) + sum(c.load for c in pool.connections)
            for pool in self.pools
            if pool.endpoint == endpoint
        )

    def pending_requests(self) -> int:
        """Requests waiting for a connection (not those that gave up meanwhile)."""
        return sum(1 for pool in self.pools for exchange, attempt in pool.pending if exchange.live(attempt))

    def queued_requests(self) -> int:
        """Entries in the pools' queues, those that gave up included: an upper
        bound of :meth:`pending_requests`, kept as a count."""
        return self.queued

    def connection_count(self) -> int:
        """Upstream connections open or being opened, in every pool."""
        return self.open_connections

    def try_started(self, endpoint: Endpoint) -> None:
        """A try on ``endpoint`` began (callers skip this unless :attr:`tracks_load`)."""
        if self.tracks_load:
            self.balancer.started(endpoint)  # type: ignore[attr-defined]

    def try_ended(self, endpoint: Endpoint, latency: float | None) -> None:
        """A try on ``endpoint`` ended; ``latency`` only when it got a response."""
        if self.tracks_load:
            self.balancer.finished(endpoint)  # type: ignore[attr-defined]
            if latency is not None and self._tracks_latency:
                self.balancer.observe(endpoint, latency)  # type: ignore[attr-defined]

    # -- passive health -------------------------------------------------------

    def connect_failed(self, endpoint: Endpoint, protocol: str, error: BaseException) -> None:
        """Connecting to ``endpoint`` for ``protocol`` failed (TCP, or the
        protocol's handshake): no traffic of that protocol for a backoff."""
        self.stats.connect_failures += 1
        failures, backoff = self.health(protocol).connect_failed(endpoint, anyio.current_time())
        level = logging.WARNING if failures == 1 else logging.DEBUG
        log.log(
            level,
            "cluster %s: %s unreachable for %s (%s); no %s traffic for %.2fs",
            self.name,
            endpoint.address,
            protocol,
            error,
            protocol,
            backoff,
        )

    def connected(self, endpoint: Endpoint, protocol: str) -> None:
        if self.health(protocol).connected(endpoint):
            log.info("cluster %s: %s reachable again for %s", self.name, endpoint.address, protocol)


class _Waiter:
    """One client connection's place in a cluster's queue for room."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class Pool:
    """The connections of one cluster to one endpoint, for one protocol, and
    (``owner``) for one client connection only."""

    def __init__(
        self, cluster: Cluster, endpoint: Endpoint, hooks: ProxyHooks[Any], *, owner: ProxyConnection | None = None
    ) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.hooks = hooks
        self.owner = owner
        self.closed = False
        self.mode, self.max_connections, self.max_requests, _ = cluster.config.pool.resolved(hooks.pool_mode)
        if self.mode == "multiplex":  # never more in flight than there are ids
            self.max_requests = min(self.max_requests, (1 << hooks.id_bits) - 2)
        self.max_pending = cluster.config.pool.max_pending
        self.connections: list[UpstreamConnection] = []
        self.connecting = 0
        #: Requests waiting for a connection: (exchange, its try number).
        self.pending: deque[tuple[Exchange, int]] = deque()
        self.connections_opened = 0

    def submit(self, exchange: Exchange) -> None:
        """Send ``exchange`` now, or queue it for a connection, or fail it
        with an overflow reply."""
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
                stream = await anyio.connect_tcp(host, port)
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
        self.cluster.connect_failed(self.endpoint, self.hooks.name, error)
        waiting, self.pending = self.pending, deque()
        self.cluster.queued -= len(waiting)
        for exchange, attempt in waiting:
            if exchange.live(attempt):
                exchange.try_failed("connect_failure", Failure.NO_HEALTHY_UPSTREAM, f"{self.endpoint.address}: {error}")

    def ready(self, connection: UpstreamConnection) -> None:
        """``connection`` finished its handshake: serve the queue."""
        self.cluster.connected(self.endpoint, self.hooks.name)
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


class UpstreamConnection(Dispatcher):
    """One connection to an endpoint, client role, carrying many requests."""

    linger_timeout = 0.5

    def __init__(self, stream: ByteStream, *, pool: Pool) -> None:
        config = pool.cluster.config
        context = ConnectionContext.for_stream(stream, protocol=pool.hooks.name, role="client", options=config.options)
        super().__init__(stream, context)
        # This reader must never wait on a send before reading: an upstream
        # busy writing answers to us while we wait to write requests to it
        # would deadlock both (every client's requests with them). Requests
        # leave through the flusher task instead.
        self.reader = BufferedReader(stream, read_size=self.read_size)
        self.pool = pool
        self.hooks = pool.hooks
        self.codec = pool.hooks.upstream_codec(config.options, config.max_frame_size)
        #: The proxy's batch collector (written per request: one lookup, here).
        self.outbox = pool.cluster.outbox
        self.multiplexed = pool.mode == "multiplex"
        self.ready = False
        self.was_ready = False
        #: Closed by its cluster to make room (see Cluster.close_an_idle_client_connection).
        self.retired = False
        #: Requests sent and not yet answered (abandoned pipeline slots included).
        self.load = 0
        self.in_flight: dict[int, tuple[Exchange, int]] = {}
        self.in_order: deque[tuple[Exchange, int]] = deque()
        self.unmatched = 0
        self._held = 0
        self._read_ahead = input_queued(stream)
        self._id_mask = (1 << pool.hooks.id_bits) - 1
        self._next_id = 1

    def _allocate_id(self) -> int:
        in_flight = self.in_flight
        upstream_id = self._next_id
        while upstream_id in in_flight or upstream_id == 0:
            upstream_id = (upstream_id + 1) & self._id_mask
        self._next_id = (upstream_id + 1) & self._id_mask
        return upstream_id

    def send(self, exchange: Exchange) -> None:
        """Write the request (it leaves with this batch's flush)."""
        attempt = exchange.attempt
        if self.multiplexed:
            upstream_id = self._allocate_id()
            data = self.hooks.encode_request(exchange.frame, upstream_id)
            if not exchange.oneway:
                self.in_flight[upstream_id] = (exchange, attempt)
                exchange.upstream_id = upstream_id
        else:
            data = self.hooks.encode_request(exchange.frame, 0)
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

    def forget(self, exchange: Exchange, *, stuck: bool = False) -> None:
        """Stop waiting for ``exchange``'s answer (timeout, client gone): a
        late answer is then dropped.

        A pipelined or exclusive slot cannot be given up: the answers come
        in order. If the upstream is ``stuck`` (it did not answer in time),
        the connection is closed, as Envoy and MOSN do for HTTP/1 and
        ping-pong pools, so it cannot hold every later request hostage;
        the requests behind it get a reset (retried when allowed).
        """
        if self.multiplexed:
            entry = self.in_flight.get(exchange.upstream_id)
            if entry is not None and entry[0] is exchange:
                del self.in_flight[exchange.upstream_id]
                self.load -= 1
                if self.pool.pending:
                    self.pool.drain_queue()
        elif stuck and self.ready:
            self.ready = False  # no new requests on it
            log.debug("conn %d: upstream gave no answer in time; closing it", self.context.connection_id)
            self.close_soon()

    async def serve(self) -> None:
        codec, reader, writer = self.codec, self.reader, self.writer
        frames: list[Any] = []
        error: BaseException | None = None
        try:
            writer.write(codec.data_to_send())
            try:
                with anyio.fail_after(self.pool.cluster.config.connect_timeout):
                    while not codec.ready:
                        await writer.flush()
                        frames = codec.feed(await reader.read_some())
                        writer.write(codec.data_to_send())
            except TimeoutError:
                raise ProtocolError("no handshake within the connect timeout") from None
            self.ready = self.was_ready = True
            self.pool.ready(self)
            outbox = self.outbox
            if frames:
                with outbox:
                    self._responses(frames)
            budget = self.pool.cluster.budget
            while True:
                frames = codec.feed(await reader.read_some())
                out = codec.data_to_send()
                if out:
                    writer.write(out)
                if frames:
                    with outbox:  # the clients answered leave with one send each, from here
                        self._responses(frames)
                codec.check()
                held = codec.buffered if self._read_ahead is None else codec.buffered + self._read_ahead()
                if held != self._held:  # what the process holds of answers counts in its budget
                    self._held = held
                    budget.hold(self, held, exempt=True)  # counted, never refused or shed: it serves many
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._lost(error)

    def _responses(self, frames: list[Any]) -> None:
        hooks = self.hooks
        now = anyio.current_time()
        for response in frames:
            if hooks.is_heartbeat(response):
                if hooks.is_request(response):
                    self.writer.write(hooks.heartbeat_reply(response))
                    self.outbox.add(self)
                continue
            if self.multiplexed:
                upstream_id = hooks.response_id(response)
                entry = None if upstream_id is None else self.in_flight.pop(upstream_id, None)
                if entry is None:
                    self.unmatched += 1  # e.g. a late answer to a request given up on
                    continue
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
                    log.exception("conn %d: handing an answer to its request failed", self.context.connection_id)
                    exchange.abandon()
        if self.pool.pending:
            self.pool.drain_queue()

    def _lost(self, error: BaseException | None) -> None:
        self.ready = False
        self.pool.cluster.budget.release(self)
        self.pool.lost(self, error)
        entries = [*self.in_flight.values(), *self.in_order]
        self.in_flight.clear()
        self.in_order.clear()
        self.load = 0
        for exchange, attempt in entries:
            if exchange.live(attempt):
                exchange.upstream = None
                exchange.try_failed(
                    "reset", Failure.UPSTREAM_RESET, f"{self.pool.endpoint.address} closed the connection"
                )
