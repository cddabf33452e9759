"""Which endpoints deserve traffic: circuit breakers and outlier detection.

Pure state machines on a caller-given clock (no I/O, no tasks), fed with
the outcome of every try and asked before every pick:

* :class:`EndpointBreaker` is sota-mesh's per-endpoint breaker: *closed*
  until more than ``consecutive_failures`` failures in a row, or a failure
  ratio of at least ``failure_ratio`` over at least ``min_requests``
  requests within the counting ``interval``; then *open* (no traffic) for
  ``open_timeout``; then *half-open*: at most ``half_open_requests`` probes
  go through; a probe's success closes it, a failure opens it again.
* :class:`OutlierDetector` is Envoy's consecutive-failure ejection: an
  endpoint with ``consecutive_failures`` failures in a row is ejected for
  ``base_ejection_time`` times the number of its ejections so far (capped
  by ``max_ejection_time``), but never more than ``max_ejection_percent``
  of the cluster, and never every endpoint.
* :class:`ProtocolHealth` holds both, and the connect-failure backoff, for
  the traffic of one protocol: an endpoint is judged per protocol spoken to
  it, so a client of a protocol it does not serve (an ``auto`` listener
  routes whatever it detects) fails only its own tries and never takes the
  endpoint away from the protocols it does serve.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Collection, Hashable, Mapping
from typing import Generic, TypeVar

from ..config.health import BreakerConfig, OutlierConfig

__all__ = ["BreakerConfig", "BreakerState", "EndpointBreaker", "OutlierConfig", "OutlierDetector", "ProtocolHealth"]

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class EndpointBreaker:
    """One endpoint's breaker. :meth:`allow` before a try, :meth:`record` after."""

    def __init__(self, config: BreakerConfig, name: str = "") -> None:
        self.config = config
        self.name = name
        self.state = BreakerState.CLOSED
        #: How often it went to each state (the "counted" state changes).
        self.transitions: dict[BreakerState, int] = dict.fromkeys(BreakerState, 0)
        #: Bumped by every state change: an outcome reported with an older
        #: generation (a try let through before) changes nothing.
        self.generation = 0
        self._consecutive = 0
        self._window_start = -math.inf
        self._requests = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    def _move(self, state: BreakerState, now: float, why: str) -> None:
        log.warning("breaker %s: %s -> %s (%s)", self.name, self.state.value, state.value, why)
        self.state = state
        self.generation += 1
        self.transitions[state] += 1
        self._consecutive = self._requests = self._failures = self._probes = 0
        self._window_start = now
        if state is BreakerState.OPEN:
            self._opened_at = now

    def allow(self, now: float) -> bool:
        """May a try go to this endpoint now? (A half-open yes takes a probe.)"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.config.open_timeout:
                return False
            self._move(BreakerState.HALF_OPEN, now, f"{self.config.open_timeout:g}s open")
        if self._probes < self.config.half_open_requests:
            self._probes += 1
            return True
        return False

    def available(self, now: float) -> bool:
        """Like :meth:`allow`, without taking a probe (for choosing)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self._opened_at >= self.config.open_timeout
        return self._probes < self.config.half_open_requests

    def release(self, generation: int | None = None) -> None:
        """A try :meth:`allow` let through ended without a verdict (the
        client left, the pool overflowed): a half-open probe goes back."""
        if generation is not None and generation != self.generation:
            return
        if self.state is BreakerState.HALF_OPEN and self._probes:
            self._probes -= 1

    def record(self, ok: bool, now: float, generation: int | None = None) -> None:
        """The outcome of a try that :meth:`allow` let through (in
        ``generation``, if given: see :attr:`generation`)."""
        if generation is not None and generation != self.generation:
            return  # let through in another state: not this state's verdict
        config = self.config
        if self.state is BreakerState.HALF_OPEN:
            if ok:
                self._move(BreakerState.CLOSED, now, "a probe succeeded")
            else:
                self._move(BreakerState.OPEN, now, "a probe failed")
            return
        if self.state is BreakerState.OPEN:
            return  # an answer to a try from before it opened
        if now - self._window_start >= config.interval:
            self._window_start, self._requests, self._failures = now, 0, 0
        self._requests += 1
        if ok:
            self._consecutive = 0
            return
        self._failures += 1
        self._consecutive += 1
        if self._consecutive > config.consecutive_failures:
            self._move(BreakerState.OPEN, now, f"{self._consecutive} failures in a row")
        elif self._requests >= config.min_requests and self._failures / self._requests >= config.failure_ratio:
            self._move(
                BreakerState.OPEN, now, f"{self._failures} of {self._requests} failed within {config.interval:g}s"
            )


