"""The proxy's configuration: listeners, routes, clusters, as immutable values.

Names follow Envoy and MOSN so their users feel at home. The values are
frozen attrs classes, read from YAML or any mapping by :mod:`.parse` (every
problem a :class:`~sota_dispatch.ConfigError` naming its path). Frozen
values can be swapped whole at run time later (an xDS client), which is why
nothing here holds state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias, get_args

import attrs

from ..io.budget import DEFAULT_BUFFER_BUDGET, DEFAULT_LARGE_FRAME
from ..protocol.codec import PoolMode

__all__ = [
    "BALANCERS",
    "DEFAULT_ROUTE_TIMEOUT",
    "HASH_BALANCERS",
    "MAX_WEIGHT",
    "RETRY_ON",
    "AdminConfig",
    "BreakerConfig",
    "ClusterConfig",
    "EndpointConfig",
    "HealthCheckConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MatchConfig",
    "OutlierConfig",
    "OverloadConfig",
    "PoolConfig",
    "ProxyConfig",
    "RetryConfig",
    "RouteConfig",
    "ThresholdsConfig",
]

#: Load-balancer names (Envoy's ``lb_policy`` values, lower case).
BalancerName: TypeAlias = Literal[
    "round_robin", "random", "least_request", "ring_hash", "maglev", "modulo_hash", "lowest_latency"
]

BALANCERS: tuple[str, ...] = get_args(BalancerName)

#: Balancers that hash a routing attribute (a route to them needs ``hash_key``).
HASH_BALANCERS = frozenset({"ring_hash", "maglev", "modulo_hash"})

#: What a retry policy may retry on (``retry_on``, Envoy's name).
RETRY_ON = ("connect_failure", "reset", "per_try_timeout", "status")

_POOL_MODES: tuple[str, ...] = get_args(PoolMode)

#: Largest endpoint weight: a ring hash holds 160 points per unit of weight.
MAX_WEIGHT = 1000

#: A route's timeout unless it sets one (Envoy's is 15 s too).
DEFAULT_ROUTE_TIMEOUT = 15.0


@attrs.frozen
class BreakerConfig:
    """sota-mesh's per-endpoint circuit breaker (its defaults)."""

    consecutive_failures: int = 5
    failure_ratio: float = 0.6
    min_requests: int = 3
    interval: float = 10.0
    open_timeout: float = 5.0
    half_open_requests: int = 1


@attrs.frozen
class OutlierConfig:
    """Envoy's consecutive-failure outlier detection."""

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0


@attrs.frozen
class EndpointConfig:
    """One upstream address; ``priority`` 0 is primary, higher is standby."""

    address: str
    weight: int = 1
    priority: int = 0


@attrs.frozen
class PoolConfig:
    """How a cluster's connections to one endpoint carry requests.

    ``None`` means the protocol's default: its pool mode; shared by every
    client for ``multiplex`` (ids keep the answers apart), one pool per
    client connection for ``pipeline`` and ``exclusive`` (answers are
    matched by order alone, so a backend that answers once too often must
    not be able to hand one client's answer to another); connections per
    endpoint (per client when not shared): 1 for ``multiplex``, 2 for a
    shared ``pipeline``, 64 for a shared ``exclusive``, 1 per client;
    requests per connection 10,000 / 1,000 / 1.
    """

    mode: PoolMode | None = None
    connections: int | None = None
    max_requests: int | None = None
    #: Requests waiting for a connection, per endpoint; beyond: overflow.
    max_pending: int = 1024
    #: Whether client connections share the upstream connections (None: the
    #: mode's default, shared only for ``multiplex``).
    shared: bool | None = None

    def resolved(self, default_mode: PoolMode) -> tuple[PoolMode, int, int, bool]:
        """``(mode, connections, max_requests, shared)`` with the defaults filled in."""
        mode = self.mode or default_mode
        shared = self.shared if self.shared is not None else mode == "multiplex"
        connections, max_requests = {"multiplex": (1, 10_000), "pipeline": (2, 1_000), "exclusive": (64, 1)}[mode]
        if not shared:
            connections = 1  # a client's own: as many as the client itself opened
        if mode == "exclusive":
            return mode, self.connections or connections, 1, shared
        return mode, self.connections or connections, self.max_requests or max_requests, shared


