"""The proxy's configuration: listeners, routes, clusters, as immutable values.

Names follow Envoy and MOSN so their users feel at home. A YAML file (or
any mapping) is loaded into frozen attrs classes by a small validating
reader: every problem is a :class:`ConfigError` naming its path, for
instance ``clusters[1].endpoints[0].address: expected HOST:PORT, got
"localhost"``; unknown keys are errors, never ignored. Frozen values can be
swapped whole at run time later (an xDS client), which is why nothing here
holds state.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar, cast, get_args

import attrs

from ..cluster.health import BreakerConfig, OutlierConfig
from ..errors import SotaError
from ..io.address import is_loopback, parse_address
from ..io.budget import DEFAULT_BUFFER_BUDGET, DEFAULT_LARGE_FRAME
from ..protocol.codec import PoolMode

__all__ = [
    "BALANCERS",
    "AdminConfig",
    "RETRY_ON",
    "ClusterConfig",
    "ConfigError",
    "EndpointConfig",
    "HealthCheckConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MatchConfig",
    "OverloadConfig",
    "PoolConfig",
    "ProxyConfig",
    "RetryConfig",
    "RouteConfig",
    "ThresholdsConfig",
    "admin_config",
    "config_from_upstreams",
    "load_config",
    "parse_config",
]

T = TypeVar("T")

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
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


class ConfigError(SotaError):
    """A configuration problem; the message starts with the path of the value."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


#: A route's timeout unless it sets one (Envoy's is 15 s too).
DEFAULT_ROUTE_TIMEOUT = 15.0


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


# -- the validating reader -----------------------------------------------------


def _show(value: object) -> str:
    """A value as the YAML user wrote it, on one line (quotes and escapes
    from JSON, so a newline in a value cannot forge a second error line)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__} value"


def _key(key: object) -> str:
    """A mapping key as a path segment."""
    text = key if isinstance(key, str) else _show(key)
    return text if text.isprintable() and "." not in text else json.dumps(text, ensure_ascii=False)


def _mapping(value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            hint = " (YAML reads unquoted on/off/yes/no as booleans: quote the key)" if isinstance(key, bool) else ""
            raise ConfigError(path, f"unknown key {_show(key)}{hint} (expected one of: {', '.join(allowed)})")
        if key not in allowed:
            raise ConfigError(_join(path, _key(key)), f"unknown key (expected one of: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise ConfigError(_join(path, key), "required")
    return dict(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _list(value: object, path: str, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {_show(value)}")
    if non_empty and not value:
        raise ConfigError(path, "expected at least one entry")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {_show(value)}")
    return value


def _int(value: object, path: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_show(value)}")
    if value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"expected an integer <= {maximum}, got {value}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


def _size(value: object, path: str) -> int:
    """Bytes: an integer, or a string such as ``128MiB`` or ``512 KiB``."""
    if isinstance(value, str):
        found = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(found.group(2).lower()) if found else None
        if found is None or unit is None:
            raise ConfigError(path, f"expected a size (bytes, or e.g. \"128MiB\"), got {_show(value)}")
        value = int(found.group(1)) * unit
    return _int(value, path)


def _overload(value: object, path: str) -> OverloadConfig:
    raw = _mapping(value, path, ("buffer_budget", "large_frame"))
    d = OverloadConfig()
    return OverloadConfig(
        buffer_budget=_size(raw.get("buffer_budget", d.buffer_budget), f"{path}.buffer_budget"),
        large_frame=_size(raw.get("large_frame", d.large_frame), f"{path}.large_frame"),
    )


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_show(value)}")
    return value


def _duration(value: object, path: str, *, allow_zero: bool = False) -> float:
    """Seconds: a number, or a string such as ``250ms``, ``1.5s``, ``2m``."""
    seconds = parse_duration(value)
    if seconds is None or (seconds == 0 and not allow_zero):
        what = "a duration >= 0" if allow_zero else "a positive duration"
        raise ConfigError(path, f'expected {what} (seconds, or e.g. "250ms"), got {_show(value)}')
    return seconds


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like ``250ms``, ``1.5s``, ``2m``,
    ``1e3ms``; None unless finite and not negative (the CLI shares it)."""
    seconds: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m)?\s*", value)
            if match:
                seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    except OverflowError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _address(value: object, path: str, *, endpoint: bool = False) -> str:
    text = value.strip() if isinstance(value, str) else None
    port = -1
    if text is not None:
        try:
            port = parse_address(text)[1]
        except ValueError:
            text = None
    if text is None:
        hint = " (YAML read an unquoted value as a number: quote it)" if isinstance(value, (int, float)) else ""
        raise ConfigError(path, f"expected HOST:PORT, got {_show(value)}{hint}")
    if endpoint and port == 0:
        raise ConfigError(path, f"an endpoint needs a port from 1 to 65535, got {_show(value)}")
    return text


