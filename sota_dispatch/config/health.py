"""How a cluster judges and guards its endpoints: circuit breakers, outlier
detection, thresholds and active health checks, as config values.

Part of the configuration model (:mod:`.model` re-exports them): frozen
attrs classes whose fields are checked by their rules when built.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

import attrs

import sota_dispatch.config.values as cv

__all__ = [
    "HEALTH_CHECK_KINDS",
    "BreakerConfig",
    "HealthCheckConfig",
    "HealthCheckKind",
    "OutlierConfig",
    "ThresholdsConfig",
]

#: What a health check does: connect only, or speak the protocol.
HealthCheckKind: TypeAlias = Literal["tcp", "protocol"]

HEALTH_CHECK_KINDS: tuple[str, ...] = get_args(HealthCheckKind)

_COUNT = cv.Rule(cv.integer)  # >= 1
_AT_LEAST_0 = cv.Rule(cv.integer, minimum=0)
_SECONDS = cv.Rule(cv.duration, kind="seconds (a number)")


@attrs.frozen
class BreakerConfig:
    """sota-mesh's per-endpoint circuit breaker (its defaults)."""

    #: Failures in a row the breaker tolerates (0: the first one opens it).
    consecutive_failures: int = attrs.field(default=5, validator=_AT_LEAST_0)
    failure_ratio: float = attrs.field(default=0.6, validator=cv.Rule(cv.fraction))
    min_requests: int = attrs.field(default=3, validator=_COUNT)
    interval: float = attrs.field(default=10.0, validator=_SECONDS)
    open_timeout: float = attrs.field(default=5.0, validator=_SECONDS)
    half_open_requests: int = attrs.field(default=1, validator=_COUNT)


@attrs.frozen
class OutlierConfig:
    """Envoy's consecutive-failure outlier detection."""

    consecutive_failures: int = attrs.field(default=5, validator=_COUNT)
    base_ejection_time: float = attrs.field(default=30.0, validator=_SECONDS)
    max_ejection_time: float = attrs.field(default=300.0, validator=_SECONDS)
    max_ejection_percent: float = attrs.field(default=50.0, validator=cv.Rule(cv.percent))


@attrs.frozen
class ThresholdsConfig:
    """Envoy's circuit-breaker thresholds for one cluster: beyond them a
    request gets the protocol's overflow reply at once (no retry beyond
    ``max_retries`` retries at a time)."""

    max_connections: int = attrs.field(default=1024, validator=_AT_LEAST_0)
    max_pending_requests: int = attrs.field(default=1024, validator=_AT_LEAST_0)
    max_requests: int = attrs.field(default=1024, validator=_AT_LEAST_0)
    max_retries: int = attrs.field(default=3, validator=_AT_LEAST_0)


@attrs.frozen
class HealthCheckConfig:
    """Active health checks of a cluster's endpoints.

    ``protocol`` checks connect, complete the protocol's handshake and send
    its probe (a bolt or dubbo heartbeat, the ``send`` line for
    simple_line); ``tcp`` checks only connect.
    """

    interval: float = attrs.field(default=5.0, validator=_SECONDS)
    timeout: float = attrs.field(default=1.0, validator=_SECONDS)
    healthy_threshold: int = attrs.field(default=2, validator=_COUNT)
    unhealthy_threshold: int = attrs.field(default=3, validator=_COUNT)
    kind: HealthCheckKind = attrs.field(default="protocol", validator=cv.Rule(cv.choice, choices=HEALTH_CHECK_KINDS))
    send: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
