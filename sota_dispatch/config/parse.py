"""Reading a loaded document (a mapping) into a :class:`~.model.ProxyConfig`.

Each key is read by its field's rule in the model (:class:`~.values.Rule`),
so the parser repeats no rule and no default: a key left out gets the
model's default. Unknown keys are errors, never ignored; every error names
its path, and every problem of a document is reported at once, in the
document's order, in one :class:`~sota_dispatch.ConfigError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from .discovery import XdsConfig, ZooKeeperConfig
from .model import (
    AdminConfig,
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
    StreamFilterConfig,
    ThresholdsConfig,
    reference_problems,
)
from .tls import ListenerTlsConfig, TlsCertificateConfig, UpstreamTlsConfig
from .tracing import TracingConfig

__all__ = ["admin_config", "cluster_config", "endpoint_config", "listener_config", "parse_config"]

C = TypeVar("C", bound=AttrsInstance)

#: A reader of one value: ``read(value, path)``.
Reader = Callable[[object, str], Any]

_NO_READERS: Mapping[str, Reader] = MappingProxyType({})


def _rule(cls: type[AttrsInstance], name: str) -> cv.Rule:
    rule = attrs.fields_dict(cls)[name].validator
    if not isinstance(rule, cv.Rule):
        raise TypeError(f"{cls.__name__}.{name} has no config rule")
    return rule


def _read(
    cls: type[C], value: object, path: str, readers: Mapping[str, Reader], entries: Mapping[str, Reader]
) -> tuple[dict[str, Any], list[ConfigError]]:
    """The fields of ``cls`` read from the mapping ``value``, and every problem.

    A key is read by ``readers[key]`` (a config object within), or by its
    field's rule, with ``entries[key]`` reading each entry of a list.
    """
    fields = attrs.fields_dict(cls)
    required = [name for name, field in fields.items() if field.default is attrs.NOTHING]
    raw, errors = cv.fields(value, path, list(fields), required)
    values: dict[str, Any] = {}
    for name, item in raw.items():
        where = cv.join(path, name)
        try:
            if name in readers:
                values[name] = readers[name](item, where)
            elif name in entries:
                values[name] = _rule(cls, name).check(item, where, parse=entries[name])
            else:
                values[name] = _rule(cls, name).check(item, where)
        except ConfigError as exc:
            errors += exc.errors
    return values, errors


def _build(cls: type[C], path: str, values: dict[str, Any], errors: list[ConfigError]) -> C:
    """``cls(**values)`` unless there are problems; its own checks' problems
    (across its fields) named within ``path``."""
    if errors:
        raise ConfigError.combine(errors)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise cv.within(exc, path) from None


def _object(
    cls: type[C],
    value: object,
    path: str,
    readers: Mapping[str, Reader] = _NO_READERS,
    entries: Mapping[str, Reader] = _NO_READERS,
) -> C:
    values, errors = _read(cls, value, path, readers, entries)
    return _build(cls, path, values, errors)


def _reader(cls: type[C], *, null_is_default: bool = False) -> Callable[[object, str], C]:
    """A reader of a mapping into ``cls``; ``null_is_default``: a null (a key
    with no value, ``endpoint_breaker:``) means every default."""

    def read(value: object, path: str) -> C:
        return _object(cls, {} if value is None and null_is_default else value, path)

    return read


def endpoint_config(value: object, path: str) -> EndpointConfig:
    """An endpoint: ``{address, weight, priority}``, or just the address."""
    if isinstance(value, str):  # shorthand: just the address, named by the entry's path
        return _build(EndpointConfig, path, {"address": _rule(EndpointConfig, "address").check(value, path)}, [])
    return _object(EndpointConfig, value, path)


_cluster_parts = {
    "pool": _reader(PoolConfig),
    "circuit_breakers": _reader(ThresholdsConfig, null_is_default=True),
    "endpoint_breaker": _reader(BreakerConfig, null_is_default=True),
    "outlier_detection": _reader(OutlierConfig, null_is_default=True),
    "health_check": _reader(HealthCheckConfig, null_is_default=True),
    "tls": _reader(UpstreamTlsConfig),
    "zookeeper": _reader(ZooKeeperConfig),
}


def _listener_tls(value: object, path: str) -> ListenerTlsConfig:
    return _object(ListenerTlsConfig, value, path, entries={"certificates": _reader(TlsCertificateConfig)})


def _cluster(value: object, path: str) -> ClusterConfig:
    return _object(ClusterConfig, value, path, _cluster_parts, {"endpoints": endpoint_config})


def _route(value: object, path: str) -> RouteConfig:
    return _object(RouteConfig, value, path, {"retry": _reader(RetryConfig)}, {"match": _reader(MatchConfig)})


def _listener(value: object, path: str) -> ListenerConfig:
    entries = {"routes": _route, "stream_filters": _reader(StreamFilterConfig)}
    readers = {
        "limits": _reader(LimitsConfig),
        "tls": _listener_tls,
        "tracing": _reader(TracingConfig, null_is_default=True),
    }
    return _object(ListenerConfig, value, path, readers, entries)


def cluster_config(value: object, path: str) -> ClusterConfig:
    """One cluster document (as in a file's ``clusters``), checked."""
    return _cluster(value, path)


def listener_config(value: object, path: str) -> ListenerConfig:
    """One listener document (as in a file's ``listeners``), checked."""
    return _listener(value, path)


def admin_config(value: object, path: str) -> AdminConfig:
    """``{address, allow_remote}`` (or just the address); loopback unless allowed."""
    return _object(AdminConfig, {"address": value} if isinstance(value, str) else value, path)


def parse_config(data: object) -> ProxyConfig:
    """Validate a loaded document (a mapping) into a :class:`ProxyConfig`.

    Checks the cross references too: every route's cluster exists, a route
    to a hash-balanced cluster names its ``hash_key``. Whether each
    listener's protocol is installed is checked by
    :func:`~sota_dispatch.proxy.proxy.check_protocols` (it needs the registry).
    Every problem is reported: one :class:`ConfigError` for one, and one
    listing them all, in the document's order, for several.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("", f"the configuration must be a mapping (listeners, clusters), got {cv.show(data)}")
    try:
        return _proxy(data)
    except ConfigError as exc:
        raise ConfigError.combine(cv.in_file_order(exc.errors, data)) from None


def _proxy(data: Mapping[Any, Any]) -> ProxyConfig:
    """The whole configuration. When some listeners or clusters cannot be
    read, the checks across objects still run on what could be: the others,
    the names of clusters with problems, and the routes of listeners with
    problems."""
    item_errors: list[ConfigError] = []
    routes: list[tuple[str, RouteConfig]] = []  # those of listeners with problems

    def listener(value: object, path: str) -> ListenerConfig | None:
        try:
            return _listener(value, path)
        except ConfigError as exc:
            item_errors.extend(exc.errors)
        entries = value.get("routes") if isinstance(value, Mapping) else None
        for j, entry in enumerate(entries if isinstance(entries, list) else ()):
            with contextlib.suppress(ConfigError):  # reported already
                routes.append((f"{path}.routes[{j}]", _route(entry, f"{path}.routes[{j}]")))
        return None

    def cluster(value: object, path: str) -> ClusterConfig | str | None:
        try:
            return _cluster(value, path)
        except ConfigError as exc:
            item_errors.extend(exc.errors)
        name = value.get("name") if isinstance(value, Mapping) else None
        return name if isinstance(name, str) and name else None

    values, errors = _read(
        ProxyConfig,
        data,
        "",
        {"admin": admin_config, "overload": _reader(OverloadConfig), "xds": _reader(XdsConfig)},
        {"listeners": listener, "clusters": cluster},
    )
    errors += item_errors
    if errors:
        if "listeners" in values and "clusters" in values:
            errors += reference_problems(values["listeners"], values["clusters"], routes)
        raise ConfigError.combine(errors)
    return _build(ProxyConfig, "", values, [])