def _choice(value: object, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(path, f"expected one of {', '.join(choices)}, got {_show(value)}")
    return cast(str, value)


def _options(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping of option names to values, got {_show(value)}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"option names are strings, got {_show(key)}")
        if isinstance(item, (Mapping, list)) or item is None:
            raise ConfigError(_join(path, _key(key)), f"expected a scalar option value, got {_show(item)}")
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def _items(value: object, path: str, parse: Callable[[object, str], T], *, non_empty: bool = False) -> tuple[T, ...]:
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(_list(value, path, non_empty=non_empty)))


def _endpoint(value: object, path: str) -> EndpointConfig:
    if isinstance(value, str):  # shorthand: just the address
        return EndpointConfig(_address(value, path, endpoint=True))
    raw = _mapping(value, path, ("address", "weight", "priority"), ("address",))
    return EndpointConfig(
        address=_address(raw["address"], f"{path}.address", endpoint=True),
        weight=_int(raw.get("weight", 1), f"{path}.weight", maximum=MAX_WEIGHT),
        priority=_int(raw.get("priority", 0), f"{path}.priority", minimum=0),
    )


def _pool(value: object, path: str) -> PoolConfig:
    raw = _mapping(value, path, ("mode", "connections", "max_requests", "max_pending", "shared"))
    return PoolConfig(
        mode=cast(PoolMode, _choice(raw["mode"], f"{path}.mode", _POOL_MODES)) if "mode" in raw else None,
        connections=_int(raw["connections"], f"{path}.connections") if "connections" in raw else None,
        max_requests=_int(raw["max_requests"], f"{path}.max_requests") if "max_requests" in raw else None,
        max_pending=_int(raw.get("max_pending", 1024), f"{path}.max_pending"),
        shared=_bool(raw["shared"], f"{path}.shared") if "shared" in raw else None,
    )


def _cluster(value: object, path: str) -> ClusterConfig:
    raw = _mapping(
        value,
        path,
        (
            "name",
            "endpoints",
            "lb",
            "pool",
            "connect_timeout",
            "max_frame_size",
            "options",
            "circuit_breakers",
            "endpoint_breaker",
            "outlier_detection",
            "failure_statuses",
            "health_check",
        ),
        ("name", "endpoints"),
    )
    return ClusterConfig(
        name=_str(raw["name"], f"{path}.name"),
        endpoints=_items(raw["endpoints"], f"{path}.endpoints", _endpoint, non_empty=True),
        lb=cast(BalancerName, _choice(raw.get("lb", "round_robin"), f"{path}.lb", BALANCERS)),
        pool=_pool(raw.get("pool", {}), f"{path}.pool"),
        connect_timeout=_duration(raw.get("connect_timeout", 1.0), f"{path}.connect_timeout"),
        max_frame_size=_int(raw.get("max_frame_size", 16 << 20), f"{path}.max_frame_size"),
        options=_options(raw.get("options", {}), f"{path}.options"),
        circuit_breakers=_thresholds(raw.get("circuit_breakers", {}), f"{path}.circuit_breakers"),
        endpoint_breaker=(
            _breaker(raw["endpoint_breaker"], f"{path}.endpoint_breaker") if "endpoint_breaker" in raw else None
        ),
        outlier_detection=(
            _outlier(raw["outlier_detection"], f"{path}.outlier_detection") if "outlier_detection" in raw else None
        ),
        failure_statuses=tuple(
            _int(v, f"{path}.failure_statuses[{i}]", minimum=0)
            for i, v in enumerate(_list(raw.get("failure_statuses", []), f"{path}.failure_statuses"))
        ),
        health_check=_health_check(raw["health_check"], f"{path}.health_check") if "health_check" in raw else None,
    )


