"""A proxy's TLS: made once from the config (every file problem reported
with its path), and reloaded from the same files when certificates rotate."""

from __future__ import annotations

import logging

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
    #: ``{listener or cluster name: config path}``, for errors on reload.
    paths: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def load(cls, config: ProxyConfig) -> ProxyTLS:
        """Read every certificate, key and CA file the config names; raises
        one :class:`~sota_dispatch.ConfigError` naming every problem."""
        made = cls()
        errors: list[ConfigError] = []
        for i, listener in enumerate(config.listeners):
            if listener.tls is not None:
                path = f"listeners[{i}].tls"
                try:
                    made.listeners[listener.name] = listener.tls.server_tls()
                except ConfigError as exc:
                    errors.append(cv.within(exc, path))
                made.paths[f"listener {listener.name}"] = path
        for i, cluster in enumerate(config.clusters):
            if cluster.tls is not None:
                path = f"clusters[{i}].tls"
                try:
                    made.clusters[cluster.name] = cluster.tls.client_tls()
                except ConfigError as exc:
                    errors.append(cv.within(exc, path))
                made.paths[f"cluster {cluster.name}"] = path
        if errors:
            raise ConfigError.combine(errors)
        return made

    def reload(self) -> list[ConfigError]:
        """Read every file again. New connections use what loaded; where a
        file cannot be loaded, the old certificates stay and the problem is
        returned (and logged)."""
        errors: list[ConfigError] = []
        tls: list[tuple[str, ServerTLS | ClientTLS]] = [
            *((f"listener {name}", each) for name, each in self.listeners.items()),
            *((f"cluster {name}", each) for name, each in self.clusters.items()),
        ]
        for what, each in tls:
            try:
                each.reload()
            except ConfigError as exc:
                error = cv.within(exc, self.paths[what])
                log.error("TLS of %s not reloaded (the old certificates stay): %s", what, error)
                errors.append(error)
            else:
                log.info("TLS of %s reloaded (generation %d)", what, each.generation)
        return errors
