"""Logging: connection and stream ids on every line, a JSON format, the access log.

Each dispatcher runs in its own task and puts its connection id in a
context variable, so every log line written while serving that connection
(by the library or by a protocol) carries it, with no logger plumbing. The
JSON format writes one object per line for log shippers. The access log
(``sota_dispatch.access``) is off unless a listener sets ``access_log``;
nothing else logs per message at INFO. In JSON, an access line's fields
are keys of their own besides its ``message``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
import time
from collections.abc import Hashable
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "ACCESS_LOG",
    "ACCESS_LOG_FORMAT",
    "ConnectionFilter",
    "JsonFormatter",
    "RateLimitedLog",
    "configure_logging",
    "connection_id",
    "plural",
    "set_worker",
]

#: The id of the connection the current task serves (None outside one).
connection_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("sota_connection_id", default=None)

#: The access log's logger; one INFO line per request when a listener asks.
ACCESS_LOG = logging.getLogger("sota_dispatch.access")
#: The default access log line (``str.format`` fields; all of them, and
#: Envoy's operators, are in ``sota_dispatch.config.access_log``).
ACCESS_LOG_FORMAT = (
    "{listener} {protocol} conn={conn} stream={stream} cluster={cluster} endpoint={endpoint} "
    "outcome={outcome} attempts={attempts} duration_ms={duration_ms:.3f} bytes={bytes}"
)

_TEXT = "%(asctime)s %(levelname)s %(name)s%(worker_label)s%(conn_label)s: %(message)s"


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds and key, for events
    that come in storms (overflow under load, a dead upstream): the first
    ones are logged at once, the rest are counted and reported with the
    next line logged for that key.

    A log line costs microseconds and a storm has thousands of events a
    second: logging each would turn an overload into a worse one.
    """

    def __init__(
        self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 10.0, burst: int = 1
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.burst = burst
        self._window: dict[Hashable, tuple[float, int]] = {}
        self._suppressed: dict[Hashable, int] = {}

    def log(self, key: Hashable, message: str, *args: object, **kwargs: Any) -> bool:
        """Log ``message % args`` unless ``key`` used its burst within the
        interval; ``kwargs`` go to :meth:`logging.Logger.log` (``extra``).
        Returns whether the line was logged."""
        if not self.logger.isEnabledFor(self.level):
            return False
        now = time.monotonic()
        start, count = self._window.get(key, (-math.inf, 0))
        if now - start >= self.interval:
            start, count = now, 0
        if count >= self.burst:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._window[key] = (start, count + 1)
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (and %d more like it not logged)"
            args = (*args, suppressed)
        self.logger.log(self.level, message, *args, **kwargs)
        return True


class ConnectionFilter(logging.Filter):
    """Adds ``conn`` (the connection id or None), ``stream`` (the request's
    number on its connection, or None) and ``conn_label`` to records; a
    record that names them (``extra={"conn": ..., "stream": ...}``, as the
    proxy's lines about one request do) keeps its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = _worker
        record.worker_label = "" if _worker is None else f" [worker {_worker}]"
        conn = getattr(record, "conn", None)
        if conn is None:
            conn = connection_id.get()
        stream = getattr(record, "stream", None)
        record.conn = conn
        record.stream = stream
        if conn is None:
            record.conn_label = ""
        elif stream is None:
            record.conn_label = f" [conn {conn}]"
        else:
            record.conn_label = f" [conn {conn} stream {stream}]"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, conn, and the
    exception text when there is one; an access line's fields (the
    record's ``access`` dict) as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("worker", "conn", "stream"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ASCII only: a message may hold a lone surrogate (a Java peer's string),
        # which no UTF-8 stream can write; JSON readers decode the escapes.
        return json.dumps(entry)


#: This process's worker slot (None: not a worker process).
_worker: int | None = None


def set_worker(slot: int | None) -> None:
    """Label every log line of this process with its worker slot
    (``[worker 2]``; ``"worker": 2`` in JSON): the workers of a
    supervisor share its stderr."""
    global _worker
    _worker = slot


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``text`` or ``json`` (the CLI's setup)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ConnectionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def plural(count: int, noun: str) -> str:
    """``1 connection``, ``3 connections``: log lines and messages read as
    English (``noun`` is the singular; the plural adds an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
