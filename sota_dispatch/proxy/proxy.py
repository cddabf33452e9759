"""The whole proxy process: its listeners, clusters, timers and admin endpoint.

:class:`Proxy` runs a :class:`~sota_dispatch.config.ProxyConfig`: one
:class:`~.listener.Listener` (and :class:`~sota_dispatch.Server`) per
listener, the clusters and their upstream connections, the timer task, and
the admin endpoint if configured. On shutdown, listeners stop accepting,
client connections stop reading and finish their requests in flight, up to
the drain timeout; the admin answers until the end.

:meth:`Proxy.apply` swaps in a new configuration while it runs (a reload:
SIGHUP, the admin's ``POST /reload``); :mod:`.reload` says what may change
live and how.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus

from ..admin.endpoint import AdminEndpoint
from ..admin.metrics import registry
from ..cluster.checks import run_health_checks
from ..cluster.cluster import Cluster
from ..config.model import ClusterConfig, EndpointConfig, ProxyConfig
from ..discovery.zookeeper import ZooKeeperDiscovery, check_zookeeper
from ..errors import ConfigError
from ..io.budget import BufferBudget
from ..io.clock import SYSTEM_CLOCK, Clock
from ..io.outbox import Outbox
from ..logs import plural
from ..protocol.dispatcher import Dispatcher
from ..protocol.handoff import HandOff
from ..protocol.registry import ProtocolInfo
from ..protocol.semantics import FrameSemantics
from ..xds.ads import EDS_TYPE, AdsClient, EdsSource, check_xds
from ..xds.endpoints import assignments_of
from ..xds.resources import CDS_TYPE, LDS_TYPE, RDS_TYPE
from ..xds.state import XdsState
from .filtering import check_filters
from .listener import Listener, check_protocols
from .reload import ConfigState, ReloadPlan, plan_reload
from .security import ProxyTLS
from .timers import TimerQueue

__all__ = ["Proxy"]

log = logging.getLogger(__name__)


def _check(config: ProxyConfig) -> dict[str, ProtocolInfo | None]:
    """Everything a config needs of this installation: its protocols,
    stream filters and (for ZooKeeper discovery) kazoo."""
    protocols = check_protocols(config)
    check_filters(config)
    for i, cluster in enumerate(config.clusters):
        if cluster.zookeeper is not None:
            check_zookeeper(f"clusters[{i}].zookeeper")
    if config.xds is not None:
        check_xds("xds")
    return protocols


@attrs.define
class _Next:
    """The proxy as a reload's new listeners see it before it is applied."""

    config: ProxyConfig
    clusters: dict[str, Cluster]
    timers: TimerQueue
    outbox: Outbox
    budget: BufferBudget
    tls: ProxyTLS


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
    binding the listener's address (a worker's, from its supervisor); no
    listener can then be added or removed by a reload. ``source``: where
    :meth:`reload` reads the configuration again (a file), and
    ``source_name`` what to call it.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sockets: Mapping[str, Sequence[socket.socket]] | None = None,
        source: Callable[[], ProxyConfig] | None = None,
        source_name: str | None = None,
    ) -> None:
        self.config = config
        protocols = _check(config)
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
        #: The control plane's stream (None: no ``xds``), and the last
        #: endpoints it gave per assignment name.
        self.xds = None if config.xds is None else AdsClient(config.xds, self._xds_resources)
        self._assigned: dict[str, tuple[EndpointConfig, ...]] = {}
        #: The configuration given (the file's), and what the control plane added to it.
        self._base = config
        self._xds_state = XdsState()
        self.clusters = {c.name: self._cluster(c, self.tls) for c in config.clusters}
        #: The configuration's version, and how reloads went (the admin shows it).
        self.config_state = ConfigState(source=source_name)
        self._source = source
        self._fixed_listeners = sockets is not None
        self._reloading: anyio.Lock | None = None
        self._cluster_scopes: dict[Cluster, anyio.CancelScope] = {}
        self._upstream: TaskGroup | None = None
        self._listener_group: TaskGroup | None = None
        given = sockets or {}
        self._listeners = [Listener(c, self, protocols[c.name], sockets=given.get(c.name)) for c in config.listeners]
        self.addresses: dict[str, str] = {}
        #: The admin endpoint (None: not configured).
        self._metrics: Any = None
        self.admin = None if config.admin is None else AdminEndpoint.for_proxy(self, config.admin, self.metrics)
        self._shutdown = False
        #: Set by the admin's ``/healthcheck/fail``: ``/ready`` answers 503
        #: while traffic is still served (``/healthcheck/ok`` clears it).
        self.health_check_failed = False
        self._listeners_drained = False
        self._stopped: anyio.Event | None = None

    @property
    def listeners(self) -> list[Listener]:
        return self._listeners

    @property
    def admin_address(self) -> str | None:
        """The admin endpoint's bound ``HOST:PORT`` once serving (None: no admin)."""
        return None if self.admin is None else self.admin.address

    async def serve(self, *, task_status: TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until :meth:`shutdown`, drain, return."""
        self._reloading = anyio.Lock()
        self._stopped = anyio.Event()
        async with anyio.create_task_group() as upstream:
            self._upstream = upstream
            upstream.start_soon(self.timers.run, name="proxy timers")
            if self.xds is not None:
                self._subscribe()
                upstream.start_soon(self.xds.run, name="xDS")
            for cluster in self.clusters.values():
                self._start(cluster)
            async with anyio.create_task_group() as listeners:
                self._listener_group = listeners
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
            if self._listeners_drained:
                # Drained by the admin (/drain_listeners): the admin, health
                # checks and control plane stay until the process stops.
                await self._stopped.wait()
            # Every client connection is closed: late upstream answers have
            # nobody to go to, so the upstream connections go too.
            upstream.cancel_scope.cancel()

    def _cluster(self, config: ClusterConfig, tls: ProxyTLS) -> Cluster:
        cluster = Cluster(
            config, outbox=self.outbox, budget=self.budget, clock=self.clock, tls=tls.clusters.get(config.name)
        )
        if config.zookeeper is not None:
            cluster.discovery = ZooKeeperDiscovery(config.zookeeper, config.name, cluster.set_endpoints)
        elif config.eds is not None and self.xds is not None:
            source = cluster.discovery = EdsSource(self.xds, config.eds)
            assigned = self._assigned.get(config.eds)
            if assigned is not None:  # a cluster made by a reload: the control plane spoke already
                source.endpoints = assigned
                cluster.set_endpoints(assigned)
        return cluster

    def _subscribe(self) -> None:
        if self.xds is not None:
            self.xds.subscribe(CDS_TYPE, ())  # every cluster and listener (a wildcard)
            self.xds.subscribe(LDS_TYPE, ())
            self.xds.subscribe(RDS_TYPE, self._xds_state.route_names)
            self.xds.subscribe(EDS_TYPE, [c.eds for c in self.config.clusters if c.eds is not None])

    async def _xds_resources(self, type_url: str, resources: Sequence[Any]) -> None:
        """A control plane's response: checked whole, then applied (clusters
        and listeners through :meth:`apply`); a :class:`~sota_dispatch.ConfigError`
        refuses it (a NACK) and changes nothing."""
        state = self._xds_state
        if type_url == EDS_TYPE:
            assignments = assignments_of(resources)
            assert self._reloading is not None
            async with self._reloading:  # not while a reload builds clusters from the last assignments
                self._assigned.update(assignments)
                for cluster in self.clusters.values():
                    source = cluster.discovery
                    if isinstance(source, EdsSource) and source.name in assignments:
                        source.endpoints = assignments[source.name]
                        if cluster.set_endpoints(source.endpoints):
                            log.info("cluster %s: %s from xDS", cluster.name, plural(len(source.endpoints), "endpoint"))
        elif type_url == CDS_TYPE:
            state = state.with_clusters(resources)
        elif type_url == LDS_TYPE:
            state = state.with_listeners(resources)
        else:
            state = state.with_routes(resources)
        if state != self._xds_state or self._warming(state):
            await self._run(self._base, state)

    def _warming(self, state: XdsState) -> bool:
        """Whether a listener of the control plane's waits to join."""
        return len(state.listeners) > sum(1 for c in self.config.listeners if c.name in state.listeners)

    def _start(self, cluster: Cluster) -> None:
        """Let ``cluster`` open connections; start its health checks and discovery."""
        assert self._upstream is not None
        cluster.task_group = self._upstream
        watching = isinstance(cluster.discovery, ZooKeeperDiscovery)
        if cluster.config.health_check is None and not watching:
            return
        scope = self._cluster_scopes[cluster] = anyio.CancelScope()
        protocol = self._checked_protocol(cluster.name)

        async def run() -> None:
            with scope:
                async with anyio.create_task_group() as tasks:
                    if cluster.config.health_check is not None:
                        tasks.start_soon(run_health_checks, cluster, protocol)
                    if isinstance(cluster.discovery, ZooKeeperDiscovery):
                        tasks.start_soon(cluster.discovery.run)

        self._upstream.start_soon(run, name=f"cluster {cluster.name}")

    def _retire(self, cluster: Cluster) -> None:
        scope = self._cluster_scopes.pop(cluster, None)
        if scope is not None:
            scope.cancel()
        cluster.retire()

    async def reload(self) -> ReloadPlan:
        """Read the configuration from its source again and :meth:`apply` it
        (SIGHUP, the admin's ``POST /reload``). Raises
        :class:`~sota_dispatch.ConfigError` if it cannot be read or applied;
        the running configuration then stays, whole."""
        if self._source is None:
            raise ConfigError("", "this proxy was not started from a config file: there is nothing to reload")
        try:
            # In a worker thread: a large file takes a while to read and check
            # (0.9 s for 1,000 clusters here), and the loop keeps serving meanwhile.
            config = await anyio.to_thread.run_sync(self._source)
        except ConfigError as exc:
            self._refused(exc)
            raise
        return await self.apply(config)

    async def apply(self, config: ProxyConfig) -> ReloadPlan:
        """Run ``config`` from now on, without closing connections (with an
        xDS control plane: ``config`` and the clusters and listeners it sent).

        Routes, clusters, endpoints, limits, stream filters and the drain
        timeout change live; listeners come and go (not under a supervisor,
        which holds the sockets). A request keeps the route and cluster it
        started with; a replaced cluster serves its requests in flight,
        then closes its connections. All or nothing: a config with any
        problem raises :class:`~sota_dispatch.ConfigError` and changes
        nothing.
        """
        return await self._run(config, self._xds_state)

    async def _run(self, base: ProxyConfig, state: XdsState) -> ReloadPlan:
        assert self._reloading is not None, "apply() needs a serving proxy"
        async with self._reloading:
            try:
                if self._shutdown or self._listeners_drained:
                    raise ConfigError("", "the proxy is draining")
                config = base if self.xds is None else state.compose(base, self._assigned)
                plan = plan_reload(self.config, config, fixed_listeners=self._fixed_listeners)
                protocols = _check(config)
                tls = ProxyTLS.load(config)
                await self._apply(config, plan, protocols, tls)
            except ConfigError as exc:
                self._refused(exc)
                raise
            self._base, self._xds_state = base, state
            self._subscribe()
        self.config_state.applied(plan.summary())
        log.info("config version %d applied: %s", self.config_state.version, plan.summary())
        return plan

    def _refused(self, error: ConfigError) -> None:
        self.config_state.failed(error)
        log.error("config not reloaded (version %d stays): %s", self.config_state.version, error)

    async def _apply(
        self, config: ProxyConfig, plan: ReloadPlan, protocols: Mapping[str, ProtocolInfo | None], new_tls: ProxyTLS
    ) -> None:
        renewed = {*plan.clusters_added, *plan.clusters_replaced}
        tls = self.tls.merged(new_tls, config, plan.listeners_added, renewed)
        clusters: dict[str, Cluster] = {}
        created = []
        for c in config.clusters:
            if c.name in renewed:
                cluster = clusters[c.name] = self._cluster(c, tls)
                cluster.task_group = self._upstream
                old = self.clusters.get(c.name)
                if old is not None:
                    cluster.stats = old.stats  # one count across the change
                created.append(cluster)
            else:
                clusters[c.name] = self.clusters[c.name]
        # New listeners bind before anything changes: one that cannot
        # makes the whole reload fail.
        owner = _Next(config, clusters, self.timers, self.outbox, self.budget, tls)
        added = [Listener(c, owner, protocols[c.name]) for c in config.listeners if c.name in plan.listeners_added]
        assert self._listener_group is not None
        for listener in added:
            try:
                self.addresses[listener.name] = await self._listener_group.start(listener.server.serve)
            except OSError as exc:
                for started in added:
                    started.server.shutdown()
                    self.addresses.pop(started.name, None)
                for cluster in created:
                    cluster.retire()
                index = next(i for i, c in enumerate(config.listeners) if c.name == listener.name)
                raise ConfigError(
                    f"listeners[{index}].address", f"cannot listen on {listener.config.address}: {exc.strerror or exc}"
                ) from None
        # From here on, nothing awaits: requests see the old config or the new one, whole.
        by_name = {c.name: c for c in config.clusters}
        for name in plan.endpoints_changed:
            cluster = clusters[name]
            cluster.config = by_name[name]
            discovery = cluster.discovery
            if discovery is None or discovery.endpoints is None:  # else ZooKeeper's endpoints rule
                cluster.set_endpoints(by_name[name].endpoints)
        retired = [self.clusters[name] for name in (*plan.clusters_replaced, *plan.clusters_removed)]
        self.clusters, self.tls, self.config = clusters, tls, config
        listener_configs = {c.name: c for c in config.listeners}
        kept = []
        for listener in self._listeners:
            if listener.name in plan.listeners_removed:
                listener.server.shutdown()
                self.addresses.pop(listener.name, None)
            else:
                listener.update(listener_configs[listener.name], clusters, config.drain_timeout)
                kept.append(listener)
        self._listeners = kept + added
        for cluster in retired:
            self._retire(cluster)
        for cluster in created:
            self._start(cluster)
        overload = config.overload
        self.budget.configure(overload.buffer_budget, overload.large_frame)

    @property
    def reloadable(self) -> bool:
        """Whether :meth:`reload` has a config file to read (SIGHUP reloads it)."""
        return self._source is not None

    async def reload_config(self) -> dict[str, Any]:
        """:meth:`reload`, reported for the admin's ``POST /reload``."""
        plan = await self.reload()
        return {"version": self.config_state.version, "changed": plan.summary(), "changes": plan.describe()}

    def config_status(self) -> dict[str, Any]:
        return self.config_state.describe()

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
        if self._stopped is not None:
            self._stopped.set()

    async def drain_listeners(self) -> None:
        """Stop accepting and drain every listener's connections (requests
        in flight finish, up to the drain timeout), keeping the process, its
        admin, health checks and control plane up (Envoy's ``/drain_listeners``)."""
        self._listeners_drained = True
        for listener in self._listeners:
            listener.server.shutdown()
        for listener in self._listeners:  # returns once a connect is refused
            await listener.server.wait_not_accepting()

    def quit(self) -> None:
        """Stop now (the admin's ``/quitquitquit``): requests in flight get
        the protocol's timeout reply at once, then every connection closes."""
        for listener in self._listeners:
            listener.server.drain_timeout = 0.0
        self.shutdown()

    async def describe_listeners(self) -> list[dict[str, Any]]:
        """Every listener, for the admin's ``/listeners``."""
        state = "draining" if self._shutdown or self._listeners_drained else "accepting"
        return [listener.describe(state) for listener in self._listeners]

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
        """True once :meth:`shutdown` or :meth:`drain_listeners` was called."""
        return self._shutdown or self._listeners_drained

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
