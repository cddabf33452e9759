"""What the cluster layer needs of the requests it carries, declared here.

The proxy's exchanges (the layer above) are the requests, subclasses of
:class:`Request`; the cluster layer sees them only through it, so it
imports nothing from above. The same, as protocols, for the client
connection that owns per-client pools (:class:`PoolOwner`), and, within
this layer, for the cluster as its pools see it (:class:`PoolSite`): the
contract between them, in one place.
"""

from __future__ import annotations

from typing import Any, Protocol

from anyio.abc import TaskGroup

from ..config.model import ClusterConfig, ThresholdsConfig
from ..io.budget import BufferBudget
from ..io.clock import Clock
from ..io.outbox import Outbox
from ..io.tls import ClientTLS
from .balancers import Endpoint

__all__ = ["PoolOwner", "PoolSite", "Request"]


class Request:
    """One request's current try, as a pool and an upstream connection see it.

    A base class, not a protocol: the proxy's exchange subclasses it, and in
    the compiled build the pools then read these fields and call these
    methods directly (through a protocol, each was a lookup by name, six
    or so per request).
    """

    __slots__ = ("attempt", "done", "frame", "oneway", "upstream", "upstream_id")

    def __init__(self, frame: Any, oneway: bool) -> None:
        #: The decoded request (None once it ended).
        self.frame = frame
        self.oneway = oneway
        #: The try number (a late answer to an earlier try is dropped).
        self.attempt = 0
        #: The upstream connection the current try was sent on (a
        #: :class:`~.pool.UpstreamConnection`, which this module cannot name
        #: without importing the module that imports it), and its id there.
        self.upstream: Any = None
        self.upstream_id = 0
        self.done = False

    def live(self, attempt: int) -> bool:
        """Is try ``attempt`` the current one of an unfinished request?"""
        return not self.done and self.attempt == attempt

    def try_failed(self, kind: str, failure: Any, detail: str = "", public: str = "") -> None:
        """The current try failed (``kind`` as in a retry policy's ``retry_on``)."""
        raise NotImplementedError

    def on_response(self, response: Any, now: float) -> None:
        """The upstream answered the current try."""
        raise NotImplementedError

    def sent_oneway(self) -> None:
        """A oneway request was written: it is done."""
        raise NotImplementedError

    def abandon(self) -> None:
        """End without a reply (its client, or its pool, is gone)."""
        raise NotImplementedError


class PoolOwner(Protocol):
    """A client connection that owns pools of its own (see ``PoolConfig.shared``)."""

    #: Its pools (:class:`~.pool.Pool`), by cluster and endpoint; closed with it.
    upstream_pools: dict[tuple[Any, Any], Any]


class PoolSite(Protocol):
    """The cluster, as its pools and their connections use it."""

    name: str
    config: ClusterConfig
    thresholds: ThresholdsConfig
    #: Where connections written to in a batch are noted for one send each.
    outbox: Outbox
    #: The process's buffer budget (upstream connections count in it).
    budget: BufferBudget
    #: What answers are timed on.
    clock: Clock
    #: TLS to the endpoints (None: plaintext).
    tls: ClientTLS | None
    #: Where connections run (None until the proxy starts).
    task_group: TaskGroup | None
    #: Kept exact by the pools: connections open or opening, requests queued.
    open_connections: int
    queued: int
    overflows: int

    def pending_requests(self) -> int:
        """Requests waiting for a connection (not those that gave up)."""
        ...

    def connect_failed(self, endpoint: Endpoint, protocol: str, error: BaseException) -> None:
        """Connecting to ``endpoint`` for ``protocol`` failed."""
        ...

    def connected(self, endpoint: Endpoint, protocol: str) -> None:
        """A connection to ``endpoint`` completed its handshake."""
        ...

    def pool_closed(self, pool: Any) -> None:
        """A client connection's own pool is done."""
        ...

    def close_an_idle_client_connection(self) -> bool:
        """Make room under ``max_connections``; False if all are busy."""
        ...
