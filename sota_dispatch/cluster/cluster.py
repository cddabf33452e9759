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

Three pool modes, from the protocol's class unless configured:
``multiplex`` (a few connections, many requests each, matched by a fresh
upstream id), ``pipeline`` (many requests per connection, answered in
order) and ``exclusive`` (one request per connection at a time).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..config.model import HASH_BALANCERS, ClusterConfig, EndpointConfig
from ..errors import describe_os_error
from ..io.budget import BufferBudget
from ..io.clock import SYSTEM_CLOCK, Clock
from ..io.outbox import Outbox
from ..io.tls import ClientTLS
from ..protocol.semantics import BoundSemantics
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
from .pool import Pool
from .request import PoolOwner
from .stats import ClusterStats, EndpointStats

__all__ = ["Cluster"]

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
        clock: Clock = SYSTEM_CLOCK,
        tls: ClientTLS | None = None,
    ) -> None:
        self.config = config
        #: TLS to the endpoints (made from ``config.tls`` unless given, as
        #: the proxy does to reload it): None for plaintext.
        self.tls = tls if tls is not None or config.tls is None else config.tls.client_tls()
        #: What its breakers, ejections, backoffs and health checks run on.
        self.clock = clock
        #: The process's buffer budget, which upstream connections report to.
        self.budget = BufferBudget() if budget is None else budget
        #: Where upstream connections written to during a batch are noted.
        self.outbox = Outbox() if outbox is None else outbox
        self.name = config.name
        self._hashing = config.lb in HASH_BALANCERS
        #: Whether the balancer wants to hear of each try's start and end.
        self.tracks_load = issubclass(_BALANCERS[config.lb], LeastRequest)
        self._tracks_latency = issubclass(_BALANCERS[config.lb], LowestLatency)
        self._health: dict[str, ProtocolHealth[Endpoint]] = {}
        #: The protocol asked for last and its health: a cluster hears one
        #: protocol almost always, and the dict's get cost ~130 instructions
        #: per request compiled (the name's hash, a lookup).
        self._last_protocol = ""
        self._last_health: ProtocolHealth[Endpoint] | None = None
        self.endpoints: tuple[Endpoint, ...] = ()
        self.balancer: Balancer
        self._fallback: Balancer
        self._use(tuple(Endpoint(e.address, e.weight, e.priority) for e in config.endpoints))
        #: What keeps the endpoints up to date while the proxy runs (None:
        #: the config's are all there is), for the admin.
        self.discovery: Any = None
        #: Shared pools, by endpoint and protocol.
        self._pools: dict[tuple[Endpoint, str], Pool] = {}
        #: Pools of one client connection each (see :meth:`pool`).
        self._client_pools: set[Pool] = set()
        self._shared: dict[str, bool] = {}
        #: The shared pool :meth:`pool` returned last, and its protocol's
        #: name: the next request most likely goes there too.
        self._last_pool: Pool | None = None
        self._last_name = ""
        #: Upstream connections open or opening, and requests queued for one
        #: (counted as they change: a sum over per-client pools would cost a
        #: walk of them all per queued request).
        self.open_connections = 0
        self.queued = 0
        self.task_group = task_group
        #: Envoy's thresholds, and what they are checked against.
        self.thresholds = config.circuit_breakers
        #: ``thresholds.max_requests``, read per request (a field here).
        self.max_requests = self.thresholds.max_requests
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
        #: Replaced by a reload: serves what it has, takes nothing new.
        self.retired = False

    # -- the endpoint set ------------------------------------------------------

    def _use(self, endpoints: tuple[Endpoint, ...]) -> None:
        """Balance over ``endpoints`` from now on (empty: every pick fails)."""
        self.endpoints = endpoints
        if endpoints:
            balancer = _BALANCERS[self.config.lb](endpoints)
            fallback = SmoothWeightedRoundRobin(endpoints)  # a hash route without its key
            old: Balancer | None = getattr(self, "balancer", None)
            if old is not None:
                balancer.carry_over(old)
                fallback.carry_over(self._fallback)
            self.balancer, self._fallback = balancer, fallback
        self._priorities = len({e.priority for e in endpoints}) > 1
        #: The endpoint, when there is only one (see :meth:`pick`).
        self._single = endpoints[0] if len(endpoints) == 1 else None
        self._names = {e: e.address for e in endpoints}
        # By address: an endpoint whose weight changed keeps its counts.
        kept: dict[str, EndpointStats] = getattr(self, "endpoint_stats", {})
        #: Each endpoint's counters (a departed endpoint's go with it).
        self.endpoint_stats = {e.address: kept.get(e.address) or EndpointStats() for e in endpoints}
        for health in self._health.values():
            health.set_endpoints(self._names)

    def set_endpoints(self, configs: Sequence[EndpointConfig]) -> bool:
        """Take a new endpoint set (a reload, ZooKeeper, a control plane);
        False if it is the same.

        Endpoints that stay keep their connections and what passive health
        learnt of them. A departed endpoint's requests in flight finish on
        its connections, which then close (:meth:`Pool.retire`); no new
        request goes there. An endpoint whose weight or priority changed
        counts as a new one.
        """
        endpoints = tuple(Endpoint(e.address, e.weight, e.priority) for e in configs)
        if endpoints == self.endpoints:
            return False
        staying = set(endpoints)
        self._use(endpoints)
        self.unhealthy &= staying
        for key, pool in list(self._pools.items()):
            if key[0] not in staying:
                del self._pools[key]
                pool.retire()
        for pool in list(self._client_pools):
            if pool.endpoint not in staying:
                pool.retire()
        return True

    def retire(self) -> None:
        """A reload replaced or removed this cluster: requests already
        routed here finish; every connection closes once idle."""
        self.retired = True
        for pool in self.pools:
            pool.retire()
        self._pools.clear()

    # -- room under max_requests -------------------------------------------------

    def has_room(self, my_turn: bool = False) -> bool:
        """Whether a new request may start now: under ``max_requests``, and
        no client connection is waiting for its turn (unless ``my_turn``:
        the caller's connection was just let in, and takes what room there
        is for the rest of its read batch)."""
        return self.active_requests < self.max_requests and (my_turn or not self.waiting)

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
            clock = self.clock
            while self.waiting[0] is not waiter or self.active_requests >= self.max_requests:
                if clock.now() >= deadline:
                    return False
                waiter.event = anyio.Event()
                await clock.wait(waiter.event, deadline)
            return True
        finally:
            self.waiting.remove(waiter)
            self.room_freed()

    def room_freed(self) -> None:
        """A request ended (or a waiter left): wake the next in turn if it fits."""
        if self.waiting and self.active_requests < self.max_requests:
            self.waiting[0].event.set()

    def health(self, protocol: str) -> ProtocolHealth[Endpoint]:
        """The passive health of the endpoints for ``protocol``'s traffic."""
        health = self._last_health
        if protocol is self._last_protocol and health is not None:
            return health
        health = self._health.get(protocol)
        if health is None:
            health = self._health[protocol] = ProtocolHealth(
                protocol,
                self._names,
                self.name,
                breaker=self.config.endpoint_breaker,
                outlier=self.config.outlier_detection,
            )
        self._last_protocol, self._last_health = protocol, health
        return health

    @property
    def protocol_health(self) -> list[ProtocolHealth[Endpoint]]:
        """The passive health of each protocol that has sent traffic here."""
        return list(self._health.values())

    def pool(self, endpoint: Endpoint, semantics: BoundSemantics, owner: PoolOwner | None = None) -> Pool:
        """The pool that carries ``owner``'s requests to ``endpoint`` in the
        protocol of ``semantics``: the shared one, or ``owner``'s own if this
        cluster does not share connections for the protocol."""
        name = semantics.protocol_name  # per request: no class attribute lookup
        last = self._last_pool
        # Identity, not equality: hashing an Endpoint is a Python call. The
        # last pool serves again if it is shared or ``owner``'s own (a
        # client's requests come in batches). A retiring pool (its endpoint
        # left, the cluster was replaced) never comes from here, so the
        # dictionaries decide again.
        if (
            last is not None
            and last.endpoint is endpoint
            and name is self._last_name
            and (last.owner is None or last.owner is owner)
            and not last.retiring
        ):
            return last
        protocol = semantics.protocol
        shared = self._shared.get(name)
        if shared is None:
            shared = self._shared[name] = self.config.pool.resolved(protocol.pool_mode)[3]
        if shared or owner is None:
            key = (endpoint, name)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = Pool(self, endpoint, protocol)
        else:
            own = owner.upstream_pools
            pool = own.get((self, endpoint))
            if pool is None or pool.retiring:
                pool = own[(self, endpoint)] = Pool(self, endpoint, protocol, owner=owner)
                self._client_pools.add(pool)
        if self.retired:
            pool.retiring = True  # a retry of a request from before the reload: served, then closed
        self._last_pool, self._last_name = pool, name
        return pool

    def pool_closed(self, pool: Pool) -> None:
        """A client connection's own pool is done (its client closed)."""
        self._client_pools.discard(pool)
        if self._last_pool is pool:
            self._last_pool = None  # nor kept: it would keep its client's objects

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
        if not tried and not health.down and not health.judged and not self.unhealthy:
            # Nothing to exclude (the common case): no set to build, no
            # walk over the endpoints, and with one endpoint no balancer.
            single = self._single
            if single is not None:
                return single
            if not self._priorities:
                if not self.endpoints:
                    return None
                return (self._fallback if self._hashing and key is None else self.balancer).pick(key, ())
        if not self.endpoints:
            return None
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
        now = self.clock.now()
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
                    "stats": self.endpoint_stats[endpoint.address].describe(),
                    "protocols": by_protocol,
                }
            )
        described = {
            "lb": self.config.lb,
            "active_requests": self.active_requests,
            "waiting_clients": len(self.waiting),
            "connections": self.connection_count(),
            "pending_requests": self.pending_requests(),
            "outcomes": dict(self.stats.outcomes),
            "endpoints": endpoints,
        }
        if self.discovery is not None:
            described["discovery"] = self.discovery.describe()
        return described

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
        return sum(1 for pool in self.pools for request, attempt in pool.pending if request.live(attempt))

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
        failures, backoff = self.health(protocol).connect_failed(endpoint, self.clock.now())
        level = logging.WARNING if failures == 1 else logging.DEBUG
        log.log(
            level,
            "cluster %s: %s unreachable for %s (%s); no %s traffic for %.2fs",
            self.name,
            endpoint.address,
            protocol,
            describe_os_error(error),
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
