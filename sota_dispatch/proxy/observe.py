"""What hears of each request's end: the access log and the spans.

A listener builds its :data:`~.sites.Observer` from its config once (at
start and at each reload), and only when it has an access log or tracing:
an exchange then calls it from :meth:`~.exchange.Exchange.finish`; a
listener with neither has None there, and its requests pay one test.

The access log's record (:func:`access_record`) is a dict of the fields of
:data:`~sota_dispatch.config.access_log.FIELDS`; the line is the listener's
compiled format over it, and the record itself rides along as the log
record's ``access`` attribute, which the JSON format writes as keys of
their own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..config.access_log import RESPONSE_FLAGS, AccessFormat, compile_access_log
from ..config.model import ListenerConfig
from ..io.writer import Encoded, encoded_size
from ..logs import ACCESS_LOG
from ..protocol.semantics import BoundSemantics
from .sites import Ending, Observer
from .tracing import Tracing

__all__ = ["AccessLogger", "Observers", "access_record", "observer_for", "start_time"]

log = logging.getLogger(__name__)


#: The last second formatted, and its text (one tuple: read and replaced whole).
_second: tuple[int, str] = (-1, "")


def start_time(epoch: float) -> str:
    """``epoch`` as ISO 8601 in UTC with milliseconds (Envoy's ``%START_TIME%``)."""
    global _second
    second = int(epoch)
    cached = _second
    if cached[0] != second:  # formatted once per second, not per request
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int(epoch * 1000) % 1000:03d}Z"


def access_record(
    exchange: Ending, data: Encoded, outcome: str, now: float, elapsed: float, response: Any
) -> dict[str, object]:
    """The fields of one request's access line (see ``FIELDS``)."""
    downstream = exchange.downstream
    context = downstream.context
    semantics = downstream.semantics
    attempts = exchange.attempt
    size = encoded_size(data)
    return {
        "start_time": start_time(time.time() - elapsed),
        "listener": downstream.listener.name,
        "protocol": semantics.protocol_name if semantics is not None else "-",
        "conn": context.connection_id,
        "stream": exchange.stream,
        "remote_address": context.remote_address,
        "local_address": context.local_address,
        "cluster": exchange.route.cluster.name,
        "endpoint": exchange.last_tried.address if exchange.last_tried is not None else "-",
        "outcome": outcome,
        "flags": RESPONSE_FLAGS.get(outcome, "-"),
        "status": semantics.status(response) if response is not None and semantics is not None else None,
        "attempts": attempts,
        "duration_ms": elapsed * 1000,
        "upstream_ms": (now - exchange.try_started) * 1000 if attempts else None,
        "bytes": size,
        "bytes_sent": size,
        "bytes_received": _frame_size(semantics, exchange.frame),
    }


def _frame_size(semantics: BoundSemantics | None, frame: Any) -> int | None:
    if semantics is None:
        return None
    try:  # a plugin's bug must not fail the request: its line just lacks the size
        size: int | None = semantics.protocol.frame_size(frame)
        return size
    except Exception:
        log.debug("reading the request's size failed", exc_info=True)
        return None


class AccessLogger:
    """A listener's access log: one INFO line per request on
    ``sota_dispatch.access``, in its compiled format."""

    __slots__ = ("form",)

    def __init__(self, form: AccessFormat) -> None:
        self.form = form

    def __call__(
        self, exchange: Ending, data: Encoded, outcome: str, now: float, elapsed: float, response: Any
    ) -> None:
        if not ACCESS_LOG.isEnabledFor(20):  # logging.INFO: nothing is built for a silenced logger
            return
        record = access_record(exchange, data, outcome, now, elapsed, response)
        ACCESS_LOG.info(
            self.form.render(record),
            # the client's connection, not this task's; the fields for JSON
            extra={"conn": record["conn"], "stream": record["stream"], "access": record},
        )


class Observers:
    """Several observers, in order."""

    __slots__ = ("each",)

    def __init__(self, *each: Observer) -> None:
        self.each = each

    def __call__(
        self, exchange: Ending, data: Encoded, outcome: str, now: float, elapsed: float, response: Any
    ) -> None:
        for observer in self.each:
            observer(exchange, data, outcome, now, elapsed, response)


def observer_for(config: ListenerConfig) -> Observer | None:
    """The listener's observer (None: no access log, no tracing)."""
    found: list[Observer] = []
    if config.access_log is not None:
        found.append(AccessLogger(compile_access_log(config.access_log)))
    if config.tracing is not None and config.tracing.enabled:
        found.append(Tracing(config.tracing))
    if not found:
        return None
    return found[0] if len(found) == 1 else Observers(*found)
