"""Pin the public API so that every change to it is deliberate."""

from __future__ import annotations

import importlib
import pkgutil

import sota_dispatch

PUBLIC = {
    "HealthCheckConfig",
    "AdminConfig",
    "ThresholdsConfig",
    "BreakerConfig",
    "BreakerState",
    "EndpointBreaker",
    "Outbox",
    "OutlierConfig",
    "OutlierDetector",
    "ProtocolHealth",
    "ClusterConfig",
    "ConfigError",
    "EndpointConfig",
    "LimitsConfig",
    "OverloadConfig",
    "BufferBudget",
    "FrameRefused",
    "ListenerConfig",
    "MatchConfig",
    "PoolConfig",
    "ProxyConfig",
    "RetryConfig",
    "RouteConfig",
    "config_from_upstreams",
    "load_config",
    "parse_config",
    "Codec",
    "Clock",
    "CodecLoop",
    "Failure",
    "FrameSemantics",
    "Option",
    "OptionPlace",
    "OptionSchema",
    "PoolMode",
    "Proxy",
    "ProxyConnection",
    "ENTRY_POINT_GROUP",
    "Balancer",
    "BufferedReader",
    "FrameTimeout",
    "ReadTimeouts",
    "BufferedWriter",
    "ChunkBuffer",
    "ConnectionContext",
    "ConnectionLost",
    "Dispatcher",
    "DispatcherFactory",
    "DuplicateProtocolError",
    "Endpoint",
    "IncompleteReadError",
    "LeastRequest",
    "LimitExceeded",
    "LowestLatency",
    "Maglev",
    "Match",
    "ModuloHash",
    "PendingStream",
    "PluginLoadError",
    "ProtocolError",
    "ProtocolInfo",
    "RandomBalancer",
    "RingHash",
    "Server",
    "SmoothWeightedRoundRobin",
    "SotaError",
    "StreamLimitError",
    "StreamMultiplexer",
    "StreamTimeout",
    "UnknownProtocolError",
    "UpstreamError",
    "available_protocols",
    "format_address",
    "get_protocol",
    "hash_key",
    "parse_address",
    "pick_priority",
    "register_protocol",
    "sniff",
    "unregister_protocol",
}


def test_public_api_is_pinned() -> None:
    assert set(sota_dispatch.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(sota_dispatch, name), name


def test_every_module_declares_all_and_exports_exist() -> None:
    for module_info in pkgutil.walk_packages(sota_dispatch.__path__, "sota_dispatch."):
        if module_info.name == "sota_dispatch.serve":
            continue  # importing it as a module is fine, but it is the CLI
        module = importlib.import_module(module_info.name)
        assert hasattr(module, "__all__"), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_errors_share_one_root() -> None:
    for name in PUBLIC:
        obj = getattr(sota_dispatch, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, sota_dispatch.SotaError), name
