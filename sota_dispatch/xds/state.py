"""What the control plane has sent, and the proxy configuration it makes with the file's.

The file's configuration is the base: its listeners, clusters, admin and
limits. CDS adds clusters and LDS listeners to it (state of the world: each
response is the whole set of its type; a name the file uses already is
refused). A listener from LDS joins only once it can route, as Envoy warms
one: its RDS routes have come (when it names them), and every cluster its
routes name exists and, for an EDS cluster, has had its first assignment.
Until then it is left out, and traffic is not sent into a void.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from ..config.model import ClusterConfig, ListenerConfig, ProxyConfig
from ..config.parse import cluster_config, listener_config
from ..errors import ConfigError
from .resources import cluster_document, listener_document, routes_document

__all__ = ["XdsState"]

log = logging.getLogger(__name__)


@attrs.define
class XdsState:
    """The resources received so far, as checked native config."""

    clusters: dict[str, ClusterConfig] = attrs.Factory(dict)
    #: LDS listeners: the document (routes still missing if named) and its RDS name.
    listeners: dict[str, tuple[dict[str, Any], str | None]] = attrs.Factory(dict)
    routes: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)

    def with_clusters(self, messages: Sequence[Any]) -> XdsState:
        """This state with the CDS set replaced (raises ConfigError naming the resource)."""
        clusters = {}
        for i, message in enumerate(messages):
            where = f"resources[{i}] ({message.name})"
            try:
                clusters[message.name] = cluster_config(cluster_document(message), where)
            except ConfigError as exc:
                raise _within(exc, where) from None
        return attrs.evolve(self, clusters=clusters)

    def with_listeners(self, messages: Sequence[Any]) -> XdsState:
        listeners = {}
        for i, message in enumerate(messages):
            where = f"resources[{i}] ({message.name})"
            try:
                document, rds = listener_document(message)
                if rds is None:
                    listener_config(document, where)  # checked now: a NACK names it
                listeners[message.name] = (document, rds)
            except ConfigError as exc:
                raise _within(exc, where) from None
        return attrs.evolve(self, listeners=listeners)

    def with_routes(self, messages: Sequence[Any]) -> XdsState:
        """RDS: only the named configurations sent change (the others stay)."""
        routes = dict(self.routes)
        for i, message in enumerate(messages):
            where = f"resources[{i}] ({message.name})"
            try:
                routes[message.name] = routes_document(message)
            except ConfigError as exc:
                raise _within(exc, where) from None
        return attrs.evolve(self, routes=routes)

    @property
    def route_names(self) -> list[str]:
        """The RDS configurations the LDS listeners name."""
        return sorted({rds for _, rds in self.listeners.values() if rds is not None})

    def compose(self, base: ProxyConfig, assigned: Collection[str]) -> ProxyConfig:
        """``base`` with these clusters and the listeners that are ready.
        ``assigned``: the EDS assignments received so far."""
        taken = {c.name for c in base.clusters}
        clash = sorted(taken & self.clusters.keys())
        if clash:
            raise ConfigError("clusters", f"cluster {clash[0]} is the config file's; the control plane cannot send it")
        clusters = (*base.clusters, *self.clusters.values())
        by_name: Mapping[str, ClusterConfig] = {c.name: c for c in clusters}
        listeners: list[ListenerConfig] = []
        taken = {c.name for c in base.listeners}
        for name, (document, rds) in sorted(self.listeners.items()):
            if name in taken:
                raise ConfigError(
                    "listeners", f"listener {name} is the config file's; the control plane cannot send it"
                )
            if rds is not None:
                if rds not in self.routes:
                    log.debug("xDS: listener %s waits for its routes %s", name, rds)
                    continue
                document = {**document, "routes": self.routes[rds]}
            waiting = [
                route["cluster"]
                for route in document["routes"]
                if route["cluster"] not in by_name
                or (by_name[route["cluster"]].eds is not None and by_name[route["cluster"]].eds not in assigned)
            ]
            if waiting:
                log.debug("xDS: listener %s waits for cluster %s", name, waiting[0])
                continue
            listeners.append(listener_config(document, f"listener {name}"))
        return attrs.evolve(base, clusters=clusters, listeners=(*base.listeners, *listeners))


def _within(error: ConfigError, where: str) -> ConfigError:
    return ConfigError.combine(
        ConfigError(f"{where}.{e.path.lstrip('.')}" if e.path else where, e.problem) for e in error.errors
    )
