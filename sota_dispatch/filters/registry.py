"""Which stream filters exist: explicit registrations plus installed plugins.

As protocols are found (:mod:`sota_dispatch.protocol.registry`): a
distribution declares its filter class under the entry-point group
``sota_dispatch.filters``, scanned once per process; the built-in filters
are declared so by sota-dispatch itself. Two sources claiming one name is
an error naming both.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import DuplicateFilterError, PluginLoadError, UnknownFilterError
from ..protocol.options import OptionSchema
from ..protocol.plugins import PluginRegistry
from .api import StreamFilter

__all__ = [
    "FILTER_ENTRY_POINT_GROUP",
    "FilterInfo",
    "available_filters",
    "get_filter",
    "register_filter",
    "unregister_filter",
]

#: The entry-point group a distribution registers its stream filters under.
FILTER_ENTRY_POINT_GROUP = "sota_dispatch.filters"


@attrs.frozen
class FilterInfo:
    """A registered stream filter: its name, class and where it came from."""

    name: str
    factory: type[StreamFilter]
    #: Who registered it, for error messages: a module or an entry point.
    source: str
    description: str = ""

    @property
    def options(self) -> OptionSchema:
        """The filter's options (its class's ``options``)."""
        return self.factory.options


def _info(name: str, factory: Any, source: str) -> FilterInfo:
    if not (isinstance(factory, type) and issubclass(factory, StreamFilter)):
        raise PluginLoadError(f"stream filter {name!r} ({source}) is {factory!r}, not a StreamFilter subclass")
    doc = (factory.__doc__ or "").strip().splitlines()
    return FilterInfo(name=name, factory=factory, source=source, description=doc[0] if doc else "")


def _new_registry() -> PluginRegistry[FilterInfo]:
    """A registry of stream filters that has not scanned yet (the process has one)."""
    return PluginRegistry(FILTER_ENTRY_POINT_GROUP, "stream filter", _info, UnknownFilterError, DuplicateFilterError)


_REGISTRY = _new_registry()


def register_filter(name: str, factory: type[StreamFilter], *, source: str | None = None) -> FilterInfo:
    """Register the filter class ``factory`` under ``name`` for this process.

    Raises :class:`~sota_dispatch.DuplicateFilterError`, naming both
    sources, when the name is taken by another registration or an
    installed plugin.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"invalid stream filter name {name!r}: use letters, digits, '_' and '-'")
    if not (isinstance(factory, type) and issubclass(factory, StreamFilter)):
        raise TypeError(f"stream filter {name!r}: expected a StreamFilter subclass, got {factory!r}")
    info = _info(name, factory, source or f"register_filter({factory.__module__}.{factory.__qualname__})")
    _REGISTRY.register(info)
    return info


def unregister_filter(name: str) -> None:
    """Forget an explicit registration (installed plugins stay visible)."""
    _REGISTRY.unregister(name)


def get_filter(name: str) -> FilterInfo:
    """The stream filter registered or installed under ``name``; raises
    :class:`~sota_dispatch.UnknownFilterError` listing those there are."""
    return _REGISTRY.get(name)


def available_filters() -> list[str]:
    """Names of every registered or installed stream filter, sorted."""
    return _REGISTRY.names()
