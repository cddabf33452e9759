"""What the admin endpoint sees of a proxy, declared here.

The admin sits below the proxy, which starts it: it reads the proxy only
through :class:`ProxyView`, so the proxy layer may import it and nothing
here imports the proxy back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..cluster.cluster import Cluster
from ..cluster.stats import ListenerStats
from ..config.model import ListenerConfig, ProxyConfig
from ..errors import ConfigError
from ..io.budget import BufferBudget
from ..protocol.server import Server

__all__ = ["ListenerView", "ProxyView"]


class ListenerView(Protocol):
    """One listener: its config, server and counters."""

    name: str
    config: ListenerConfig
    server: Server
    stats: ListenerStats


class ProxyView(Protocol):
    """A proxy: what ``/metrics``, ``/clusters``, ``/config_dump``,
    ``/ready``, ``/drain`` and ``/reload_certificates`` read or do."""

    config: ProxyConfig
    clusters: dict[str, Cluster]
    budget: BufferBudget

    @property
    def listeners(self) -> Sequence[ListenerView]: ...

    @property
    def draining(self) -> bool: ...

    def shutdown(self) -> None: ...

    def reload_certificates(self) -> list[ConfigError]: ...
