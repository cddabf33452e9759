"""The whole proxy process: its listeners, clusters, timers and admin endpoint.

:class:`Proxy` runs a :class:`~sota_dispatch.config.ProxyConfig`: one
:class:`~.listener.Listener` (and :class:`~sota_dispatch.Server`) per
listener, the clusters and their upstream connections, the timer task, and
the admin endpoint if configured. On shutdown, listeners stop accepting,
client connections stop reading and finish their requests in flight, up to
the drain timeout; the admin answers until the end.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..admin.endpoint import AdminEndpoint
from ..admin.metrics import registry
from ..cluster.checks import run_health_checks
from ..cluster.cluster import Cluster
from ..config.model import ProxyConfig
from ..errors import ConfigError
from ..io.budget import BufferBudget
from ..io.clock import SYSTEM_CLOCK, Clock
from ..io.outbox import Outbox
from ..protocol.dispatcher import Dispatcher
from ..protocol.handoff import HandOff
from ..protocol.semantics import FrameSemantics
from .filtering import check_filters
from .listener import Listener, check_protocols
from .security import ProxyTLS
from .timers import TimerQueue

__all__ = ["Proxy"]

log = logging.getLogger(__name__)


def _shed(holder: object) -> None:
    """Close a connection the buffer budget sheds (it holds the most)."""
    assert isinstance(holder, Dispatcher)
    holder.abort()


class Proxy:
    """A whole proxy process: listeners, clusters, timers, and the admin endpoint.

    ``await task_group.start(proxy.serve)`` returns ``{listener name: bound
    HOST:PORT}`` once every listener (and the admin endpoint) is bound;
    :meth:`shutdown` drains. Raises :class:`~sota_dispatch.ConfigError` at
    once for a protocol that is not installed or cannot be proxied.

    ``sockets``: listening sockets by listener name, accepted on instead of
    binding the listener's address (a worker's, from its supervisor).
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sockets: Mapping[str, Sequence[socket.socket]] | None = None,
    ) -> None:
        self.config = config
        protocols = check_protocols(config)
        check_filters(config)
        #: Every listener's and cluster's TLS (files read now: a problem is a ConfigError).
        self.tls = ProxyTLS.load(config)
        #: What deadlines, breakers, ejections, retries and health checks run on.
        self.clock = clock
        self.timers = TimerQueue(clock)
        #: Connections written to during a batch, flushed at its end.
        self.outbox = Outbox()
        overload = config.overload
        #: What all connections hold of partial frames, against the budget.
        self.budget = BufferBudget(overload.buffer_budget, large_frame=overload.large_frame, shed=_shed)
        self.clusters = {
            c.name: Cluster(c, outbox=self.outbox, budget=self.budget, clock=clock, tls=self.tls.clusters.get(c.name))
            for c in config.clusters
        }
        given = sockets or {}
        self._listeners = [Listener(c, self, protocols[c.name], sockets=given.get(c.name)) for c in config.listeners]
        self.addresses: dict[str, str] = {}
        #: The admin endpoint (None: not configured).
        self._metrics: Any = None
        self.admin = None if config.admin is None else AdminEndpoint.for_proxy(self, config.admin, self.metrics)
        self._shutdown = False

    @property
    def listeners(self) -> list[Listener]:
        return self._listeners

    @property
    def admin_address(self) -> str | None:
        """The admin endpoint's bound ``HOST:PORT`` once serving (None: no admin)."""
        return None if self.admin is None else self.admin.address

    async def serve(self, *, task_status: TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until :meth:`shutdown`, drain, return."""
        async with anyio.create_task_group() as upstream:
            for cluster in self.clusters.values():
                cluster.task_group = upstream
            upstream.start_soon(self.timers.run, name="proxy timers")
            for cluster in self.clusters.values():
                if cluster.config.health_check is not None:
                    upstream.start_soon(run_health_checks, cluster, self._checked_protocol(cluster.name))
            async with anyio.create_task_group() as listeners:
                for i, listener in enumerate(self._listeners):
                    try:
                        self.addresses[listener.name] = await listeners.start(listener.server.serve)
                    except OSError as exc:
                        raise ConfigError(
                            f"listeners[{i}].address",
                            f"cannot listen on {listener.config.address}: {exc.strerror or exc}",
                        ) from None
                if self.admin is not None:  # in the outer group: it answers while the listeners drain
                    await upstream.start(self.admin.serve)
                task_status.started(dict(self.addresses))
                if self._shutdown:
                    self.shutdown()
            # Every client connection is closed: late upstream answers have
            # nobody to go to, so the upstream connections go too.
            upstream.cancel_scope.cancel()

    def reload_certificates(self) -> list[ConfigError]:
        """Read every TLS file again (SIGHUP, the admin's
        ``/reload_certificates``): new connections use the new
        certificates, open ones go on with theirs. Returns the problems
        (each keeps the old certificates where it failed)."""
        return self.tls.reload()

    def shutdown(self) -> None:
        """Stop accepting; let in-flight requests finish (up to the drain timeout)."""
        self._shutdown = True
        for listener in self._listeners:
            listener.server.shutdown()

    def stop_accepting(self) -> None:
        """Stop accepting; serve the open connections until their clients
        close them or :meth:`shutdown` drains them (hot restart)."""
        for listener in self._listeners:
            listener.server.stop_accepting()

    def hand_off(self, sink: Callable[[str, HandOff], Awaitable[None]]) -> int:
        """Move every client connection that can move to another process
        (hot restart hand-off); ``sink(listener name, hand_off)`` takes each.
        Returns how many were asked to move; the others go on here."""
        moving = 0
        for listener in self._listeners:

            async def to(handoff: HandOff, name: str = listener.name) -> None:
                await sink(name, handoff)

            moving += listener.server.hand_off(to)
        return moving

    def adopt(self, listener: str, sock: socket.socket, unread: bytes, state: Mapping[str, Any]) -> bool:
        """Serve a client connection another process handed over on the
        listener named ``listener``; False (the caller closes it) if there
        is no such listener or it does not accept."""
        for mine in self._listeners:
            if mine.name == listener:
                return mine.server.adopt(sock, unread, state)
        return False

    def _checked_protocol(self, cluster: str) -> type[FrameSemantics] | None:
        """The protocol a cluster's health check speaks: the protocol of the
        first named listener routing to it (None: only auto ones, so TCP)."""
        for listener in self._listeners:
            if listener.protocol is not None and any(route.cluster.name == cluster for route in listener.routes):
                return listener.protocol
        return None

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._shutdown

    @property
    def metrics(self) -> Any:
        """A prometheus-client ``CollectorRegistry`` with this proxy's metrics."""
        if self._metrics is None:
            self._metrics = registry(self)
        return self._metrics

    def describe_clusters(self) -> dict[str, Any]:
        """Every cluster's state, for the admin's ``/clusters``."""
        return {name: cluster.describe() for name, cluster in self.clusters.items()}

    @property
    def drain_timeout(self) -> float:
        return self.config.drain_timeout
