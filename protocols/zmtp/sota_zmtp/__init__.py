"""sota-zmtp: ZeroMQ's ZMTP 2.0 and 3.x in pure Python, as a sota-dispatch plugin.

No libzmq: a sans-I/O :class:`ZmtpEngine` (greeting negotiation the way
libzmq does it, NULL and PLAIN handshakes, framing, PING/PONG), the
protocol's class :class:`ZmtpDispatcher` (options, codecs and what the
bundled proxy needs), a :class:`Router` for
ROUTER sockets served by :class:`sota_dispatch.Server`, and the ``zmtp``
protocol for ``python -m sota_dispatch.serve``: a ROUTER that echoes every
message back to its sender. A :class:`Dealer` connects out to ZeroMQ
services, reconnecting with backoff.
"""

from __future__ import annotations

from .connection import Heartbeat
from .dealer import Dealer, DealerConnection
from .dispatcher import ZmtpDispatcher, zmtp_error_reply
from .engine import Authenticator, DowngradeRefused, Limits, PeerError, ZmtpEngine, generate_identity
from .router import (
    EchoRouter,
    HighWaterMarkError,
    Router,
    RouterConnection,
    UnroutableError,
    ZmtpEchoDispatcher,
)
from .wire import SocketType, encode_message

__all__ = [
    "Authenticator",
    "Dealer",
    "DealerConnection",
    "EchoRouter",
    "Heartbeat",
    "HighWaterMarkError",
    "Limits",
    "DowngradeRefused",
    "PeerError",
    "Router",
    "RouterConnection",
    "SocketType",
    "UnroutableError",
    "ZmtpDispatcher",
    "ZmtpEchoDispatcher",
    "ZmtpEngine",
    "encode_message",
    "generate_identity",
    "zmtp_error_reply",
]
