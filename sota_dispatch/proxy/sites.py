"""What the request path's parts need of one another, declared in one place.

A client connection sees its listener, and an exchange its client
connection, through these protocols rather than through the classes: the
modules then import one another only downward (the listener builds its
connections, a connection its exchanges), and each contract is written
down where it can be read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from ..cluster.balancers import Endpoint
from ..cluster.stats import ListenerStats
from ..config.model import ListenerConfig
from ..io.budget import BufferBudget
from ..io.clock import Clock
from ..io.outbox import Outbox
from ..io.writer import Encoded
from ..logs import RateLimitedLog
from ..protocol.codec import Failure
from ..protocol.context import ConnectionContext
from ..protocol.registry import ProtocolInfo
from ..protocol.semantics import BoundSemantics, FrameSemantics
from .policy import RequestPolicy
from .routing import Route
from .timers import TimerQueue

__all__ = ["Downstream", "Ending", "ListenerSite", "Observer"]


class ListenerSite(Protocol):
    """A listener, as its client connections use it."""

    name: str
    config: ListenerConfig
    #: The listener's protocol class (None: ``auto``, detected per connection).
    protocol: type[FrameSemantics] | None
    #: What ``auto`` may detect: ``(name, info)`` of every candidate.
    candidates: list[tuple[str, ProtocolInfo]]
    #: Its routes, stream filters and observer, in one object a reload
    #: changes in place (a connection keeps it; see :mod:`.policy`).
    policy: RequestPolicy
    stats: ListenerStats
    failure_log: RateLimitedLog
    overflow_log: RateLimitedLog
    #: The proxy's, shared by every listener.
    timers: TimerQueue
    clock: Clock
    outbox: Outbox
    budget: BufferBudget
    drain_timeout: float

    def protocol_named(self, name: object) -> type[FrameSemantics] | None:
        """The protocol called ``name`` if this listener speaks it (None: it does not)."""
        ...


class Downstream(Protocol):
    """A client connection, as its exchanges use it."""

    context: ConnectionContext
    listener: ListenerSite
    #: The client's protocol class (None until ``auto`` has detected it).
    protocol: type[FrameSemantics] | None
    #: Its per-frame methods, bound (None as long as :attr:`protocol` is).
    semantics: BoundSemantics | None
    #: True once the client is gone: late answers are dropped.
    closed: bool
    #: Its own upstream pools (a :class:`~sota_dispatch.cluster.request.PoolOwner`).
    upstream_pools: dict[tuple[Any, Any], Any]

    def failure_reply(self, frame: Any, failure: Failure, stream: int, public: str = "", detail: str = "") -> bytes:
        """The protocol's error reply to request ``stream``, logged."""
        ...

    def exchange_done(self, exchange: Any, data: Encoded) -> None:
        """An exchange ended with ``data`` for the client."""
        ...

    def close_soon(self) -> None:
        """Stop serving the client and close its connection."""
        ...


class Ending(Protocol):
    """An exchange at its end, as an :data:`Observer` reads it."""

    downstream: Downstream
    #: The request's number on its client connection.
    stream: int
    route: Route
    #: The endpoint of the last try (None: none was tried).
    last_tried: Endpoint | None

    @property
    def tried(self) -> list[Endpoint]:
        """The endpoints tried, in order."""
        ...

    #: Tries made.
    attempt: int
    #: When the last try started (the proxy clock's scale).
    try_started: float
    #: The request (still there while the observer runs).
    frame: Any


#: ``observer(exchange, data, outcome, now, elapsed, response)``: a request
#: ended with ``data`` for the client (``outcome``: ``success`` or a
#: failure's name; ``now`` and ``elapsed`` on the proxy's clock; the
#: upstream's ``response`` frame, None for a failure).
Observer: TypeAlias = Callable[[Ending, Encoded, str, float, float, Any], None]
