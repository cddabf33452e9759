"""A listener's ``tracing``: one OpenTelemetry span per proxied request.

Optional: spans need ``opentelemetry-api`` (``pip install
'sota-dispatch[otel]'``), and turning tracing on without it is a config
error, never a silent no-op. Where the spans go is the tracer provider's
business (the OpenTelemetry SDK and its exporter, configured by the
process: ``opentelemetry-instrument``, or the embedding program); the
service name too is the provider's (its resource, ``OTEL_SERVICE_NAME``).
"""

from __future__ import annotations

import importlib

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError

__all__ = ["TracingConfig", "opentelemetry_missing"]


def opentelemetry_missing() -> str | None:
    """Why spans cannot be made here (None: opentelemetry-api is importable)."""
    try:
        importlib.import_module("opentelemetry.trace")
    except ImportError as exc:
        return f"tracing needs opentelemetry-api (pip install 'sota-dispatch[otel]'): {exc}"
    return None


@attrs.frozen
class TracingConfig:
    """Spans of a listener's requests: one SERVER span per request, from
    its arrival to its answer, its parent the request's W3C ``traceparent``
    when the protocol carries one (a bolt header, a dubbo attachment)."""

    enabled: bool = attrs.field(default=True, validator=cv.Rule(cv.boolean))
    #: The tracer (instrumentation scope) the spans are made by.
    tracer_name: str = attrs.field(default="sota_dispatch", validator=cv.Rule(cv.string))

    def __attrs_post_init__(self) -> None:
        if self.enabled:
            problem = opentelemetry_missing()
            if problem is not None:
                raise ConfigError("enabled", problem)
