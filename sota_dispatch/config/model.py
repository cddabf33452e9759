"""The proxy's configuration: listeners, routes, clusters, as immutable values.

Names follow Envoy and MOSN so their users feel at home. The values are
frozen attrs classes, hashable (tuples, not lists; a
:class:`~.frozen.FrozenMap`, not a dict) and checked when they are built:
each field's rule is its attrs validator (:class:`~.values.Rule`), the
rules across the fields of one object are checked after them, and those
across objects (a route naming a cluster) by :class:`ProxyConfig`; every
problem is a :class:`~sota_dispatch.ConfigError` naming its field. The
parser (:mod:`.parse`) reads YAML or any mapping with the same rules, and
the defaults are the ones written here. Frozen values can be swapped whole
at run time later (an xDS client), which is why nothing here holds state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TypeAlias, get_args

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from ..io.address import is_loopback, parse_address
from ..io.budget import DEFAULT_BUFFER_BUDGET, DEFAULT_LARGE_FRAME
from ..protocol.codec import PoolMode
from ..protocol.server import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUTS
from .discovery import XdsConfig, ZooKeeperConfig
from .frozen import FrozenMap
from .health import HEALTH_CHECK_KINDS, BreakerConfig, HealthCheckConfig, OutlierConfig, ThresholdsConfig
from .tls import ListenerTlsConfig, UpstreamTlsConfig
from .tracing import TracingConfig

__all__ = [
    "BALANCERS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_ROUTE_TIMEOUT",
    "HASH_BALANCERS",
    "HEALTH_CHECK_KINDS",
    "MATCH_TESTS",
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
    "TracingConfig",
    "reference_problems",
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

#: The tests a route's match may make (exactly one each).
MATCH_TESTS = ("exact", "prefix", "regex", "present")

#: Largest endpoint weight: a ring hash holds 160 points per unit of weight.
MAX_WEIGHT = 1000

#: A route's timeout unless it sets one (Envoy's is 15 s too).
DEFAULT_ROUTE_TIMEOUT = 15.0

#: Largest frame a listener's clients, or a cluster's endpoints, may send.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

# The rules of the fields (see values.Rule), named once where shared.
_COUNT = cv.Rule(cv.integer)  # >= 1
_MAYBE_COUNT = cv.Rule(cv.integer, optional=True)
_AT_LEAST_0 = cv.Rule(cv.integer, minimum=0)
_SECONDS = cv.Rule(cv.duration, kind="seconds (a number)")
_MAYBE_SECONDS = cv.Rule(cv.duration, optional=True, kind="seconds (a number)")
_NAME = cv.Rule(cv.string)
_FLAG = cv.Rule(cv.boolean)
_OPTIONS = cv.Rule(cv.options, kind="a mapping of option names to strings")
_STATUSES = cv.Rule(cv.items, parse=cv.Rule(cv.integer, minimum=0).check)


def _frozen_filter_options(value: Mapping[str, Mapping[str, str]]) -> FrozenMap[str, FrozenMap[str, str]]:
    """The converter of ``per_filter_config``: dicts given in Python become FrozenMaps."""
    if isinstance(value, FrozenMap) or not isinstance(value, Mapping):
        return value
    return FrozenMap({name: _frozen_options(options) for name, options in value.items()})


def _frozen_options(value: Mapping[str, str]) -> FrozenMap[str, str]:
    """The converter of ``options``: a dict given in Python becomes a FrozenMap."""
    if isinstance(value, FrozenMap) or not isinstance(value, Mapping):
        return value  # a FrozenMap, or what the rule refuses
    return FrozenMap(value)


@attrs.frozen
class EndpointConfig:
    """One upstream address; ``priority`` 0 is primary, higher is standby."""

    address: str = attrs.field(validator=cv.Rule(cv.address, endpoint=True))
    weight: int = attrs.field(default=1, validator=cv.Rule(cv.integer, maximum=MAX_WEIGHT))
    priority: int = attrs.field(default=0, validator=_AT_LEAST_0)


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

    mode: PoolMode | None = attrs.field(default=None, validator=cv.Rule(cv.choice, choices=_POOL_MODES, optional=True))
    connections: int | None = attrs.field(default=None, validator=_MAYBE_COUNT)
    max_requests: int | None = attrs.field(default=None, validator=_MAYBE_COUNT)
    #: Requests waiting for a connection, per endpoint; beyond: overflow.
    max_pending: int = attrs.field(default=1024, validator=_COUNT)
    #: Whether client connections share the upstream connections (None: the
    #: mode's default, shared only for ``multiplex``).
    shared: bool | None = attrs.field(default=None, validator=cv.Rule(cv.boolean, optional=True))

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
class ClusterConfig:
    """A named set of endpoints, a load balancer and a connection pool."""

    name: str = attrs.field(validator=_NAME)
    #: Empty only with ``zookeeper`` or ``eds`` (they serve until the first answer).
    endpoints: tuple[EndpointConfig, ...] = attrs.field(validator=cv.Rule(cv.items, parse=cv.instance(EndpointConfig)))
    lb: BalancerName = attrs.field(default="round_robin", validator=cv.Rule(cv.choice, choices=BALANCERS))
    pool: PoolConfig = attrs.field(default=PoolConfig(), validator=cv.Rule(cv.instance(PoolConfig)))
    connect_timeout: float = attrs.field(default=1.0, validator=_SECONDS)
    #: Largest response frame accepted from these endpoints, bytes.
    max_frame_size: int = attrs.field(default=DEFAULT_MAX_FRAME_SIZE, validator=_COUNT)
    #: Protocol options for the upstream connections (e.g. ZMTP PLAIN); a
    #: mapping given in Python is made a FrozenMap.
    options: FrozenMap[str, str] = attrs.field(default=FrozenMap(), converter=_frozen_options, validator=_OPTIONS)
    circuit_breakers: ThresholdsConfig = attrs.field(
        default=ThresholdsConfig(), validator=cv.Rule(cv.instance(ThresholdsConfig))
    )
    #: sota-mesh's per-endpoint breaker; None: off.
    endpoint_breaker: BreakerConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(BreakerConfig), optional=True)
    )
    outlier_detection: OutlierConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(OutlierConfig), optional=True)
    )
    #: Response statuses that count as the endpoint's failure (for the
    #: breaker and outlier detection), besides resets and timeouts.
    failure_statuses: tuple[int, ...] = attrs.field(default=(), validator=_STATUSES)
    health_check: HealthCheckConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(HealthCheckConfig), optional=True)
    )
    #: TLS to the endpoints (None: plaintext).
    tls: UpstreamTlsConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(UpstreamTlsConfig), optional=True)
    )
    zookeeper: ZooKeeperConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(ZooKeeperConfig), optional=True)
    )
    #: The control plane's ClusterLoadAssignment to take the endpoints from
    #: (Envoy's ``eds_cluster_config.service_name``); needs the proxy's ``xds``.
    eds: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))

    def __attrs_post_init__(self) -> None:
        if self.zookeeper is not None and self.eds is not None:
            raise ConfigError("eds", "a cluster takes its endpoints from zookeeper or eds, not both")
        if not self.endpoints and self.zookeeper is None and self.eds is None:
            raise ConfigError("endpoints", "expected at least one entry (or zookeeper or eds, to find them there)")


@attrs.frozen
class MatchConfig:
    """One condition on a routing attribute; exactly one test is set."""

    attribute: str = attrs.field(validator=_NAME)
    exact: str | None = attrs.field(default=None, validator=cv.Rule(cv.text, optional=True))
    prefix: str | None = attrs.field(default=None, validator=cv.Rule(cv.text, optional=True))
    #: A full match of the attribute's value.
    regex: str | None = attrs.field(default=None, validator=cv.Rule(cv.regex, optional=True))
    present: bool | None = attrs.field(default=None, validator=cv.Rule(cv.boolean, optional=True))

    def __attrs_post_init__(self) -> None:
        given = [test for test in MATCH_TESTS if getattr(self, test) is not None]
        if len(given) != 1:
            raise ConfigError("", f"expected exactly one of {', '.join(MATCH_TESTS)}, got {len(given)}")


@attrs.frozen
class RetryConfig:
    """When a failed try is sent again, to another endpoint when possible.

    ``attempts`` counts every try, the first included. A connect failure is
    always safe to retry (nothing was sent); everything else is retried
    only for a route marked ``idempotent``, never for a oneway request, and
    never after the route's overall timeout.
    """

    attempts: int = attrs.field(default=3, validator=_COUNT)
    retry_on: tuple[str, ...] = attrs.field(
        default=("connect_failure",), validator=cv.Rule(cv.items, parse=cv.Rule(cv.choice, choices=RETRY_ON).check)
    )
    #: Protocol statuses retried when ``retry_on`` has ``status``.
    statuses: tuple[int, ...] = attrs.field(default=(), validator=_STATUSES)
    idempotent: bool = attrs.field(default=False, validator=_FLAG)

    def __attrs_post_init__(self) -> None:
        if self.statuses and "status" not in self.retry_on:
            raise ConfigError("statuses", 'statuses are retried only with "status" in retry_on')


@attrs.frozen
class RouteConfig:
    """Where matching requests go; every condition must hold (none: catch-all)."""

    cluster: str = attrs.field(validator=_NAME)
    match: tuple[MatchConfig, ...] = attrs.field(
        default=(), validator=cv.Rule(cv.items, parse=cv.instance(MatchConfig))
    )
    #: Overall time for the request, retries included; the request's own
    #: timeout wins when the protocol carries one and it is shorter.
    timeout: float = attrs.field(default=DEFAULT_ROUTE_TIMEOUT, validator=_SECONDS)
    per_try_timeout: float | None = attrs.field(default=None, validator=_MAYBE_SECONDS)
    retry: RetryConfig = attrs.field(default=RetryConfig(), validator=cv.Rule(cv.instance(RetryConfig)))
    #: The routing attribute hash balancers hash.
    hash_key: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    #: Options of the listener's stream filters for this route's requests,
    #: by filter name (a filter the listener has), replacing the listener's.
    per_filter_config: FrozenMap[str, FrozenMap[str, str]] = attrs.field(
        default=FrozenMap(), converter=_frozen_filter_options, validator=cv.Rule(cv.filter_options)
    )


@attrs.frozen
class StreamFilterConfig:
    """One stream filter of a listener: its registered name and its options."""

    type: str = attrs.field(validator=_NAME)
    #: Its name in the chain, which ``per_filter_config`` refers to
    #: (default: its type); unique within a listener.
    name: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    #: The filter's options, read as text (YAML's ``true`` as ``"true"``).
    config: FrozenMap[str, str] = attrs.field(default=FrozenMap(), converter=_frozen_options, validator=_OPTIONS)


@attrs.frozen
class LimitsConfig:
    """Bounds per listener and per client connection."""

    max_frame_size: int = attrs.field(default=DEFAULT_MAX_FRAME_SIZE, validator=_COUNT)
    #: Requests in flight per client connection; reading pauses at it. Well
    #: below a cluster's ``max_requests`` (1024), so that one deep client
    #: cannot take a whole cluster.
    max_in_flight: int = attrs.field(default=256, validator=_COUNT)
    #: Client connections at once; more are closed as soon as accepted (None: no limit).
    max_connections: int | None = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=_MAYBE_COUNT)
    #: Seconds a connection may sit with nothing in flight and no input.
    idle_timeout: float | None = attrs.field(default=DEFAULT_TIMEOUTS.idle, validator=_MAYBE_SECONDS)
    #: Seconds from a frame's first byte (or, for the first frame, from the
    #: connect) to its last: a client that sends nothing, or dribbles, is closed.
    frame_timeout: float | None = attrs.field(default=DEFAULT_TIMEOUTS.frame, validator=_MAYBE_SECONDS)
    #: Seconds idle (between requests, nothing in flight) before a client
    #: connection parks: its task, buffers and per-client upstream
    #: connections are freed until it speaks again (0: never; None, the
    #: default: ``DEFAULT_PARK_IDLE_AFTER``, 30 s, where connections can
    #: park). Listeners whose clients speak first only (not ZMTP).
    park_idle_after: float | None = attrs.field(
        default=None, validator=cv.Rule(cv.duration, optional=True, allow_zero=True, kind="seconds (a number)")
    )


@attrs.frozen
class ListenerConfig:
    """An address, the protocol spoken there (or ``auto``) and its routes."""

    name: str = attrs.field(validator=_NAME)
    address: str = attrs.field(validator=cv.Rule(cv.address))
    protocol: str = attrs.field(validator=_NAME)
    routes: tuple[RouteConfig, ...] = attrs.field(
        validator=cv.Rule(cv.items, parse=cv.instance(RouteConfig), non_empty=True)
    )
    limits: LimitsConfig = attrs.field(default=LimitsConfig(), validator=cv.Rule(cv.instance(LimitsConfig)))
    #: Protocol options for the client connections; a mapping given in
    #: Python is made a FrozenMap.
    options: FrozenMap[str, str] = attrs.field(default=FrozenMap(), converter=_frozen_options, validator=_OPTIONS)
    #: An access log line per request in this format: Envoy's command
    #: operators or ``str.format`` fields (see :mod:`.access_log`; ``true``:
    #: ``sota_dispatch.logs.ACCESS_LOG_FORMAT``); None: no access log.
    access_log: str | None = attrs.field(
        default=None, validator=cv.Rule(cv.access_log, optional=True, kind="a format string")
    )
    #: The stream filters every request passes, in order (none: no cost).
    stream_filters: tuple[StreamFilterConfig, ...] = attrs.field(
        default=(), validator=cv.Rule(cv.items, parse=cv.instance(StreamFilterConfig))
    )
    #: TLS termination (None: plaintext).
    tls: ListenerTlsConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(ListenerTlsConfig), optional=True)
    )
    #: An OpenTelemetry span per request (None: none, at no cost).
    tracing: TracingConfig | None = attrs.field(
        default=None, validator=cv.Rule(cv.instance(TracingConfig), optional=True)
    )


@attrs.frozen
class AdminConfig:
    """The admin HTTP endpoint; loopback only unless ``allow_remote``."""

    address: str = attrs.field(default="127.0.0.1:9901", validator=cv.Rule(cv.address))
    allow_remote: bool = attrs.field(default=False, validator=_FLAG)

    def __attrs_post_init__(self) -> None:
        if not self.allow_remote and not is_loopback(parse_address(self.address)[0]):
            raise ConfigError(
                "address",
                f"{self.address} is not loopback; set allow_remote: true (--admin-allow-remote) to expose the admin",
            )


@attrs.frozen
class OverloadConfig:
    """The process-wide buffer budget (see :mod:`sota_dispatch.io.budget`):
    bytes of partial frames all connections may hold together, and the size
    from which a frame counts as large (refused when begun under pressure)."""

    buffer_budget: int = attrs.field(default=DEFAULT_BUFFER_BUDGET, validator=cv.Rule(cv.size))
    large_frame: int = attrs.field(default=DEFAULT_LARGE_FRAME, validator=cv.Rule(cv.size))


@attrs.frozen
class ProxyConfig:
    """The whole proxy: several listeners and protocols in one process.

    Besides each field's rules, the checks across objects (see
    :func:`reference_problems`) run when it is built, every problem
    reported in one :class:`~sota_dispatch.ConfigError`.
    """

    listeners: tuple[ListenerConfig, ...] = attrs.field(
        validator=cv.Rule(cv.items, parse=cv.instance(ListenerConfig), non_empty=True)
    )
    clusters: tuple[ClusterConfig, ...] = attrs.field(
        validator=cv.Rule(cv.items, parse=cv.instance(ClusterConfig), non_empty=True)
    )
    #: Seconds in-flight requests get to finish on shutdown (then each
    #: request still in flight gets a timeout reply). Default: the longest
    #: route timeout plus one second, so that a shutdown never cuts short a
    #: request that would have been answered, or timed out, on its own.
    drain_timeout: float = attrs.field(validator=cv.Rule(cv.duration, allow_zero=True, kind="seconds (a number)"))
    admin: AdminConfig | None = attrs.field(default=None, validator=cv.Rule(cv.instance(AdminConfig), optional=True))
    overload: OverloadConfig = attrs.field(default=OverloadConfig(), validator=cv.Rule(cv.instance(OverloadConfig)))
    #: The xDS control plane the ``eds`` clusters take their endpoints from.
    xds: XdsConfig | None = attrs.field(default=None, validator=cv.Rule(cv.instance(XdsConfig), optional=True))

    @drain_timeout.default
    def _longest_route(self) -> float:
        # Runs before the validators: skips what they will refuse.
        listeners = self.listeners if isinstance(self.listeners, tuple) else ()
        timeouts = [
            route.timeout for listener in listeners if isinstance(listener, ListenerConfig) for route in listener.routes
        ]
        return max(timeouts, default=DEFAULT_ROUTE_TIMEOUT) + 1.0

    def __attrs_post_init__(self) -> None:
        problems = reference_problems(self.listeners, self.clusters)
        for i, cluster in enumerate(self.clusters):
            if cluster.eds is not None and self.xds is None:
                problems.append(ConfigError(f"clusters[{i}].eds", "needs xds: the control plane to ask"))
        if problems:
            raise ConfigError.combine(problems)


def reference_problems(
    listeners: Sequence[ListenerConfig | None],
    clusters: Sequence[ClusterConfig | str | None],
    routes: Iterable[tuple[str, RouteConfig]] = (),
) -> list[ConfigError]:
    """The problems across the objects of a configuration, with their paths:
    names given twice, two listeners on one address, a route to a cluster
    that does not exist, or to a hash-balanced one without a ``hash_key``.

    An entry that could not be read is None (its own problems are reported
    already), or, for a cluster, the name it gives itself (routes to it are
    not reported as unknown). ``routes``: more routes to check, with their
    paths (those read from listeners that could not be).
    """
    problems: list[ConfigError] = []

    def unique(names: Sequence[str | None], path: str, what: str) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name is None:
                continue
            if name in seen:
                problems.append(ConfigError(f"{path}[{i}].name", f"duplicate {what} name {cv.show(name)}"))
            seen.add(name)

    cluster_names = [cluster.name if isinstance(cluster, ClusterConfig) else cluster for cluster in clusters]
    unique([None if listener is None else listener.name for listener in listeners], "listeners", "listener")
    unique(cluster_names, "clusters", "cluster")
    bound: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(listeners):
        if listener is None:
            continue
        host, port = parse_address(listener.address)
        if port and (host, port) in bound:
            problems.append(
                ConfigError(f"listeners[{i}].address", f"{listener.address} is also listeners[{bound[host, port]}]'s")
            )
        bound.setdefault((host, port), i)
    by_name = {cluster.name: cluster for cluster in clusters if isinstance(cluster, ClusterConfig)}
    known = ", ".join(dict.fromkeys(name for name in cluster_names if name is not None))
    every_route = [
        (f"listeners[{i}].routes[{j}]", route)
        for i, listener in enumerate(listeners)
        if listener is not None
        for j, route in enumerate(listener.routes)
    ]
    for path, route in [*every_route, *routes]:
        cluster = by_name.get(route.cluster)
        if cluster is None:
            if route.cluster not in cluster_names:
                problems.append(
                    ConfigError(f"{path}.cluster", f"unknown cluster {cv.show(route.cluster)} (clusters: {known})")
                )
        elif cluster.lb in HASH_BALANCERS and route.hash_key is None:
            problems.append(
                ConfigError(
                    f"{path}.hash_key",
                    f"cluster {cv.show(cluster.name)} balances by {cluster.lb}, which needs a hash_key",
                )
            )
    return problems
