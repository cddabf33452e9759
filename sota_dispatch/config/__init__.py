"""The proxy's configuration: immutable, validated values (:mod:`.model`),
read from a mapping (:mod:`.parse`) or a YAML file in the native shape or as
an Envoy v3 bootstrap (:mod:`.load`, :mod:`.envoy`). Every error is a
:class:`~sota_dispatch.ConfigError` naming the path of the value.

This package's face is the public config namespace.
"""

from __future__ import annotations

from ..errors import ConfigError
from .load import config_from_upstreams, load_config
from .model import (
    BALANCERS,
    DEFAULT_ROUTE_TIMEOUT,
    HASH_BALANCERS,
    RETRY_ON,
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
    ThresholdsConfig,
)
from .parse import admin_config, parse_config
from .values import parse_duration

__all__ = [
    "BALANCERS",
    "DEFAULT_ROUTE_TIMEOUT",
    "HASH_BALANCERS",
    "RETRY_ON",
    "AdminConfig",
    "BreakerConfig",
    "ClusterConfig",
    "ConfigError",
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
    "admin_config",
    "config_from_upstreams",
    "load_config",
    "parse_config",
    "parse_duration",
]
