"""sota-dispatch: the dispatcher SDK for custom-protocol proxies.

Subclass :class:`Dispatcher`, declare its codec and frame semantics (or
implement ``serve()``), and the SDK provides the buffered reader and writer,
the core's codec loop, the request-id multiplexer, the listener and the
``python -m sota_dispatch.serve`` command line.

Public namespaces, each name exported from exactly one of them: this one
(the SDK: protocol classes, I/O, registry, server, errors),
:mod:`sota_dispatch.config` (the proxy's configuration),
:mod:`sota_dispatch.proxy` (the proxy, its balancers and health) and
:mod:`sota_dispatch.testing` (helpers for protocol authors).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .compiled import BuildInfo, build_info
from .errors import (
    ConfigError,
    ConnectionLost,
    DuplicateFilterError,
    DuplicateProtocolError,
    FrameTimeout,
    IncompleteReadError,
    LimitExceeded,
    PluginLoadError,
    ProtocolError,
    SotaError,
    StreamLimitError,
    StreamTimeout,
    UnknownFilterError,
    UnknownProtocolError,
    UpstreamError,
    describe_os_error,
)
from .io.address import format_address, parse_address
from .io.budget import FrameRefused
from .io.chunks import ChunkBuffer
from .io.clock import Clock
from .io.outbox import Outbox
from .io.reader import BufferedReader
from .io.timeouts import ReadTimeouts
from .io.tls import ClientTLS, PeerRefused, ServerTLS
from .io.writer import PIECE_FROM, BufferedWriter, Encoded, encoded_bytes, encoded_size
from .protocol.calls import CallAnswer
from .protocol.codec import Codec, Failure, PoolMode
from .protocol.context import ConnectionContext
from .protocol.dispatcher import Dispatcher
from .protocol.handoff import HandOff, HandOffDeclined, HandOffSink
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

__version__ = "0.1.1"

__all__ = [
    "ENTRY_POINT_GROUP",
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
    "describe_os_error",
    "ConnectionContext",
    "ConnectionLost",
    "Dispatcher",
    "DispatcherFactory",
    "DuplicateFilterError",
    "DuplicateProtocolError",
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
    "encoded_bytes",
    "encoded_size",
    "format_address",
    "get_protocol",
    "parse_address",
    "register_protocol",
    "sniff",
    "unregister_protocol",
]

#: 0.1 exported the proxy's and the config's names here too; they still
#: resolve, with a DeprecationWarning naming their one home.
_MOVED = {
    **dict.fromkeys(
        [
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
            "config_from_upstreams",
            "load_config",
            "parse_config",
        ],
        "sota_dispatch.config",
    ),
    **dict.fromkeys(
        [
            "Proxy",
            "ProxyConnection",
            "BufferBudget",
            "Balancer",
            "Endpoint",
            "LeastRequest",
            "LowestLatency",
            "Maglev",
            "ModuloHash",
            "RandomBalancer",
            "RingHash",
            "SmoothWeightedRoundRobin",
            "hash_key",
            "pick_priority",
            "BreakerState",
            "EndpointBreaker",
            "OutlierDetector",
            "ProtocolHealth",
        ],
        "sota_dispatch.proxy",
    ),
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'sota_dispatch' has no attribute {name!r}")
    warnings.warn(f"sota_dispatch.{name} is now {home}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)
