"""The proxy's configuration: immutable, hashable values checked when they
are built (:mod:`.model`, with the rules of :mod:`.values`), read from a
mapping (:mod:`.parse`) or a YAML file in the native shape or as an Envoy v3
bootstrap (:mod:`.load`, :mod:`.envoy`). Every error is a
:class:`~sota_dispatch.ConfigError` naming the path of the value, and a
configuration with several problems reports them all in one.

This package's face is the public config namespace.
"""

from __future__ import annotations

from .discovery import XdsConfig, ZooKeeperConfig
from .frozen import FrozenMap
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
    StreamFilterConfig,
    ThresholdsConfig,
)
from .parse import admin_config, parse_config
from .tls import ListenerTlsConfig, TlsCertificateConfig, UpstreamTlsConfig
from .tracing import TracingConfig
from .values import parse_duration

__all__ = [
    "BALANCERS",
    "DEFAULT_ROUTE_TIMEOUT",
    "HASH_BALANCERS",
    "RETRY_ON",
    "AdminConfig",
    "BreakerConfig",
    "ClusterConfig",
    "EndpointConfig",
    "FrozenMap",
    "HealthCheckConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerTlsConfig",
    "MatchConfig",
    "OutlierConfig",
    "OverloadConfig",
    "PoolConfig",
    "ProxyConfig",
    "RetryConfig",
    "RouteConfig",
    "StreamFilterConfig",
    "ThresholdsConfig",
    "TracingConfig",
    "TlsCertificateConfig",
    "UpstreamTlsConfig",
    "XdsConfig",
    "ZooKeeperConfig",
    "admin_config",
    "config_from_upstreams",
    "load_config",
    "parse_config",
    "parse_duration",
]
