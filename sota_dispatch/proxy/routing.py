"""Routes at run time: compiled matchers, the first match wins.

A route's conditions test the request's routing attributes (the protocol's
class computes them, and only when a route or a hash balancer needs them),
compiled by :func:`~sota_dispatch.config.matching.compile_match`. Every
condition of a route must hold; a route without conditions matches
everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..cluster.cluster import Cluster
from ..config.matching import Matcher, compile_match
from ..config.model import RouteConfig
from ..filters.api import StreamFilter

__all__ = ["Route"]


class Route:
    """A route bound to its cluster, with its timeouts and retry policy."""

    __slots__ = (
        "attempts",
        "cluster",
        "config",
        "filters",
        "hash_key",
        "idempotent",
        "matchers",
        "per_try_timeout",
        "retry_on",
        "retry_statuses",
        "timeout",
    )

    def __init__(self, config: RouteConfig, cluster: Cluster) -> None:
        self.config = config
        self.cluster = cluster
        self.matchers: Sequence[Matcher] = tuple(compile_match(m) for m in config.match)
        self.hash_key = config.hash_key
        self.timeout = config.timeout
        self.per_try_timeout = config.per_try_timeout
        self.attempts = config.retry.attempts
        self.retry_on = frozenset(config.retry.retry_on)
        self.retry_statuses = frozenset(config.retry.statuses) if "status" in self.retry_on else frozenset()
        self.idempotent = config.retry.idempotent
        #: The stream filters this route overrides (``per_filter_config``),
        #: by name; the listener builds them.
        self.filters: Mapping[str, StreamFilter] = {}

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return all(matcher(attributes) for matcher in self.matchers)
