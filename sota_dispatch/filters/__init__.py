"""Stream filters: per-request extensions of the proxy, registered like protocols.

The API (:class:`StreamFilter`, :class:`FilterRequest`, :class:`LocalReply`,
:class:`FilterContext`), the registry (:func:`register_filter`,
:func:`get_filter`, :func:`available_filters`, the entry-point group
:data:`FILTER_ENTRY_POINT_GROUP`) and the built-in filters
(:class:`FaultInject`, :class:`LocalRateLimit`, :class:`Rbac`). A listener
runs its ``stream_filters`` in order on every request; see
``docs/filters.rst``.
"""

from __future__ import annotations

from .api import FilterContext, FilterRequest, FilterResult, LocalReply, StreamFilter
from .builtin import FaultInject, LocalRateLimit, Rbac
from .chain import FilterChain
from .registry import (
    FILTER_ENTRY_POINT_GROUP,
    FilterInfo,
    available_filters,
    get_filter,
    register_filter,
    unregister_filter,
)

__all__ = [
    "FILTER_ENTRY_POINT_GROUP",
    "FaultInject",
    "FilterChain",
    "FilterContext",
    "FilterInfo",
    "FilterRequest",
    "FilterResult",
    "LocalReply",
    "LocalRateLimit",
    "Rbac",
    "StreamFilter",
    "available_filters",
    "get_filter",
    "register_filter",
    "unregister_filter",
]
