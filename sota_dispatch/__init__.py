"""sota-dispatch: the dispatcher SDK for custom-protocol proxies.

Subclass :class:`Dispatcher`, implement ``serve()``, and the SDK provides the
buffered reader and writer, the request-id multiplexer, the listener and the
``python -m sota_dispatch.serve`` command line.
"""

from __future__ import annotations

from .cluster.balancers import (
    Balancer,
    Endpoint,
    LeastRequest,
    LowestLatency,
    Maglev,
    ModuloHash,
    RandomBalancer,
    RingHash,
    SmoothWeightedRoundRobin,
    hash_key,
    pick_priority,
)
from .cluster.health import BreakerState, EndpointBreaker, OutlierDetector, ProtocolHealth
from .config import (
    AdminConfig,
    BreakerConfig,
    ClusterConfig,
    ConfigError,
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
    config_from_upstreams,
    load_config,
    parse_config,
)
from .errors import (
    ConnectionLost,
    DuplicateProtocolError,
    FrameTimeout,
    IncompleteReadError,
    LimitExceeded,
    PluginLoadError,
    ProtocolError,
    SotaError,
    StreamLimitError,
    StreamTimeout,
    UnknownProtocolError,
    UpstreamError,
)
from .io.address import format_address, parse_address
from .io.budget import BufferBudget, FrameRefused
from .io.chunks import ChunkBuffer
from .io.clock import Clock
from .io.outbox import Outbox
from .io.reader import BufferedReader, ReadTimeouts
from .io.writer import BufferedWriter
from .protocol.codec import Codec, Failure, PoolMode
from .protocol.context import ConnectionContext
from .protocol.dispatcher import Dispatcher
from .protocol.loop import CodecLoop
from .protocol.multiplexer import PendingStream, StreamMultiplexer
from .protocol.options import Option, OptionPlace, OptionSchema
from .protocol.registry import (
    ENTRY_POINT_GROUP,
    DispatcherFactory,
    Match,
    ProtocolInfo,
    available_protocols,
    get_protocol,
    register_protocol,
    sniff,
    unregister_protocol,
)
from .protocol.semantics import FrameSemantics
from .protocol.server import Server
from .proxy.connection import ProxyConnection
from .proxy.proxy import Proxy

__version__ = "0.1.1"

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdminConfig",
    "Balancer",
    "BreakerConfig",
    "BreakerState",
    "BufferedReader",
    "FrameTimeout",
    "ReadTimeouts",
    "BufferedWriter",
    "ChunkBuffer",
    "Codec",
    "CodecLoop",
    "Clock",
    "ClusterConfig",
    "ConfigError",
    "ConnectionContext",
    "ConnectionLost",
    "Dispatcher",
    "DispatcherFactory",
    "DuplicateProtocolError",
    "Endpoint",
    "EndpointBreaker",
    "EndpointConfig",
    "Failure",
    "HealthCheckConfig",
    "IncompleteReadError",
    "LeastRequest",
    "LimitExceeded",
    "LimitsConfig",
    "OverloadConfig",
    "BufferBudget",
    "FrameRefused",
    "FrameSemantics",
    "ListenerConfig",
    "LowestLatency",
    "Maglev",
    "Match",
    "MatchConfig",
    "ModuloHash",
    "Option",
    "OptionPlace",
    "OptionSchema",
    "Outbox",
    "OutlierConfig",
    "OutlierDetector",
    "ProtocolHealth",
    "PendingStream",
    "PluginLoadError",
    "PoolConfig",
    "PoolMode",
    "ProtocolError",
    "ProtocolInfo",
    "Proxy",
    "ProxyConfig",
    "ProxyConnection",
    "RandomBalancer",
    "RetryConfig",
    "RingHash",
    "RouteConfig",
    "Server",
    "SmoothWeightedRoundRobin",
    "SotaError",
    "StreamLimitError",
    "StreamMultiplexer",
    "StreamTimeout",
    "ThresholdsConfig",
    "UnknownProtocolError",
    "UpstreamError",
    "available_protocols",
    "config_from_upstreams",
    "format_address",
    "get_protocol",
    "hash_key",
    "load_config",
    "parse_address",
    "parse_config",
    "pick_priority",
    "register_protocol",
    "sniff",
    "unregister_protocol",
]
