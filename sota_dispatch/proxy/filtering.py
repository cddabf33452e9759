"""A listener's stream filters from its config: checked, then built.

:func:`check_filters` runs with the protocol checks before anything is
served (and by ``--check-config``): each filter must be installed, its
options must read, and a route's ``per_filter_config`` may only name a
filter of its listener; every problem is reported at once, each with its
config path. :func:`build_chain` makes the instances, one per filter of the
listener and one per route override, and gives each route its overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config.model import ListenerConfig, ProxyConfig, StreamFilterConfig
from ..errors import ConfigError, SotaError
from ..filters.api import FilterContext, StreamFilter
from ..filters.chain import FilterChain
from ..filters.registry import FilterInfo, get_filter
from ..io.clock import Clock
from .routing import Route

__all__ = ["build_chain", "check_filters", "filter_name"]


def filter_name(config: StreamFilterConfig) -> str:
    """A filter's name in its chain: its ``name``, else its type."""
    return config.name or config.type


def _options(info: FilterInfo, raw: Mapping[str, str], path: str) -> tuple[dict[str, Any], list[ConfigError]]:
    """The filter's option values read from ``raw``, or the problems, each named."""
    errors = [ConfigError(f"{path}.{name}", problem) for name, problem in info.options.errors(raw, "filter").items()]
    if errors:
        return {}, errors
    values = info.options.read(raw, "filter")
    problems = info.factory.check_options(values)
    return values, [ConfigError(f"{path}.{name}", problem) for name, problem in problems.items()]


def check_filters(config: ProxyConfig) -> None:
    """Check every listener's stream filters and route overrides; raises one
    :class:`~sota_dispatch.ConfigError` listing every problem."""
    errors: list[ConfigError] = []
    for i, listener in enumerate(config.listeners):
        path = f"listeners[{i}]"
        known: dict[str, FilterInfo] = {}
        for j, entry in enumerate(listener.stream_filters):
            where = f"{path}.stream_filters[{j}]"
            name = filter_name(entry)
            if name in known:
                errors.append(ConfigError(f"{where}.name", f"two filters of this listener are named {name!r}"))
                continue
            try:
                info = get_filter(entry.type)
            except SotaError as exc:
                errors.append(ConfigError(f"{where}.type", str(exc)))
                continue
            known[name] = info
            errors += _options(info, entry.config, f"{where}.config")[1]
        for k, route in enumerate(listener.routes):
            for name, raw in route.per_filter_config.items():
                where = f"{path}.routes[{k}].per_filter_config.{name}"
                override = known.get(name)
                if override is None:
                    names = ", ".join(known) or "none"
                    errors.append(ConfigError(where, f"the listener has no stream filter {name!r} (it has: {names})"))
                else:
                    errors += _options(override, raw, where)[1]
    if errors:
        raise ConfigError.combine(errors)


def build_chain(config: ListenerConfig, routes: Sequence[Route], clock: Clock) -> FilterChain | None:
    """The listener's filter chain (None when it has none: no cost per
    request), each route given the instances its ``per_filter_config``
    overrides. The config was checked (:func:`check_filters`)."""
    if not config.stream_filters:
        return None
    filters: list[tuple[str, StreamFilter]] = []
    types: dict[str, FilterInfo] = {}
    for entry in config.stream_filters:
        name = filter_name(entry)
        info = types[name] = get_filter(entry.type)
        values = info.options.read(entry.config, "filter")
        filters.append((name, info.factory(values, FilterContext(config.name, None, clock))))
    overridden: set[str] = set()
    for index, route in enumerate(routes):
        overrides: dict[str, StreamFilter] = {}
        for name, raw in route.config.per_filter_config.items():
            info = types[name]
            values = info.options.read(raw, "filter")
            overrides[name] = info.factory(values, FilterContext(config.name, index, clock))
        route.filters = overrides
        overridden |= overrides.keys()
    return FilterChain(filters, frozenset(overridden))