def _health_check(value: object, path: str) -> HealthCheckConfig:
    raw = _mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(HealthCheckConfig)])
    d = HealthCheckConfig()
    return HealthCheckConfig(
        interval=_duration(raw.get("interval", d.interval), f"{path}.interval"),
        timeout=_duration(raw.get("timeout", d.timeout), f"{path}.timeout"),
        healthy_threshold=_int(raw.get("healthy_threshold", d.healthy_threshold), f"{path}.healthy_threshold"),
        unhealthy_threshold=_int(raw.get("unhealthy_threshold", d.unhealthy_threshold), f"{path}.unhealthy_threshold"),
        kind=cast(Literal["tcp", "protocol"], _choice(raw.get("kind", d.kind), f"{path}.kind", ("tcp", "protocol"))),
        send=_str(raw["send"], f"{path}.send") if "send" in raw else None,
    )


def _thresholds(value: object, path: str) -> ThresholdsConfig:
    names = [f.name for f in attrs.fields(ThresholdsConfig)]
    raw = _mapping(value if value is not None else {}, path, names)
    defaults = ThresholdsConfig()
    return ThresholdsConfig(**{n: _int(raw.get(n, getattr(defaults, n)), f"{path}.{n}", minimum=0) for n in names})


def _fraction(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(path, f"expected a number in (0, 1], got {_show(value)}")
    return float(value)


def _breaker(value: object, path: str) -> BreakerConfig:
    raw = _mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(BreakerConfig)])
    d = BreakerConfig()
    return BreakerConfig(
        consecutive_failures=_int(
            raw.get("consecutive_failures", d.consecutive_failures), f"{path}.consecutive_failures"
        ),
        failure_ratio=_fraction(raw.get("failure_ratio", d.failure_ratio), f"{path}.failure_ratio"),
        min_requests=_int(raw.get("min_requests", d.min_requests), f"{path}.min_requests"),
        interval=_duration(raw.get("interval", d.interval), f"{path}.interval"),
        open_timeout=_duration(raw.get("open_timeout", d.open_timeout), f"{path}.open_timeout"),
        half_open_requests=_int(raw.get("half_open_requests", d.half_open_requests), f"{path}.half_open_requests"),
    )


def _outlier(value: object, path: str) -> OutlierConfig:
    raw = _mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(OutlierConfig)])
    d = OutlierConfig()
    percent = raw.get("max_ejection_percent", d.max_ejection_percent)
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
        raise ConfigError(f"{path}.max_ejection_percent", f"expected a number from 0 to 100, got {_show(percent)}")
    return OutlierConfig(
        consecutive_failures=_int(
            raw.get("consecutive_failures", d.consecutive_failures), f"{path}.consecutive_failures"
        ),
        base_ejection_time=_duration(raw.get("base_ejection_time", d.base_ejection_time), f"{path}.base_ejection_time"),
        max_ejection_time=_duration(raw.get("max_ejection_time", d.max_ejection_time), f"{path}.max_ejection_time"),
        max_ejection_percent=float(percent),
    )


def _match(value: object, path: str) -> MatchConfig:
    tests = ("exact", "prefix", "regex", "present")
    raw = _mapping(value, path, ("attribute", *tests), ("attribute",))
    given = [t for t in tests if t in raw]
    if len(given) != 1:
        raise ConfigError(path, f"expected exactly one of {', '.join(tests)}, got {len(given)}")
    test = given[0]
    kwargs: dict[str, Any] = {}
    if test == "present":
        kwargs["present"] = _bool(raw["present"], f"{path}.present")
    else:
        text = raw[test]
        if not isinstance(text, str):
            raise ConfigError(f"{path}.{test}", f"expected a string, got {_show(text)}")
        if test == "regex":
            try:
                re.compile(text)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ConfigError(f"{path}.regex", f"invalid regular expression: {exc}") from None
        kwargs[test] = text
    return MatchConfig(attribute=_str(raw["attribute"], f"{path}.attribute"), **kwargs)


