"""A proxy's TLS: made once from the config (every file problem reported
with its path), and reloaded from the same files when certificates rotate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import attrs

import sota_dispatch.config.values as cv

from ..config.model import ProxyConfig
from ..errors import ConfigError
from ..io.tls import ClientTLS, ServerTLS

__all__ = ["ProxyTLS"]

log = logging.getLogger(__name__)


@attrs.define
class ProxyTLS:
    """The TLS of every listener and cluster that has some, by name."""

    listeners: dict[str, ServerTLS] = attrs.field(factory=dict)
    clusters: dict[str, ClientTLS] = attrs.field(factory=dict)
    #: Each one with its config path (``listeners[0].tls``), for errors on reload.
    by_path: dict[str, ServerTLS | ClientTLS] = attrs.field(factory=dict)

    @classmethod
    def load(cls, config: ProxyConfig) -> ProxyTLS:
        """Read every certificate, key and CA file the config names; raises
        one :class:`~sota_dispatch.ConfigError` naming every problem."""
        made = cls()
        errors: list[ConfigError] = []

        def make(path: str, build: Callable[[], ServerTLS | ClientTLS]) -> ServerTLS | ClientTLS | None:
            try:
                made.by_path[path] = tls = build()
            except ConfigError as exc:
                errors.append(cv.within(exc, path))
                return None
            return tls

        for i, listener in enumerate(config.listeners):
            if listener.tls is not None and isinstance(
                tls := make(f"listeners[{i}].tls", listener.tls.server_tls), ServerTLS
            ):
                made.listeners[listener.name] = tls
        for i, cluster in enumerate(config.clusters):
            if cluster.tls is not None and isinstance(
                tls := make(f"clusters[{i}].tls", cluster.tls.client_tls), ClientTLS
            ):
                made.clusters[cluster.name] = tls
        if errors:
            raise ConfigError.combine(errors)
        return made

    def reload(self) -> list[ConfigError]:
        """Read every file again. New connections use what loaded; where a
        file cannot be loaded, the old certificates stay and the problem is
        returned (and logged)."""
        errors: list[ConfigError] = []
        for path, tls in self.by_path.items():
            try:
                tls.reload()
            except ConfigError as exc:
                error = cv.within(exc, path)
                log.error("%s not reloaded (the old certificates stay): %s", path, error)
                errors.append(error)
            else:
                log.info("%s reloaded (generation %d)", path, tls.generation)
        return errors

    def merged(
        self, new: ProxyTLS, config: ProxyConfig, listeners: Collection[str], clusters: Collection[str]
    ) -> ProxyTLS:
        """The TLS in force after a reload to ``config``: ``new``'s (loaded
        from it) for the ``listeners`` and ``clusters`` added or replaced,
        and this one's for those that stay, whose connections
        use them (a certificate reload must reach them too)."""
        merged = ProxyTLS()
        for i, listener in enumerate(config.listeners):
            source = new if listener.name in listeners else self
            if (server := source.listeners.get(listener.name)) is not None:
                merged.listeners[listener.name] = merged.by_path[f"listeners[{i}].tls"] = server
        for i, cluster in enumerate(config.clusters):
            source = new if cluster.name in clusters else self
            if (client := source.clusters.get(cluster.name)) is not None:
                merged.clusters[cluster.name] = merged.by_path[f"clusters[{i}].tls"] = client
        return merged