@attrs.frozen
class ThresholdsConfig:
    """Envoy's circuit-breaker thresholds for one cluster: beyond them a
    request gets the protocol's overflow reply at once (no retry beyond
    ``max_retries`` retries at a time)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@attrs.frozen
class HealthCheckConfig:
    """Active health checks of a cluster's endpoints.

    ``protocol`` checks connect, complete the protocol's handshake and send
    its probe (a bolt or dubbo heartbeat, the ``send`` line for
    simple_line); ``tcp`` checks only connect.
    """

    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    kind: Literal["tcp", "protocol"] = "protocol"
    send: str | None = None


@attrs.frozen
class ClusterConfig:
    """A named set of endpoints, a load balancer and a connection pool."""

    name: str
    endpoints: tuple[EndpointConfig, ...]
    lb: BalancerName = "round_robin"
    pool: PoolConfig = PoolConfig()
    connect_timeout: float = 1.0
    #: Largest response frame accepted from these endpoints, bytes.
    max_frame_size: int = 16 * 1024 * 1024
    #: Protocol options for the upstream connections (e.g. ZMTP PLAIN).
    options: Mapping[str, str] = attrs.field(factory=dict)
    circuit_breakers: ThresholdsConfig = ThresholdsConfig()
    #: sota-mesh's per-endpoint breaker; None: off.
    endpoint_breaker: BreakerConfig | None = None
    outlier_detection: OutlierConfig | None = None
    #: Response statuses that count as the endpoint's failure (for the
    #: breaker and outlier detection), besides resets and timeouts.
    failure_statuses: tuple[int, ...] = ()
    health_check: HealthCheckConfig | None = None


@attrs.frozen
class MatchConfig:
    """One condition on a routing attribute; exactly one test is set."""

    attribute: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None


@attrs.frozen
class RetryConfig:
    """When a failed try is sent again, to another endpoint when possible.

    ``attempts`` counts every try, the first included. A connect failure is
    always safe to retry (nothing was sent); everything else is retried
    only for a route marked ``idempotent``, never for a oneway request, and
    never after the route's overall timeout.
    """

    attempts: int = 3
    retry_on: tuple[str, ...] = ("connect_failure",)
    #: Protocol statuses retried when ``retry_on`` has ``status``.
    statuses: tuple[int, ...] = ()
    idempotent: bool = False


@attrs.frozen
class RouteConfig:
    """Where matching requests go; every condition must hold (none: catch-all)."""

    cluster: str
    match: tuple[MatchConfig, ...] = ()
    #: Overall time for the request, retries included; the request's own
    #: timeout wins when the protocol carries one and it is shorter.
    timeout: float = DEFAULT_ROUTE_TIMEOUT
    per_try_timeout: float | None = None
    retry: RetryConfig = RetryConfig()
    #: The routing attribute hash balancers hash.
    hash_key: str | None = None


@attrs.frozen
class LimitsConfig:
    """Bounds per listener and per client connection."""

    max_frame_size: int = 16 * 1024 * 1024
    #: Requests in flight per client connection; reading pauses at it. Well
    #: below a cluster's ``max_requests`` (1024), so that one deep client
    #: cannot take a whole cluster.
    max_in_flight: int = 256
    #: Client connections at once; more are closed as soon as accepted.
    max_connections: int | None = 10_000
    #: Seconds a connection may sit with nothing in flight and no input.
    idle_timeout: float | None = 3600.0
    #: Seconds from a frame's first byte (or, for the first frame, from the
    #: connect) to its last: a client that sends nothing, or dribbles, is closed.
    frame_timeout: float | None = 30.0


@attrs.frozen
class ListenerConfig:
    """An address, the protocol spoken there (or ``auto``) and its routes."""

    name: str
    address: str
    protocol: str
    routes: tuple[RouteConfig, ...]
    limits: LimitsConfig = LimitsConfig()
    #: Protocol options for the client connections.
    options: Mapping[str, str] = attrs.field(factory=dict)
    #: An access log line per request in this ``str.format`` format (see
    #: ``sota_dispatch.logs.ACCESS_LOG_FORMAT``); None: no access log.
    access_log: str | None = None


@attrs.frozen
class AdminConfig:
    """The admin HTTP endpoint; loopback only unless ``allow_remote``."""

    address: str = "127.0.0.1:9901"
    allow_remote: bool = False


@attrs.frozen
class OverloadConfig:
    """The process-wide buffer budget (see :mod:`sota_dispatch.io.budget`):
    bytes of partial frames all connections may hold together, and the size
    from which a frame counts as large (refused when begun under pressure)."""

    buffer_budget: int = DEFAULT_BUFFER_BUDGET
    large_frame: int = DEFAULT_LARGE_FRAME


@attrs.frozen
class ProxyConfig:
    """The whole proxy: several listeners and protocols in one process."""

    listeners: tuple[ListenerConfig, ...]
    clusters: tuple[ClusterConfig, ...]
    #: Seconds in-flight requests get to finish on shutdown (then each
    #: request still in flight gets a timeout reply). Default: the longest
    #: route timeout plus one second, so that a shutdown never cuts short a
    #: request that would have been answered, or timed out, on its own.
    drain_timeout: float = attrs.field()
    admin: AdminConfig | None = None
    overload: OverloadConfig = OverloadConfig()

    @drain_timeout.default
    def _longest_route(self) -> float:
        timeouts = [route.timeout for listener in self.listeners for route in listener.routes]
        return max(timeouts, default=DEFAULT_ROUTE_TIMEOUT) + 1.0

    def cluster(self, name: str) -> ClusterConfig:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)