def _retry(value: object, path: str) -> RetryConfig:
    raw = _mapping(value, path, ("attempts", "retry_on", "statuses", "idempotent"))
    retry_on = tuple(
        _choice(v, f"{path}.retry_on[{i}]", RETRY_ON)
        for i, v in enumerate(_list(raw.get("retry_on", []), f"{path}.retry_on"))
    )
    statuses = tuple(
        _int(v, f"{path}.statuses[{i}]", minimum=0)
        for i, v in enumerate(_list(raw.get("statuses", []), f"{path}.statuses"))
    )
    if statuses and "status" not in retry_on:
        raise ConfigError(f"{path}.statuses", 'statuses are retried only with "status" in retry_on')
    return RetryConfig(
        attempts=_int(raw.get("attempts", 3), f"{path}.attempts"),
        retry_on=retry_on if "retry_on" in raw else RetryConfig().retry_on,
        statuses=statuses,
        idempotent=_bool(raw.get("idempotent", False), f"{path}.idempotent"),
    )


def _route(value: object, path: str) -> RouteConfig:
    raw = _mapping(value, path, ("match", "cluster", "timeout", "per_try_timeout", "retry", "hash_key"), ("cluster",))
    return RouteConfig(
        cluster=_str(raw["cluster"], f"{path}.cluster"),
        match=_items(raw.get("match", []), f"{path}.match", _match),
        timeout=_duration(raw.get("timeout", DEFAULT_ROUTE_TIMEOUT), f"{path}.timeout"),
        per_try_timeout=(
            _duration(raw["per_try_timeout"], f"{path}.per_try_timeout") if "per_try_timeout" in raw else None
        ),
        retry=_retry(raw.get("retry", {}), f"{path}.retry"),
        hash_key=_str(raw["hash_key"], f"{path}.hash_key") if "hash_key" in raw else None,
    )


def _limits(value: object, path: str) -> LimitsConfig:
    raw = _mapping(value, path, ("max_frame_size", "max_in_flight", "max_connections", "idle_timeout", "frame_timeout"))
    defaults = LimitsConfig()

    def timeout(name: str) -> float | None:
        value = raw.get(name, getattr(defaults, name))
        return None if value is None else _duration(value, f"{path}.{name}")

    max_connections = raw.get("max_connections", defaults.max_connections)  # null: no limit
    return LimitsConfig(
        max_frame_size=_int(raw.get("max_frame_size", defaults.max_frame_size), f"{path}.max_frame_size"),
        max_in_flight=_int(raw.get("max_in_flight", defaults.max_in_flight), f"{path}.max_in_flight"),
        max_connections=None if max_connections is None else _int(max_connections, f"{path}.max_connections"),
        idle_timeout=timeout("idle_timeout"),
        frame_timeout=timeout("frame_timeout"),
    )


def _listener(value: object, path: str) -> ListenerConfig:
    raw = _mapping(
        value,
        path,
        ("name", "address", "protocol", "routes", "limits", "options", "access_log"),
        ("name", "address", "protocol", "routes"),
    )
    return ListenerConfig(
        name=_str(raw["name"], f"{path}.name"),
        address=_address(raw["address"], f"{path}.address"),
        protocol=_str(raw["protocol"], f"{path}.protocol"),
        routes=_items(raw["routes"], f"{path}.routes", _route, non_empty=True),
        limits=_limits(raw.get("limits", {}), f"{path}.limits"),
        options=_options(raw.get("options", {}), f"{path}.options"),
        access_log=_access_log(raw["access_log"], f"{path}.access_log") if "access_log" in raw else None,
    )


def _access_log(value: object, path: str) -> str:
    """``true`` (the default format) or a format string, checked now."""
    from ..logs import ACCESS_LOG_FORMAT

    if value is True:
        return ACCESS_LOG_FORMAT
    text = _str(value, path)
    fields = dict.fromkeys(("listener", "protocol", "conn", "stream", "cluster", "endpoint", "outcome", "bytes"), "x")
    try:
        text.format(**fields, attempts=1, duration_ms=1.0)
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(path, f"bad format ({exc!r}); fields: {', '.join(fields)}, attempts, duration_ms") from None
    return text


