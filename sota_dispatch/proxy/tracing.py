"""One OpenTelemetry span per proxied request, for listeners that trace.

A :class:`Tracing` is a listener's :data:`~.sites.Observer` for its
``tracing`` config: when a request ends it records one SERVER span that
began when the request arrived and ends now (its start time is taken back
by the request's duration, so no state rides on the exchange and a
listener that does not trace pays nothing). The span carries the request
as OpenTelemetry's RPC conventions name it (``rpc.system``: the protocol;
``rpc.service``, ``rpc.method``: :meth:`FrameSemantics.rpc_names
<sota_dispatch.FrameSemantics.rpc_names>`), where it went (``sota.cluster``,
``sota.upstream.address``, ``sota.attempts``), how it ended
(``sota.outcome``, ``sota.status``, an ERROR status for a failure) and the
protocol's own trace context (:meth:`FrameSemantics.trace_headers
<sota_dispatch.FrameSemantics.trace_headers>`) as ``sota.trace.<name>``
attributes: a bolt request's SOFA tracer ids, say. A W3C ``traceparent``
among them becomes the span's parent. The request's bytes are forwarded
untouched either way.

opentelemetry-api is imported only here, and only when a listener traces.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..config.tracing import TracingConfig
from ..io.writer import Encoded
from .sites import Ending

__all__ = ["ATTRIBUTE_PREFIX", "Tracing"]

log = logging.getLogger(__name__)

#: The prefix of the span attributes holding the protocol's trace headers.
ATTRIBUTE_PREFIX = "sota.trace."


class Tracing:
    """A listener's spans (see the module's documentation)."""

    __slots__ = ("_error", "_kind", "_propagator", "_tracer", "config")

    def __init__(self, config: TracingConfig) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.config = config
        # A proxy tracer until the process sets a provider: spans made after
        # that go to it, wherever the proxy was built.
        self._tracer = trace.get_tracer(config.tracer_name)
        self._propagator = TraceContextTextMapPropagator()
        self._kind = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR

    def __call__(
        self, exchange: Ending, data: Encoded, outcome: str, now: float, elapsed: float, response: Any
    ) -> None:
        end = time.time_ns()
        downstream = exchange.downstream
        semantics = downstream.semantics
        protocol_name = semantics.protocol_name if semantics is not None else "-"
        attributes: dict[str, str | int] = {
            "rpc.system": protocol_name,
            "sota.listener": downstream.listener.name,
            "sota.cluster": exchange.route.cluster.name,
            "sota.outcome": outcome,
            "sota.attempts": exchange.attempt,
        }
        if exchange.last_tried is not None:
            attributes["sota.upstream.address"] = exchange.last_tried.address
        remote = downstream.context.remote_address
        if remote is not None:
            attributes["client.address"] = remote
        headers: dict[str, str] = {}
        service = method = None
        if semantics is not None:
            if response is not None:
                status = semantics.status(response)
                if status is not None:
                    attributes["sota.status"] = status
            protocol = semantics.protocol
            try:  # a plugin's bug must not fail the request: its span just lacks these
                service, method = protocol.rpc_names(exchange.frame)
                headers = dict(protocol.trace_headers(exchange.frame))
            except Exception:
                log.debug("reading the trace headers failed", exc_info=True)
        if service is not None:
            attributes["rpc.service"] = service
        if method is not None:
            attributes["rpc.method"] = method
        for name, value in headers.items():
            attributes[ATTRIBUTE_PREFIX + name] = value
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        name = f"{service}/{method}" if service is not None and method is not None else service or protocol_name
        span = self._tracer.start_span(
            name, parent, kind=self._kind, attributes=attributes, start_time=end - int(elapsed * 1e9)
        )
        if outcome != "success":
            from opentelemetry.trace import Status

            span.set_status(Status(self._error, outcome))
        span.end(end_time=end)