class OutlierDetector:
    """Ejections for one cluster's endpoints (any hashable names)."""

    def __init__(self, config: OutlierConfig, endpoints: int, name: str = "") -> None:
        self.config = config
        self.name = name
        self.endpoints = endpoints
        #: Ejected endpoint -> when it returns.
        self.ejected: dict[object, float] = {}
        #: Ejections so far, per endpoint (the ejection time grows with it).
        self.ejections: dict[object, int] = {}
        self._consecutive: dict[object, int] = {}
        self._returned: dict[object, float] = {}

    def set_endpoints(self, endpoints: Collection[object]) -> None:
        """Forget the endpoints that left; the cap follows the new count."""
        self.endpoints = len(endpoints)
        for known in (self.ejected, self.ejections, self._consecutive, self._returned):
            for endpoint in [e for e in known if e not in endpoints]:
                del known[endpoint]

    @property
    def cap(self) -> int:
        """How many endpoints may be ejected at once: the percentage, at
        least one when there are several, never all."""
        allowed = math.floor(self.endpoints * self.config.max_ejection_percent / 100)
        return max(0, min(max(allowed, 1), self.endpoints - 1))

    def is_ejected(self, endpoint: object, now: float) -> bool:
        until = self.ejected.get(endpoint)
        if until is None:
            return False
        if now < until:
            return True
        del self.ejected[endpoint]
        self._consecutive.pop(endpoint, None)  # a fresh count from its return
        self._returned[endpoint] = now
        log.info("outlier %s: %s returns", self.name, endpoint)
        return False

    def record(self, endpoint: object, ok: bool, now: float) -> None:
        if self.is_ejected(endpoint, now):
            return  # answers to tries from before the ejection do not count
        if ok:
            self._consecutive.pop(endpoint, None)
            returned = self._returned.get(endpoint)
            if returned is not None and now - returned >= self.config.base_ejection_time:
                # Healthy for a base ejection time since its return: the
                # next ejection is one step shorter again (as in Envoy).
                self.ejections[endpoint] = max(0, self.ejections.get(endpoint, 0) - 1)
                self._returned[endpoint] = now
            return
        count = self._consecutive.get(endpoint, 0) + 1
        self._consecutive[endpoint] = count
        if count < self.config.consecutive_failures:
            return
        for other in list(self.ejected):
            self.is_ejected(other, now)  # let the expired ones go first
        if len(self.ejected) >= self.cap:
            return  # the cap: a cluster never ejects everything
        times = self.ejections.get(endpoint, 0) + 1
        self.ejections[endpoint] = times
        duration = min(self.config.base_ejection_time * times, self.config.max_ejection_time)
        self.ejected[endpoint] = now + duration
        self._consecutive.pop(endpoint, None)
        log.warning("outlier %s: %s ejected for %gs (%d failures in a row)", self.name, endpoint, duration, count)


#: An endpoint whose connect failed gets no traffic for this long, doubling
#: with each further failure up to :data:`DOWN_MAX` (passive health; active
#: health checks and outlier detection come on top).
DOWN_BASE = 0.25
DOWN_MAX = 10.0


E = TypeVar("E", bound=Hashable)


