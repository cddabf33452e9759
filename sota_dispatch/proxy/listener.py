"""A proxy's listeners: which protocols they speak, checked against what is installed.

A :class:`Listener` is one listening address at run time: its protocol's
class (or the candidates ``auto`` detects among), its routes, its
:class:`~sota_dispatch.Server`, and the client connections it accepts.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from anyio.abc import ByteStream

from ..cluster.cluster import Cluster
from ..cluster.stats import ListenerStats
from ..config.model import ClusterConfig, ListenerConfig, ProxyConfig
from ..errors import ConfigError, SotaError
from ..filters.chain import FilterChain
from ..io.budget import BufferBudget
from ..io.outbox import Outbox
from ..logs import RateLimitedLog
from ..protocol.context import ConnectionContext
from ..protocol.registry import ProtocolInfo, available_protocols, get_protocol
from ..protocol.semantics import FrameSemantics
from ..protocol.server import Server, park_idle_after
from .connection import ProxyConnection
from .filtering import build_chain
from .observe import observer_for
from .policy import RequestPolicy
from .routing import Route
from .security import ProxyTLS
from .sites import Observer
from .timers import TimerQueue

__all__ = ["AUTO", "Listener", "ListenerOwner", "auto_candidates", "check_protocols"]

log = logging.getLogger(__name__)

#: The listener protocol that detects each connection's protocol.
AUTO = "auto"


def check_protocols(config: ProxyConfig) -> dict[str, ProtocolInfo | None]:
    """Each listener's protocol, checked against what is installed.

    The protocol must exist and be proxiable; the listener's options
    and the options and pool mode of every cluster it routes to must suit
    the protocol (for ``auto``, every protocol it may detect). Returns
    ``{listener name: ProtocolInfo}`` (None for ``auto``); raises
    :class:`~sota_dispatch.ConfigError` naming the field.
    """
    result: dict[str, ProtocolInfo | None] = {}
    cluster_index = {cluster.name: j for j, cluster in enumerate(config.clusters)}
    for i, listener in enumerate(config.listeners):
        path = f"listeners[{i}]"
        if listener.protocol == AUTO:
            candidates = auto_candidates()
            if not candidates:
                raise ConfigError(
                    f"{path}.protocol", "auto needs an installed proxiable protocol with a sniffer; none is"
                )
            if listener.options:
                raise ConfigError(f"{path}.options", "options need a named protocol, not auto")
            result[listener.name] = None
            infos = [info for _, info in candidates]
        else:
            try:
                info = get_protocol(listener.protocol)
            except SotaError as exc:
                raise ConfigError(f"{path}.protocol", str(exc)) from None
            if info.protocol_class is None:
                proxiable = ", ".join(name for name, _ in auto_candidates()) or "none"
                raise ConfigError(
                    f"{path}.protocol",
                    f"protocol {info.name!r} cannot be proxied (it defines no server and client codecs); "
                    f"proxiable: {proxiable}",
                )
            for name, problem in info.protocol_class.option_errors(listener.options, "listener").items():
                raise ConfigError(f"{path}.options.{name}", problem)
            result[listener.name] = info
            infos = [info]
        for route in listener.routes:
            j = cluster_index[route.cluster]
            _check_cluster(config.clusters[j], f"clusters[{j}]", infos, listener.name)
    return result


def _check_cluster(cluster: ClusterConfig, path: str, infos: list[ProtocolInfo], listener: str) -> None:
    for info in infos:
        protocol = info.protocol_class
        assert protocol is not None
        mode = cluster.pool.mode
        if mode is not None and mode not in protocol.pool_modes:
            modes = ", ".join(sorted(protocol.pool_modes))
            raise ConfigError(
                f"{path}.pool.mode", f"{info.name} (listener {listener}) cannot use {mode} pools; it can use {modes}"
            )
        for name, problem in protocol.option_errors(cluster.options, "cluster").items():
            raise ConfigError(f"{path}.options.{name}", f"{problem} (for {info.name}, listener {listener})")


def auto_candidates() -> list[tuple[str, ProtocolInfo]]:
    """Installed proxiable protocols with a sniffer, for ``auto``."""
    found = []
    for name in available_protocols():
        try:
            info = get_protocol(name)
        except SotaError as exc:
            log.warning("protocol %s is not available for auto-detection: %s", name, exc)
            continue
        if info.protocol_class is not None and info.sniffer is not None:
            found.append((name, info))
    return found


class ListenerOwner(Protocol):
    """The proxy, as its listeners use it."""

    config: ProxyConfig
    clusters: dict[str, Cluster]
    timers: TimerQueue
    outbox: Outbox
    budget: BufferBudget
    tls: ProxyTLS


class Listener:
    """A listener at run time: its protocol's class, routes and server."""

    def __init__(
        self,
        config: ListenerConfig,
        proxy: ListenerOwner,
        info: ProtocolInfo | None,
        *,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.proxy = proxy
        self.protocol = info.protocol_class if info is not None else None
        self.candidates = auto_candidates() if info is None else []
        self.stats = ListenerStats()
        #: Requests that end in an error reply: at most 20 lines a second per
        #: kind (a dead upstream fails thousands a second), at INFO; overflow,
        #: a sign of overload, at WARNING, once per 10 s.
        self.failure_log = RateLimitedLog(log, logging.INFO, interval=1.0, burst=20)
        self.overflow_log = RateLimitedLog(log, logging.WARNING, interval=10.0, burst=1)
        routes = tuple(Route(route, proxy.clusters[route.cluster]) for route in config.routes)
        # What its connections need of the proxy (see ListenerSite).
        self.timers = proxy.timers
        self.clock = proxy.timers.clock
        #: Routes, stream filters, observer: its connections keep this object, a reload changes it.
        self.policy = RequestPolicy(routes, build_chain(config, routes, self.clock), observer_for(config))
        self.outbox = proxy.outbox
        self.budget = proxy.budget
        self.drain_timeout = proxy.config.drain_timeout
        self.server = Server(
            self.connection,
            config.address,
            protocol=config.protocol,
            options=config.options,
            drain_timeout=proxy.config.drain_timeout,
            max_connections=config.limits.max_connections,
            timeouts=None,  # ProxyConnection keeps the listener's limits itself
            budget=proxy.budget,
            tls=proxy.tls.listeners.get(config.name),
            sockets=sockets,
            wait_for_first_bytes=self._waits,
            first_bytes_timeout=_first_bytes_timeout(config),
            park_idle_after=self._park_after(config),
        )

    def update(self, config: ListenerConfig, clusters: Mapping[str, Cluster], drain_timeout: float) -> None:
        """A reload changed its routes, limits, stream filters, access log
        or tracing (never its socket's address, protocol, options or TLS): requests
        read from now on take the new routes, those in flight keep theirs;
        connections accepted from now on take the new limits. The filter
        instances stay (with their state: a rate limit's tokens) unless
        their config changed."""
        routes = tuple(Route(route, clusters[route.cluster]) for route in config.routes)
        old = self.config
        same_filters = old.stream_filters == config.stream_filters and [r.per_filter_config for r in old.routes] == [
            r.per_filter_config for r in config.routes
        ]
        if same_filters:
            for before, after in zip(self.routes, routes, strict=True):
                after.filters = before.filters
            filters = self.filters
        else:
            filters = build_chain(config, routes, self.clock)
        self.config = config
        policy = self.policy  # in place: every connection of this listener holds it
        policy.routes, policy.filters = routes, filters
        if (old.access_log, old.tracing) != (config.access_log, config.tracing):
            policy.observer = observer_for(config)
        self.drain_timeout = self.server.drain_timeout = drain_timeout
        self.server.max_connections = config.limits.max_connections
        self.server.first_bytes_timeout = _first_bytes_timeout(config)
        self.server.park_idle_after = self._park_after(config)

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.policy.routes

    @property
    def filters(self) -> FilterChain | None:
        return self.policy.filters

    @property
    def observer(self) -> Observer | None:
        return self.policy.observer

    @property
    def _waits(self) -> bool:
        """Whether a connection that has not spoken waits as a bare socket:
        unless its protocol may have the proxy speak first (a greeting)."""
        return self.protocol is None or self.protocol.speaks_first is False

    def _park_after(self, config: ListenerConfig) -> float | None:
        """``limits.park_idle_after``, where connections can park (see
        :attr:`_waits`): unset, the default there and nothing elsewhere;
        0, never."""
        after = config.limits.park_idle_after
        if after and not self._waits:
            log.warning(
                "listener %s: limits.park_idle_after ignored: %s's server speaks first, its connections cannot park",
                config.name,
                config.protocol,
            )
        return park_idle_after(after, self._waits)

    def describe(self, state: str) -> dict[str, Any]:
        """The listener for the admin's ``/listeners`` (``state``: the proxy's
        ``accepting``, ``draining`` or ``drained``)."""
        server, stats = self.server, self.stats
        return {
            "name": self.name,
            "protocol": self.config.protocol,
            "address": self.config.address,
            "bound": server.address,
            "state": state,
            "connections_active": server.active_connections,
            "connections_total": server.connections_total,
            "connections_refused": server.connections_refused,
            "connections_waiting": server.waiting_connections,
            "first_byte_timeouts": server.first_byte_timeouts,
            "connections_parked": server.parked_connections,
            "parks": server.connections_parked,
            "parked_idle_timeouts": server.parked_idle_timeouts,
            "requests": stats.requests,
            "bytes_received": stats.bytes_in,
            "bytes_sent": stats.bytes_out,
        }

    def protocol_named(self, name: object) -> type[FrameSemantics] | None:
        """The protocol called ``name`` if this listener speaks it (a
        connection handed over from another process names its protocol)."""
        if self.protocol is not None:
            return self.protocol if self.protocol.protocol_name == name else None
        for _, info in self.candidates:
            if info.protocol_class is not None and info.protocol_class.protocol_name == name:
                return info.protocol_class
        return None

    def connection(self, stream: ByteStream, context: ConnectionContext) -> ProxyConnection:
        return ProxyConnection(stream, context, listener=self)


def _first_bytes_timeout(config: ListenerConfig) -> float | None:
    """How long a client may connect and say nothing: as ProxyConnection's
    reader would allow (the frame timeout, else the idle timeout)."""
    limits = config.limits
    return limits.idle_timeout if limits.frame_timeout is None else limits.frame_timeout
