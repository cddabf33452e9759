"""sota-dispatch: the dispatcher SDK for custom-protocol proxies.

Subclass :class:`Dispatcher`, implement ``serve()``, and the SDK provides the
buffered reader and writer, the request-id multiplexer, the listener and the
``python -m sota_dispatch.serve`` command line.
"""

from __future__ import annotations

from .address import format_address, parse_address
from .balancers import (
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
from .dispatcher import ConnectionContext, Dispatcher
from .errors import (
    ConnectionLost,
    DuplicateProtocolError,
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
from .multiplexer import PendingStream, StreamMultiplexer
from .reader import BufferedReader
from .registry import (
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
from .server import Server
from .writer import BufferedWriter

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Balancer",
    "BufferedReader",
    "BufferedWriter",
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
]
