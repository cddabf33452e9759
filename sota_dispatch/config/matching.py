"""A route's or a filter's condition on a routing attribute, as a function.

``exact``, ``prefix``, ``regex`` (a full match, as Envoy's ``safe_regex``)
or ``present``: :func:`compile_match` turns one :class:`~.model.MatchConfig`
into a test of the attributes, once, when routes and filters are built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .model import MatchConfig

__all__ = ["Matcher", "compile_match"]

#: A condition compiled: a test of the routing attributes.
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
