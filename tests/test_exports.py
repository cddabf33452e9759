"""Pin the public API so that every change to it is deliberate."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sota_dispatch
import sota_dispatch.config
import sota_dispatch.proxy

#: Each public namespace and the names it exports; a name is exported from
#: exactly one of them.
PUBLIC: dict[str, set[str]] = {
    "sota_dispatch": {
        "BufferedReader",
        "BuildInfo",
        "BufferedWriter",
        "CallAnswer",
        "ChunkBuffer",
        "ClientTLS",
        "Clock",
        "Codec",
        "CodecLoop",
        "ConfigError",
        "ConnectionContext",
        "ConnectionLost",
        "Dispatcher",
        "DispatcherFactory",
        "DuplicateFilterError",
        "DuplicateProtocolError",
        "ENTRY_POINT_GROUP",
        "Encoded",
        "Failure",
        "FrameRefused",
        "FrameSemantics",
        "FrameTimeout",
        "HandOff",
        "HandOffDeclined",
        "HandOffSink",
        "IncompleteReadError",
        "LimitExceeded",
        "Match",
        "Option",
        "OptionPlace",
        "OptionSchema",
        "Outbox",
        "PeerRefused",
        "PIECE_FROM",
        "PendingStream",
        "PluginLoadError",
        "PoolMode",
        "ProtocolError",
        "ProtocolInfo",
        "ReadTimeouts",
        "Server",
        "ServerTLS",
        "SotaError",
        "StreamLimitError",
        "StreamMultiplexer",
        "StreamTimeout",
        "UnknownFilterError",
        "UnknownProtocolError",
        "UpstreamError",
        "available_protocols",
        "build_info",
        "describe_os_error",
        "encoded_bytes",
        "encoded_size",
        "format_address",
        "get_protocol",
        "parse_address",
        "register_protocol",
        "sniff",
        "unregister_protocol",
    },
    "sota_dispatch.config": {
        "AdminConfig",
        "BALANCERS",
        "BreakerConfig",
        "ClusterConfig",
        "DEFAULT_ROUTE_TIMEOUT",
        "EndpointConfig",
        "FrozenMap",
        "HASH_BALANCERS",
        "HealthCheckConfig",
        "LimitsConfig",
        "ListenerConfig",
        "ListenerTlsConfig",
        "MatchConfig",
        "OutlierConfig",
        "OverloadConfig",
        "PoolConfig",
        "ProxyConfig",
        "RETRY_ON",
        "RetryConfig",
        "RouteConfig",
        "StreamFilterConfig",
        "ThresholdsConfig",
        "TlsCertificateConfig",
        "TracingConfig",
        "UpstreamTlsConfig",
        "XdsConfig",
        "ZooKeeperConfig",
        "admin_config",
        "config_from_upstreams",
        "load_config",
        "parse_config",
        "parse_duration",
    },
    "sota_dispatch.proxy": {
        "Balancer",
        "BreakerState",
        "BufferBudget",
        "ConfigState",
        "Endpoint",
        "EndpointBreaker",
        "LeastRequest",
        "LowestLatency",
        "Maglev",
        "ModuloHash",
        "OutlierDetector",
        "ProtocolHealth",
        "Proxy",
        "ProxyConnection",
        "RandomBalancer",
        "ReloadPlan",
        "RingHash",
        "SmoothWeightedRoundRobin",
        "hash_key",
        "pick_priority",
        "plan_reload",
    },
    "sota_dispatch.filters": {
        "FILTER_ENTRY_POINT_GROUP",
        "FaultInject",
        "FilterChain",
        "FilterContext",
        "FilterInfo",
        "FilterRequest",
        "FilterResult",
        "LocalReply",
        "LocalRateLimit",
        "Rbac",
        "StreamFilter",
        "available_filters",
        "get_filter",
        "register_filter",
        "unregister_filter",
    },
    "sota_dispatch.testing": {
        "ECHO_MARK",
        "EchoLines",
        "Exchange",
        "ManualClock",
        "MemoryByteStream",
        "ServeProcess",
        "ZooKeeperServer",
        "both_builds",
        "build_spelling",
        "check_clean_shutdown",
        "check_garbage",
        "check_sniff",
        "check_split_invariance",
        "closed_within",
        "connect",
        "connect_and_reset",
        "exchange",
        "free_port",
        "memory_stream_pair",
        "outcome",
        "pipelined",
        "plain",
        "pure_python",
        "require_zookeeper",
        "running_proxy",
        "running_with_backends",
        "send_bytewise",
        "serve_process",
        "serving",
        "tcp_stream_pair",
        "transient_bytes",
        "without_ref",
        "zookeeper_available",
        "zookeeper_server",
    },
}


def test_public_api_is_pinned() -> None:
    for namespace, names in PUBLIC.items():
        module = importlib.import_module(namespace)
        assert set(module.__all__) == names, namespace
        for name in names:
            assert hasattr(module, name), f"{namespace}.{name}"


def test_each_public_name_is_exported_once() -> None:
    seen: dict[str, str] = {}
    for namespace, names in PUBLIC.items():
        for name in names:
            assert name not in seen, f"{name} is exported by {seen[name]} and {namespace}"
            seen[name] = namespace


def test_the_0_1_top_level_names_resolve_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="sota_dispatch.ProxyConfig is now sota_dispatch.config.ProxyConfig"):
        moved = sota_dispatch.ProxyConfig
    assert moved is sota_dispatch.config.ProxyConfig
    with pytest.warns(DeprecationWarning, match="sota_dispatch.proxy.Proxy"):
        assert sota_dispatch.Proxy is sota_dispatch.proxy.Proxy
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        sota_dispatch.Nonesuch  # noqa: B018


def test_every_module_declares_all_and_exports_exist() -> None:
    for module_info in pkgutil.walk_packages(sota_dispatch.__path__, "sota_dispatch."):
        if module_info.name == "sota_dispatch.serve":
            continue  # importing it as a module is fine, but it is the CLI
        if module_info.name.endswith("__mypyc"):
            continue  # a compiled build's shared runtime library, not a module of ours
        module = importlib.import_module(module_info.name)
        assert hasattr(module, "__all__"), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_errors_share_one_root() -> None:
    for name in PUBLIC["sota_dispatch"]:
        obj = getattr(sota_dispatch, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, sota_dispatch.SotaError), name
