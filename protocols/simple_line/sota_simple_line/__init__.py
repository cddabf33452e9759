"""simple_line: sota-mesh's query-line protocol as a sota-dispatch plugin.

Installed, it registers itself as ``simple_line`` through the
``sota_dispatch.protocols`` entry point.
"""

from __future__ import annotations

from .codec import LineCodec
from .dispatcher import DEFAULT_MAX_LINE, SimpleLineDispatcher
from .query import QueryError, parse_query, render_error, render_reply

__all__ = [
    "DEFAULT_MAX_LINE",
    "LineCodec",
    "QueryError",
    "SimpleLineDispatcher",
    "parse_query",
    "render_error",
    "render_reply",
]
