"""Reloading a running proxy's configuration: what changed, and whether it can change live.

A reload (SIGHUP, the admin's ``POST /reload``) hands the proxy a whole new
:class:`~sota_dispatch.config.ProxyConfig`. :func:`plan_reload` compares
it with the running one, field by field of the frozen values: a cluster
whose config is equal stays the same object (its connections, health and
counters with it); one whose endpoints alone changed keeps its object and
swaps its endpoint set; any other change builds a new cluster beside the
old one, which serves the requests it already has and then closes. A
listener keeps its socket and connections while its routes, limits,
stream filters and access log change; its address, protocol, options and
TLS are its socket's and its connections', so changing them is refused
(Envoy refuses a listener whose address changes under the same name, for
the same reason): add a listener under a new name, or hot restart.

:class:`ConfigState` is what the admin shows: the version in force, when
it was applied, and how the last reload went.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from ..config.model import ClusterConfig, ProxyConfig
from ..errors import ConfigError

__all__ = ["ConfigState", "ReloadPlan", "plan_reload"]

#: A listener's fields that belong to its socket and its open connections.
_SOCKET_FIELDS = ("address", "protocol", "options", "tls")


@attrs.frozen
class ReloadPlan:
    """What a new configuration changes, by cluster and listener name."""

    clusters_added: tuple[str, ...] = ()
    #: Changed beyond their endpoints: a new cluster replaces the old one.
    clusters_replaced: tuple[str, ...] = ()
    clusters_removed: tuple[str, ...] = ()
    #: Only their endpoints changed: the same cluster takes the new set.
    endpoints_changed: tuple[str, ...] = ()
    listeners_added: tuple[str, ...] = ()
    listeners_removed: tuple[str, ...] = ()
    #: Routes, limits, stream filters or access log changed.
    listeners_updated: tuple[str, ...] = ()
    #: Drain timeout or overload budget changed.
    process_changed: bool = False

    @property
    def empty(self) -> bool:
        return self == ReloadPlan()

    def summary(self) -> str:
        """One line for the log, e.g. ``clusters +b ~a; listeners ~main``."""
        parts = []
        for what, signs in (
            ("clusters", (("+", self.clusters_added), ("~", self.clusters_replaced), ("-", self.clusters_removed))),
            ("endpoints of", (("", self.endpoints_changed),)),
            ("listeners", (("+", self.listeners_added), ("~", self.listeners_updated), ("-", self.listeners_removed))),
        ):
            names = [f"{sign}{name}" for sign, group in signs for name in group]
            if names:
                parts.append(f"{what} {' '.join(names)}")
        if self.process_changed:
            parts.append("drain timeout or overload")
        return "; ".join(parts) or "nothing changed"

    def describe(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in attrs.fields(ReloadPlan)}


def _same_but_endpoints(a: ClusterConfig, b: ClusterConfig) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in attrs.fields(ClusterConfig) if f.name != "endpoints")


def plan_reload(old: ProxyConfig, new: ProxyConfig, *, fixed_listeners: bool = False) -> ReloadPlan:
    """What applying ``new`` over ``old`` changes.

    ``fixed_listeners``: the listening sockets came from elsewhere (a
    worker's, from its supervisor), so no listener may come or go here.
    Raises one :class:`~sota_dispatch.ConfigError` naming every change that
    cannot be made live; nothing is applied then.
    """
    problems: list[ConfigError] = []
    if new.admin != old.admin:
        problems.append(ConfigError("admin", "the admin endpoint cannot change without a restart"))
    if new.xds != old.xds:
        problems.append(ConfigError("xds", "the xDS control plane cannot change without a restart"))
    old_clusters = {c.name: c for c in old.clusters}
    new_clusters = {c.name: c for c in new.clusters}
    added: list[str] = []
    replaced: list[str] = []
    endpoints: list[str] = []
    for name, cluster in new_clusters.items():
        before = old_clusters.get(name)
        if before is None:
            added.append(name)
        elif before != cluster:
            (endpoints if _same_but_endpoints(before, cluster) else replaced).append(name)
    removed = [name for name in old_clusters if name not in new_clusters]
    old_listeners = {c.name: c for c in old.listeners}
    new_listeners = {c.name: c for c in new.listeners}
    listeners_added: list[str] = []
    updated: list[str] = []
    for i, listener in enumerate(new.listeners):
        before_listener = old_listeners.get(listener.name)
        if before_listener is None:
            if fixed_listeners:
                problems.append(
                    ConfigError(
                        f"listeners[{i}]",
                        f"a new listener ({listener.name}) needs new sockets from the supervisor: "
                        "run the same command again with --restart-socket (hot restart)",
                    )
                )
            listeners_added.append(listener.name)
            continue
        fixed = [f for f in _SOCKET_FIELDS if getattr(before_listener, f) != getattr(listener, f)]
        if fixed:
            problems.append(
                ConfigError(
                    f"listeners[{i}].{fixed[0]}",
                    f"listener {listener.name}: {', '.join(fixed)} cannot change while it runs "
                    "(they belong to its socket and connections); give it a new name, or hot restart",
                )
            )
        elif before_listener != listener:
            updated.append(listener.name)
    listeners_removed = [name for name in old_listeners if name not in new_listeners]
    if fixed_listeners and listeners_removed:
        problems.append(
            ConfigError(
                "listeners",
                f"listener {listeners_removed[0]} would go, but the supervisor keeps its sockets: "
                "remove it with a hot restart (--restart-socket)",
            )
        )
    if problems:
        raise ConfigError.combine(problems)
    return ReloadPlan(
        tuple(added),
        tuple(replaced),
        tuple(removed),
        tuple(endpoints),
        tuple(listeners_added),
        tuple(listeners_removed),
        tuple(updated),
        process_changed=(new.drain_timeout, new.overload) != (old.drain_timeout, old.overload),
    )


@attrs.define
class ConfigState:
    """The configuration in force and how reloads went, for the admin."""

    #: Where reloads read the configuration (None: it came from flags).
    source: str | None = None
    #: 1 at start, one more per applied reload.
    version: int = 1
    #: Wall-clock time the version was applied (seconds since the epoch).
    applied_at: float = attrs.field(factory=time.time)
    reloads: int = 0
    refused: int = 0
    last_change: str = "started"
    #: Why the last reload was refused (None: it was applied).
    last_error: str | None = None

    def applied(self, change: str, version: int | None = None) -> None:
        """A reload applied ``change`` (a summary); ``version``: the one now
        in force, if someone else counts them (a supervisor's workers)."""
        self.version = self.version + 1 if version is None else version
        self.reloads += 1
        self.applied_at = time.time()
        self.last_change = change
        self.last_error = None

    def failed(self, error: ConfigError) -> None:
        self.refused += 1
        self.last_error = str(error)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.applied_at)),
            "source": self.source,
            "reloads": self.reloads,
            "refused": self.refused,
            "last_change": self.last_change,
            "last_error": self.last_error,
        }
