"""sota-dispatch: the dispatcher SDK for custom-protocol proxies.

Subclass :class:`Dispatcher`, implement ``serve()``, and the SDK provides the
buffered reader and writer, the request-id multiplexer, the listener and the
``python -m sota_dispatch.serve`` command line.
"""

from __future__ import annotations

from .address import format_address, parse_address
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
    "BufferedReader",
    "BufferedWriter",
    "ConnectionContext",
    "ConnectionLost",
    "Dispatcher",
    "DispatcherFactory",
    "DuplicateProtocolError",
    "IncompleteReadError",
    "LimitExceeded",
    "Match",
    "PendingStream",
    "PluginLoadError",
    "ProtocolError",
    "ProtocolInfo",
    "Server",
    "SotaError",
    "StreamLimitError",
    "StreamMultiplexer",
    "StreamTimeout",
    "UnknownProtocolError",
    "UpstreamError",
    "available_protocols",
    "format_address",
    "get_protocol",
    "parse_address",
    "register_protocol",
    "sniff",
    "unregister_protocol",
]
