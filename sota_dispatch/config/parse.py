"""Reading a loaded document (a mapping) into a :class:`~.model.ProxyConfig`.

Unknown keys are errors, never ignored, and every error names its path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from ..io.address import is_loopback, parse_address
from ..protocol.codec import PoolMode
from .model import (
    _POOL_MODES,
    BALANCERS,
    DEFAULT_ROUTE_TIMEOUT,
    HASH_BALANCERS,
    MAX_WEIGHT,
    RETRY_ON,
    AdminConfig,
    BalancerName,
    BreakerConfig,
    ClusterConfig,
    EndpointConfig,
    HealthCheckConfig,
    LimitsConfig,
    ListenerConfig,
    MatchConfig,
    OutlierConfig,
    OverloadConfig,
    PoolConfig,
    ProxyConfig,
    RetryConfig,
    RouteConfig,
    ThresholdsConfig,
)

__all__ = ["admin_config", "endpoint_config", "parse_config"]


def _overload(value: object, path: str) -> OverloadConfig:
    raw = cv.mapping(value, path, ("buffer_budget", "large_frame"))
    d = OverloadConfig()
    return OverloadConfig(
        buffer_budget=cv.size(raw.get("buffer_budget", d.buffer_budget), f"{path}.buffer_budget"),
        large_frame=cv.size(raw.get("large_frame", d.large_frame), f"{path}.large_frame"),
    )


def endpoint_config(value: object, path: str) -> EndpointConfig:
    if isinstance(value, str):  # shorthand: just the address
        return EndpointConfig(cv.address(value, path, endpoint=True))
    raw = cv.mapping(value, path, ("address", "weight", "priority"), ("address",))
    return EndpointConfig(
        address=cv.address(raw["address"], f"{path}.address", endpoint=True),
        weight=cv.integer(raw.get("weight", 1), f"{path}.weight", maximum=MAX_WEIGHT),
        priority=cv.integer(raw.get("priority", 0), f"{path}.priority", minimum=0),
    )


def _pool(value: object, path: str) -> PoolConfig:
    raw = cv.mapping(value, path, ("mode", "connections", "max_requests", "max_pending", "shared"))
    return PoolConfig(
        mode=cast(PoolMode, cv.choice(raw["mode"], f"{path}.mode", _POOL_MODES)) if "mode" in raw else None,
        connections=cv.integer(raw["connections"], f"{path}.connections") if "connections" in raw else None,
        max_requests=cv.integer(raw["max_requests"], f"{path}.max_requests") if "max_requests" in raw else None,
        max_pending=cv.integer(raw.get("max_pending", 1024), f"{path}.max_pending"),
        shared=cv.boolean(raw["shared"], f"{path}.shared") if "shared" in raw else None,
    )


def _cluster(value: object, path: str) -> ClusterConfig:
    raw = cv.mapping(
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
        name=cv.string(raw["name"], f"{path}.name"),
        endpoints=cv.items(raw["endpoints"], f"{path}.endpoints", endpoint_config, non_empty=True),
        lb=cast(BalancerName, cv.choice(raw.get("lb", "round_robin"), f"{path}.lb", BALANCERS)),
        pool=_pool(raw.get("pool", {}), f"{path}.pool"),
        connect_timeout=cv.duration(raw.get("connect_timeout", 1.0), f"{path}.connect_timeout"),
        max_frame_size=cv.integer(raw.get("max_frame_size", 16 << 20), f"{path}.max_frame_size"),
        options=cv.options(raw.get("options", {}), f"{path}.options"),
        circuit_breakers=_thresholds(raw.get("circuit_breakers", {}), f"{path}.circuit_breakers"),
        endpoint_breaker=(
            _breaker(raw["endpoint_breaker"], f"{path}.endpoint_breaker") if "endpoint_breaker" in raw else None
        ),
        outlier_detection=(
            _outlier(raw["outlier_detection"], f"{path}.outlier_detection") if "outlier_detection" in raw else None
        ),
        failure_statuses=tuple(
            cv.integer(v, f"{path}.failure_statuses[{i}]", minimum=0)
            for i, v in enumerate(cv.list_of(raw.get("failure_statuses", []), f"{path}.failure_statuses"))
        ),
        health_check=_health_check(raw["health_check"], f"{path}.health_check") if "health_check" in raw else None,
    )


def _health_check(value: object, path: str) -> HealthCheckConfig:
    raw = cv.mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(HealthCheckConfig)])
    d = HealthCheckConfig()
    return HealthCheckConfig(
        interval=cv.duration(raw.get("interval", d.interval), f"{path}.interval"),
        timeout=cv.duration(raw.get("timeout", d.timeout), f"{path}.timeout"),
        healthy_threshold=cv.integer(raw.get("healthy_threshold", d.healthy_threshold), f"{path}.healthy_threshold"),
        unhealthy_threshold=cv.integer(
            raw.get("unhealthy_threshold", d.unhealthy_threshold), f"{path}.unhealthy_threshold"
        ),
        kind=cast(Literal["tcp", "protocol"], cv.choice(raw.get("kind", d.kind), f"{path}.kind", ("tcp", "protocol"))),
        send=cv.string(raw["send"], f"{path}.send") if "send" in raw else None,
    )


def _thresholds(value: object, path: str) -> ThresholdsConfig:
    names = [f.name for f in attrs.fields(ThresholdsConfig)]
    raw = cv.mapping(value if value is not None else {}, path, names)
    defaults = ThresholdsConfig()
    return ThresholdsConfig(
        **{n: cv.integer(raw.get(n, getattr(defaults, n)), f"{path}.{n}", minimum=0) for n in names}
    )


def _breaker(value: object, path: str) -> BreakerConfig:
    raw = cv.mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(BreakerConfig)])
    d = BreakerConfig()
    return BreakerConfig(
        consecutive_failures=cv.integer(
            raw.get("consecutive_failures", d.consecutive_failures), f"{path}.consecutive_failures"
        ),
        failure_ratio=cv.fraction(raw.get("failure_ratio", d.failure_ratio), f"{path}.failure_ratio"),
        min_requests=cv.integer(raw.get("min_requests", d.min_requests), f"{path}.min_requests"),
        interval=cv.duration(raw.get("interval", d.interval), f"{path}.interval"),
        open_timeout=cv.duration(raw.get("open_timeout", d.open_timeout), f"{path}.open_timeout"),
        half_open_requests=cv.integer(
            raw.get("half_open_requests", d.half_open_requests), f"{path}.half_open_requests"
        ),
    )


def _outlier(value: object, path: str) -> OutlierConfig:
    raw = cv.mapping(value if value is not None else {}, path, [f.name for f in attrs.fields(OutlierConfig)])
    d = OutlierConfig()
    percent = raw.get("max_ejection_percent", d.max_ejection_percent)
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
        raise ConfigError(f"{path}.max_ejection_percent", f"expected a number from 0 to 100, got {cv.show(percent)}")
    return OutlierConfig(
        consecutive_failures=cv.integer(
            raw.get("consecutive_failures", d.consecutive_failures), f"{path}.consecutive_failures"
        ),
        base_ejection_time=cv.duration(
            raw.get("base_ejection_time", d.base_ejection_time), f"{path}.base_ejection_time"
        ),
        max_ejection_time=cv.duration(raw.get("max_ejection_time", d.max_ejection_time), f"{path}.max_ejection_time"),
        max_ejection_percent=float(percent),
    )


def _match(value: object, path: str) -> MatchConfig:
    tests = ("exact", "prefix", "regex", "present")
    raw = cv.mapping(value, path, ("attribute", *tests), ("attribute",))
    given = [t for t in tests if t in raw]
    if len(given) != 1:
        raise ConfigError(path, f"expected exactly one of {', '.join(tests)}, got {len(given)}")
    test = given[0]
    kwargs: dict[str, Any] = {}
    if test == "present":
        kwargs["present"] = cv.boolean(raw["present"], f"{path}.present")
    else:
        text = raw[test]
        if not isinstance(text, str):
            raise ConfigError(f"{path}.{test}", f"expected a string, got {cv.show(text)}")
        if test == "regex":
            try:
                re.compile(text)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ConfigError(f"{path}.regex", f"invalid regular expression: {exc}") from None
        kwargs[test] = text
    return MatchConfig(attribute=cv.string(raw["attribute"], f"{path}.attribute"), **kwargs)


def _retry(value: object, path: str) -> RetryConfig:
    raw = cv.mapping(value, path, ("attempts", "retry_on", "statuses", "idempotent"))
    retry_on = tuple(
        cv.choice(v, f"{path}.retry_on[{i}]", RETRY_ON)
        for i, v in enumerate(cv.list_of(raw.get("retry_on", []), f"{path}.retry_on"))
    )
    statuses = tuple(
        cv.integer(v, f"{path}.statuses[{i}]", minimum=0)
        for i, v in enumerate(cv.list_of(raw.get("statuses", []), f"{path}.statuses"))
    )
    if statuses and "status" not in retry_on:
        raise ConfigError(f"{path}.statuses", 'statuses are retried only with "status" in retry_on')
    return RetryConfig(
        attempts=cv.integer(raw.get("attempts", 3), f"{path}.attempts"),
        retry_on=retry_on if "retry_on" in raw else RetryConfig().retry_on,
        statuses=statuses,
        idempotent=cv.boolean(raw.get("idempotent", False), f"{path}.idempotent"),
    )


def _route(value: object, path: str) -> RouteConfig:
    raw = cv.mapping(value, path, ("match", "cluster", "timeout", "per_try_timeout", "retry", "hash_key"), ("cluster",))
    return RouteConfig(
        cluster=cv.string(raw["cluster"], f"{path}.cluster"),
        match=cv.items(raw.get("match", []), f"{path}.match", _match),
        timeout=cv.duration(raw.get("timeout", DEFAULT_ROUTE_TIMEOUT), f"{path}.timeout"),
        per_try_timeout=(
            cv.duration(raw["per_try_timeout"], f"{path}.per_try_timeout") if "per_try_timeout" in raw else None
        ),
        retry=_retry(raw.get("retry", {}), f"{path}.retry"),
        hash_key=cv.string(raw["hash_key"], f"{path}.hash_key") if "hash_key" in raw else None,
    )


def _limits(value: object, path: str) -> LimitsConfig:
    raw = cv.mapping(
        value, path, ("max_frame_size", "max_in_flight", "max_connections", "idle_timeout", "frame_timeout")
    )
    defaults = LimitsConfig()

    def timeout(name: str) -> float | None:
        value = raw.get(name, getattr(defaults, name))
        return None if value is None else cv.duration(value, f"{path}.{name}")

    max_connections = raw.get("max_connections", defaults.max_connections)  # null: no limit
    return LimitsConfig(
        max_frame_size=cv.integer(raw.get("max_frame_size", defaults.max_frame_size), f"{path}.max_frame_size"),
        max_in_flight=cv.integer(raw.get("max_in_flight", defaults.max_in_flight), f"{path}.max_in_flight"),
        max_connections=None if max_connections is None else cv.integer(max_connections, f"{path}.max_connections"),
        idle_timeout=timeout("idle_timeout"),
        frame_timeout=timeout("frame_timeout"),
    )


def _listener(value: object, path: str) -> ListenerConfig:
    raw = cv.mapping(
        value,
        path,
        ("name", "address", "protocol", "routes", "limits", "options", "access_log"),
        ("name", "address", "protocol", "routes"),
    )
    return ListenerConfig(
        name=cv.string(raw["name"], f"{path}.name"),
        address=cv.address(raw["address"], f"{path}.address"),
        protocol=cv.string(raw["protocol"], f"{path}.protocol"),
        routes=cv.items(raw["routes"], f"{path}.routes", _route, non_empty=True),
        limits=_limits(raw.get("limits", {}), f"{path}.limits"),
        options=cv.options(raw.get("options", {}), f"{path}.options"),
        access_log=_access_log(raw["access_log"], f"{path}.access_log") if "access_log" in raw else None,
    )


def _access_log(value: object, path: str) -> str:
    """``true`` (the default format) or a format string, checked now."""
    from ..logs import ACCESS_LOG_FORMAT

    if value is True:
        return ACCESS_LOG_FORMAT
    text = cv.string(value, path)
    fields = dict.fromkeys(("listener", "protocol", "conn", "stream", "cluster", "endpoint", "outcome", "bytes"), "x")
    try:
        text.format(**fields, attempts=1, duration_ms=1.0)
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(path, f"bad format ({exc!r}); fields: {', '.join(fields)}, attempts, duration_ms") from None
    return text


def parse_config(data: object) -> ProxyConfig:
    """Validate a loaded document (a mapping) into a :class:`ProxyConfig`.

    Checks the cross references too: every route's cluster exists, a route
    to a hash-balanced cluster names its ``hash_key``. Whether each
    listener's protocol is installed is checked by
    :func:`~sota_dispatch.proxy.proxy.check_protocols` (it needs the registry).
    """
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the configuration must be a mapping (listeners, clusters), got {cv.show(data)}")
    raw = cv.mapping(
        data, "", ("listeners", "clusters", "drain_timeout", "admin", "overload"), ("listeners", "clusters")
    )
    listeners = cv.items(raw["listeners"], "listeners", _listener, non_empty=True)
    clusters = cv.items(raw["clusters"], "clusters", _cluster, non_empty=True)
    cv.unique([c.name for c in listeners], "listeners", "listener")
    cv.unique([c.name for c in clusters], "clusters", "cluster")
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
                raise ConfigError(f"{path}.cluster", f"unknown cluster {cv.show(route.cluster)} (clusters: {known})")
            if cluster.lb in HASH_BALANCERS and route.hash_key is None:
                raise ConfigError(
                    f"{path}.hash_key",
                    f"cluster {cv.show(cluster.name)} balances by {cluster.lb}, which needs a hash_key",
                )
    config = ProxyConfig(
        listeners=listeners,
        clusters=clusters,
        admin=admin_config(raw["admin"], "admin") if "admin" in raw else None,
        overload=_overload(raw.get("overload", {}), "overload"),
    )
    if "drain_timeout" in raw:  # else the default: the longest route timeout + 1 s
        config = attrs.evolve(config, drain_timeout=cv.duration(raw["drain_timeout"], "drain_timeout", allow_zero=True))
    return config


def admin_config(value: object, path: str) -> AdminConfig:
    """``{address, allow_remote}`` (or just the address); loopback unless allowed."""
    raw = cv.mapping({"address": value} if isinstance(value, str) else value, path, ("address", "allow_remote"))
    address = cv.address(raw.get("address", AdminConfig().address), f"{path}.address")
    allow_remote = cv.boolean(raw.get("allow_remote", False), f"{path}.allow_remote")
    host = parse_address(address)[0]
    if not allow_remote and not is_loopback(host):
        raise ConfigError(f"{path}.address", f"{address} is not loopback; set allow_remote: true to expose the admin")
    return AdminConfig(address=address, allow_remote=allow_remote)
