"""simple_line: sota-mesh's query-line protocol as a sota-dispatch plugin.

Installed, it registers itself as ``simple_line`` through the
``sota_dispatch.protocols`` entry point.
"""

from __future__ import annotations

from .dispatcher import DEFAULT_MAX_LINE, SimpleLineDispatcher
from .proxy import SIMPLE_LINE_HOOKS, LineCodec, SimpleLineHooks
from .query import QueryError, parse_query, render_error, render_reply

__all__ = [
    "DEFAULT_MAX_LINE",
    "SIMPLE_LINE_HOOKS",
    "LineCodec",
    "QueryError",
    "SimpleLineHooks",
    "SimpleLineDispatcher",
    "parse_query",
    "render_error",
    "render_reply",
]