class ProtocolHealth(Generic[E]):
    """What the tries of one protocol have taught a cluster about its endpoints.

    ``endpoints`` maps each endpoint to its name in logs. The breakers and
    the outlier detector exist only when configured.
    """

    def __init__(
        self,
        protocol: str,
        endpoints: Mapping[E, str],
        cluster: str,
        *,
        breaker: BreakerConfig | None = None,
        outlier: OutlierConfig | None = None,
    ) -> None:
        self.protocol = protocol
        label = f"{cluster} ({protocol})" if protocol else cluster
        #: Endpoints in connect-failure backoff -> when they may be tried again.
        self.down: dict[E, float] = {}
        self._connect_failures: dict[E, int] = {}
        self._label = label
        self._breaker = breaker
        self._endpoints = endpoints
        #: sota-mesh's per-endpoint breakers (None: off).
        self.breakers = (
            None
            if breaker is None
            else {endpoint: EndpointBreaker(breaker, f"{label}/{name}") for endpoint, name in endpoints.items()}
        )
        #: Envoy's outlier ejection (None: off).
        self.outliers = None if outlier is None else OutlierDetector(outlier, len(endpoints), label)
        #: Whether try outcomes matter (a breaker or outlier detection is on).
        self.judged = self.breakers is not None or self.outliers is not None

    def set_endpoints(self, endpoints: Mapping[E, str]) -> None:
        """The cluster's endpoints changed: those that stay keep what was
        learnt of them (backoff, breaker, ejections); new ones start fresh;
        what was known of those that left is forgotten."""
        self._endpoints = endpoints
        for known in (self.down, self._connect_failures):
            for endpoint in [e for e in known if e not in endpoints]:
                del known[endpoint]
        if self.breakers is not None and self._breaker is not None:
            before = self.breakers
            self.breakers = {
                endpoint: before.get(endpoint) or EndpointBreaker(self._breaker, f"{self._label}/{name}")
                for endpoint, name in endpoints.items()
            }
        if self.outliers is not None:
            self.outliers.set_endpoints(endpoints)

    def unavailable(self, endpoint: E, now: float) -> bool:
        """In connect backoff, ejected, or behind an open breaker."""
        until = self.down.get(endpoint)
        if until is not None and until > now:
            return True
        if self.outliers is not None and self.outliers.is_ejected(endpoint, now):
            return True
        return self.breakers is not None and not self.breakers[endpoint].available(now)

    def connect_failed(self, endpoint: E, now: float) -> tuple[int, float]:
        """A connect (or handshake) failed: ``(failures in a row, backoff)``."""
        failures = self._connect_failures.get(endpoint, 0) + 1
        self._connect_failures[endpoint] = failures
        backoff = min(DOWN_MAX, DOWN_BASE * 2 ** (failures - 1))
        self.down[endpoint] = now + backoff
        return failures, backoff

    def connected(self, endpoint: E) -> bool:
        """A connection completed its handshake; True if it had been failing."""
        self.down.pop(endpoint, None)
        return bool(self._connect_failures.pop(endpoint, 0))

    def outcome(self, endpoint: E, ok: bool | None, now: float, generation: int | None = None) -> None:
        """A try succeeded or failed (None: it ended without a verdict on the
        endpoint). ``generation``: the breaker's when the try was let through."""
        if endpoint not in self._endpoints:
            return  # it left the cluster while its try ran: nothing to judge
        breakers = self.breakers
        breaker = None if breakers is None else breakers[endpoint]
        if ok is None:
            if breaker is not None:
                breaker.release(generation)
            return
        if breaker is not None:
            breaker.record(ok, now, generation)
        if self.outliers is not None:
            self.outliers.record(endpoint, ok, now)

    def state(self, endpoint: E, now: float) -> str:
        """``ejected``, ``unreachable`` or ``healthy``, for the admin."""
        if self.outliers is not None and self.outliers.is_ejected(endpoint, now):
            return "ejected"
        if self.down.get(endpoint, 0.0) > now:
            return "unreachable"
        return "healthy"
