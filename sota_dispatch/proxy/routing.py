"""Routes at run time: compiled matchers, the first match wins.

A route's conditions test the request's routing attributes (the protocol's
class computes them, and only when a route or a hash balancer needs them):
``exact``, ``prefix``, ``regex`` (a full match, as Envoy's ``safe_regex``)
or ``present``. Every condition of a route must hold; a route without
conditions matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from ..cluster.cluster import Cluster
from ..config.model import MatchConfig, RouteConfig

__all__ = ["Route", "compile_match"]

Matcher = Callable[[Mapping[str, str]], bool]


def compile_match(match: MatchConfig) -> Matcher:
    """One condition as a function of the attributes."""
    name = match.attribute
    if match.exact is not None:
        exact = match.exact
        return lambda attributes: attributes.get(name) == exact
    if match.prefix is not None:
        prefix = match.prefix

        def has_prefix(attributes: Mapping[str, str]) -> bool:
            value = attributes.get(name)
            return value is not None and value.startswith(prefix)

        return has_prefix
    if match.regex is not None:
        pattern = re.compile(match.regex)
        return lambda attributes: name in attributes and pattern.fullmatch(attributes[name]) is not None
    present = bool(match.present)
    return lambda attributes: (name in attributes) is present


class Route:
    """A route bound to its cluster, with its timeouts and retry policy."""

    __slots__ = (
        "attempts",
        "cluster",
        "config",
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

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return all(matcher(attributes) for matcher in self.matchers)
