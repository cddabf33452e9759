"""What the admin endpoint sees of a proxy, declared here.

The admin sits below the proxy, which starts it: it reads the proxy only
through :class:`ProxyView`, so the proxy layer may import it and nothing
here imports the proxy back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..cluster.cluster import Cluster
from ..cluster.stats import ListenerStats
from ..config.model import ListenerConfig, ProxyConfig
from ..errors import ConfigError
from ..io.budget import BufferBudget
from ..protocol.server import Server

__all__ = ["AdminTarget", "ListenerView", "ProxyView"]


class ListenerView(Protocol):
    """One listener: its config, server and counters."""

    name: str
    config: ListenerConfig
    server: Server
    stats: ListenerStats


class AdminTarget(Protocol):
    """What the admin endpoint's own paths read or do: ``/config_dump``,
    ``/clusters``, ``/listeners``, ``/ready``, ``/healthcheck/fail|ok``,
    ``/drain``, ``/drain_listeners``, ``/quitquitquit``, ``/reload``,
    ``/reload_certificates``, ``/server_info`` (a proxy, or a supervisor of
    worker processes)."""

    #: Set by ``/healthcheck/fail`` (``/ready`` answers 503), cleared by ``/healthcheck/ok``.
    health_check_failed: bool

    @property
    def config(self) -> ProxyConfig | None: ...

    @property
    def draining(self) -> bool: ...

    def shutdown(self) -> None: ...

    def quit(self) -> None:
        """Stop now: requests in flight get their error reply, then exit."""
        ...

    async def drain_listeners(self) -> None:
        """Stop accepting and drain the client connections; stay up."""
        ...

    async def describe_listeners(self) -> list[dict[str, Any]]:
        """Every listener: name, protocol, address, state, counts."""
        ...

    def reload_certificates(self) -> list[ConfigError]: ...

    async def reload_config(self) -> dict[str, Any]:
        """Read the config file again and apply it (``POST /reload``):
        what changed; raises :class:`~sota_dispatch.ConfigError` (nothing changed)."""
        ...

    def config_status(self) -> dict[str, Any]:
        """The config version in force, when it was applied, how reloads went."""
        ...

    def describe_clusters(self) -> dict[str, Any]: ...


class ProxyView(AdminTarget, Protocol):
    """A proxy: what ``/metrics`` reads, besides :class:`AdminTarget`."""

    clusters: dict[str, Cluster]
    budget: BufferBudget

    @property
    def listeners(self) -> Sequence[ListenerView]: ...