def _unique(names: Sequence[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{path}[{i}].name", f"duplicate {what} name {_show(name)}")
        seen.add(name)


def parse_config(data: object) -> ProxyConfig:
    """Validate a loaded document (a mapping) into a :class:`ProxyConfig`.

    Checks the cross references too: every route's cluster exists, a route
    to a hash-balanced cluster names its ``hash_key``. Whether each
    listener's protocol is installed is checked by
    :func:`~sota_dispatch.proxy.proxy.check_protocols` (it needs the registry).
    """
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the configuration must be a mapping (listeners, clusters), got {_show(data)}")
    raw = _mapping(
        data, "", ("listeners", "clusters", "drain_timeout", "admin", "overload"), ("listeners", "clusters")
    )
    listeners = _items(raw["listeners"], "listeners", _listener, non_empty=True)
    clusters = _items(raw["clusters"], "clusters", _cluster, non_empty=True)
    _unique([c.name for c in listeners], "listeners", "listener")
    _unique([c.name for c in clusters], "clusters", "cluster")
    bound: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(listeners):
        host, port = parse_address(listener.address)
        if port and (host, port) in bound:
            raise ConfigError(f"listeners[{i}].address", f"{listener.address} is also listeners[{bound[host, port]}]'s")
        bound[host, port] = i
    by_name = {c.name: c for c in clusters}
    for i, listener in enumerate(listeners):
        for j, route in enumerate(listener.routes):
            path = f"listeners[{i}].routes[{j}]"
            cluster = by_name.get(route.cluster)
            if cluster is None:
                known = ", ".join(by_name)
                raise ConfigError(f"{path}.cluster", f"unknown cluster {_show(route.cluster)} (clusters: {known})")
            if cluster.lb in HASH_BALANCERS and route.hash_key is None:
                raise ConfigError(
                    f"{path}.hash_key",
                    f"cluster {_show(cluster.name)} balances by {cluster.lb}, which needs a hash_key",
                )
    config = ProxyConfig(
        listeners=listeners,
        clusters=clusters,
        admin=admin_config(raw["admin"], "admin") if "admin" in raw else None,
        overload=_overload(raw.get("overload", {}), "overload"),
    )
    if "drain_timeout" in raw:  # else the default: the longest route timeout + 1 s
        config = attrs.evolve(config, drain_timeout=_duration(raw["drain_timeout"], "drain_timeout", allow_zero=True))
    return config


def admin_config(value: object, path: str) -> AdminConfig:
    """``{address, allow_remote}`` (or just the address); loopback unless allowed."""
    raw = _mapping({"address": value} if isinstance(value, str) else value, path, ("address", "allow_remote"))
    address = _address(raw.get("address", AdminConfig().address), f"{path}.address")
    allow_remote = _bool(raw.get("allow_remote", False), f"{path}.allow_remote")
    host = parse_address(address)[0]
    if not allow_remote and not is_loopback(host):
        raise ConfigError(f"{path}.address", f"{address} is not loopback; set allow_remote: true to expose the admin")
    return AdminConfig(address=address, allow_remote=allow_remote)


def load_config(path: str | Path) -> ProxyConfig:
    """Read and validate a YAML config file; raises :class:`ConfigError`.

    The file is the native format, or an Envoy v3 static bootstrap (one
    with ``static_resources``; see :mod:`sota_dispatch.config.envoy`). A key given
    twice in one mapping is an error (PyYAML would silently keep the last
    one).
    """
    import yaml  # imported here: only the config file needs it

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError("", f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError("", f"{path}: nested too deeply") from None
    from .envoy import from_envoy, is_envoy  # envoy.py builds on this module

    if is_envoy(data):
        return from_envoy(data)
    return parse_config(data)


def _strict_loader() -> type[Any]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        mark = key_node.start_mark
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def config_from_upstreams(
    protocol: str,
    listen: str,
    upstreams: Sequence[str],
    *,
    options: Mapping[str, str] | None = None,
    drain_timeout: float | None = None,
    admin: str | None = None,
    limits: LimitsConfig | None = None,
) -> ProxyConfig:
    """The ``--upstream`` shortcut: one listener, one round-robin cluster of
    ``upstreams``, one catch-all route."""
    endpoints = tuple(_endpoint(address, f"--upstream[{i}]") for i, address in enumerate(upstreams))
    config = ProxyConfig(
        listeners=(
            ListenerConfig(
                name="main",
                address=_address(listen, "--listen"),
                protocol=protocol,
                routes=(RouteConfig(cluster="upstream"),),
                options=dict(options or {}),
                limits=limits or LimitsConfig(),
            ),
        ),
        clusters=(ClusterConfig(name="upstream", endpoints=endpoints),),
        admin=None if admin is None else admin_config(admin, "--admin"),
    )
    return config if drain_timeout is None else attrs.evolve(config, drain_timeout=drain_timeout)
