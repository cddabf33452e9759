"""One client request on its way through the proxy, and its tries.

An :class:`Exchange` is plain state, not a task: the client connection's
reader creates it and starts the first try, an upstream connection's reader
completes it, the proxy's timer task times it out. Whatever happens, it
ends exactly once, with the upstream's answer or the protocol's error
reply (a oneway request ends when it is sent), and a late answer to an
abandoned try is dropped because the try number no longer matches.
"""

from __future__ import annotations

import logging
import types
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import trait

from ..cluster.balancers import Endpoint
from ..cluster.health import ProtocolHealth
from ..cluster.request import Request
from ..cluster.stats import EndpointStats
from ..filters.api import FilterRequest
from ..io.writer import Encoded
from ..protocol.bound import BoundSemantics
from ..protocol.codec import Failure
from .routing import Route
from .sites import Downstream
from .timers import TimerBucket

if TYPE_CHECKING:
    from ..cluster.pool import UpstreamConnection

__all__ = ["Exchange", "ExchangeSink", "FilteredExchange", "start_try"]

log = logging.getLogger(__name__)


def _bucket(bounds: tuple[float, ...], value: float, hint: int = 0) -> int:
    """``bisect_left(bounds, value)`` written out for the compiled build,
    where the C ``bisect_left`` is a generic call comparing boxed floats
    (~0.7k instructions, twice per request). It tries ``hint`` first, the
    bucket of the histogram's last value (requests of one batch take about
    as long: two compares), then walks up from the smallest bound (a
    proxy's latencies sit in the first buckets). Each bound read is a boxed
    float made a C double: walking to 5 ms, twelve a request at 1,000 in
    flight. The interpreter keeps ``bisect_left``, its fastest there."""
    size = len(bounds)
    if hint < size:
        if value <= bounds[hint] and (hint == 0 or bounds[hint - 1] < value):
            return hint
    elif size == 0 or bounds[size - 1] < value:  # the hint is the last bucket (+Inf)
        return size
    index = 0
    for bound in bounds:
        if bound >= value:
            return index
        index += 1
    return index


#: Whether this module runs compiled (mypyc makes its functions built-in ones).
_COMPILED: Final = not isinstance(_bucket, types.FunctionType)
#: What a first try excludes: never changed (``Cluster.pick`` only reads it).
_NOTHING_TRIED: Final[list[Endpoint]] = []


@trait
class ExchangeSink:
    """Where an exchange's end goes: its client connection, which writes the
    reply (:class:`~.connection.ProxyConnection` is one).

    The rest of what an exchange needs of its connection is the
    :class:`~.sites.Downstream` protocol; this one call per request is a
    mypyc trait instead (a class, a no-op decorator in the interpreter), so
    the compiled build calls it through a vtable: through the protocol it
    was a method looked up by name (~450 instructions per request). The
    connection's own module implements it: a trait's method inherited
    from an interpreted base would not be seen by the vtable.
    """

    def exchange_done(self, exchange: Exchange, data: Encoded) -> None:
        """An exchange of this connection ended with ``data`` for the client."""
        raise NotImplementedError


class Exchange(Request):
    """A request, its route, and the state of its current try."""

    __slots__ = (
        "_retried",
        "breaker_generation",
        "deadline",
        "deadline_slot",
        "deadline_timer",
        "downstream",
        "endpoint",
        "endpoint_stats",
        "health",
        "is_retry",
        "key",
        "last_tried",
        "observer",
        "reply",
        "route",
        "semantics",
        "sink",
        "started",
        "stream",
        "try_slot",
        "try_started",
        "try_timer",
    )

    def __init__(
        self,
        downstream: Downstream,
        semantics: BoundSemantics,
        frame: Any,
        route: Route,
        key: str | None,
        deadline: float,
        oneway: bool,
        started: float,
        stream: int = 0,
        observer: Callable[..., None] | None = None,
    ) -> None:
        # Request's fields, set here rather than by its __init__: one call
        # less per request in the pure build.
        self.frame = frame
        self.oneway = oneway
        self.attempt = 0
        self.upstream = None
        self.upstream_id = 0
        self.done = False
        self.downstream = downstream
        #: The same connection, for the reply (see :class:`ExchangeSink`):
        #: not cast(), a call per request in the interpreter; compiled, the
        #: assignment checks the type as cast() would.
        self.sink: ExchangeSink = downstream  # type: ignore[assignment]
        #: The client connection's per-frame methods, kept: read through
        #: ``downstream`` (a Protocol) they were a lookup by name per use
        #: in the compiled build.
        self.semantics = semantics
        self.route = route
        self.started = started
        #: The request's number on its client connection (in log lines).
        self.stream = stream
        #: The hash balancer's key (the route's ``hash_key`` attribute).
        self.key = key
        self.deadline = deadline
        self.breaker_generation = 0
        #: Whether the current try is a retry counted against max_retries.
        self.is_retry = False
        #: The endpoint of the last try (None before the first); the ones
        #: before it are kept only once there is a retry (see :attr:`tried`).
        self.last_tried: Endpoint | None = None
        self._retried: list[Endpoint] | None = None
        self.endpoint: Endpoint | None = None
        #: The current try's endpoint counters (kept here: the endpoint may
        #: leave the cluster before the try ends).
        self.endpoint_stats: EndpointStats | None = None
        #: The passive health the current try reports to (its protocol's).
        self.health: ProtocolHealth[Endpoint] | None = None
        self.try_started = 0.0
        #: The timer buckets holding this exchange (its deadline's, its
        #: current try's): it leaves them when it no longer needs them.
        self.deadline_timer: TimerBucket | None = None
        self.try_timer: TimerBucket | None = None
        #: Their slots in them (for :meth:`TimerBucket.leave`).
        self.deadline_slot = 0
        self.try_slot = 0
        #: The reply, while an ordered client waits for earlier ones.
        self.reply: Encoded | None = None
        #: What hears of its end (the listener's access log, spans), as
        #: when it started: see :class:`~.policy.RequestPolicy`.
        self.observer = observer

    @property
    def tried(self) -> list[Endpoint]:
        """The endpoints tried, in order (a new list: most requests are
        tried once, and a list per request cost the compiled build two
        allocations and their release)."""
        last = self.last_tried
        if last is None:
            return []
        earlier = self._retried
        return [*earlier, last] if earlier else [last]

    def _log_ids(self) -> dict[str, int]:
        return {"conn": self.downstream.context.connection_id, "stream": self.stream}

    # -- timers (tag 0: the overall deadline; tag n: try n's deadline) ----------

    def timer_live(self, tag: int) -> bool:
        return not self.done and (tag == 0 or tag == self.attempt)

    def applied_timeout(self) -> float:
        """The timeout this request got: its route's, or its own when shorter
        (a dubbo ``timeout`` attachment, a bolt frame's timeout)."""
        timeout = self.route.timeout
        own = self.semantics.timeout(self.frame)
        return own if own is not None and own < timeout else timeout

    def timer_fired(self, tag: int) -> None:
        if tag == 0:
            self._end_try(None, stuck=True, failed=True)
            # The client learns the deadline that was applied, whichever it was.
            self.fail(Failure.TIMEOUT, public=f"no answer within {self.applied_timeout():g}s")
        else:
            per_try = self.route.per_try_timeout
            self.try_failed("per_try_timeout", Failure.TIMEOUT, public=f"no answer within {per_try:g}s (per try)")

    # -- outcomes of a try ----------------------------------------------------

    def _end_try(self, latency: float | None, *, stuck: bool = False, failed: bool | None = None) -> None:
        """Leave the current try; ``stuck``: its upstream gave no answer in
        time; ``failed``: the endpoint's fault (True) or not (False), for
        the breaker and outlier detection (None: neither, e.g. a client gone)."""
        timer = self.try_timer
        if timer is not None:
            self.try_timer = None
            timer.leave(self.try_slot, self)
        upstream: UpstreamConnection | None = self.upstream  # typed: a direct call when compiled
        if upstream is not None:
            self.upstream = None
            upstream.forget(self, stuck=stuck)
        counts = self.endpoint_stats
        if counts is not None:
            self.endpoint_stats = None
            if latency is not None:  # answered
                if failed:
                    counts.errors += 1
                else:
                    counts.successes += 1
                histogram = counts.latency
                bounds = histogram.bounds
                buckets = histogram.counts
                if _COMPILED:
                    at = histogram.hint = _bucket(bounds, latency, histogram.hint)
                else:
                    at = bisect_left(bounds, latency)
                buckets[at] = buckets[at] + 1  # not +=: compiled, a list item's += is a generic add
                histogram.total += latency
                histogram.count += 1
            elif stuck:
                counts.timeouts += 1
            elif failed:
                counts.errors += 1
        endpoint = self.endpoint
        if endpoint is not None:
            self.endpoint = None
            cluster = self.route.cluster
            cluster.active_requests -= 1
            if cluster.waiting:
                cluster.room_freed()
            if self.is_retry:
                cluster.active_retries -= 1
            if cluster.tracks_load:
                cluster.try_ended(endpoint, latency)
            if cluster.judged and self.health is not None:
                ok = None if failed is None else not failed
                self.health.outcome(endpoint, ok, cluster.clock.now(), self.breaker_generation)

    def _may_retry(self, kind: str) -> bool:
        route = self.route
        if self.attempt >= route.attempts or kind not in route.retry_on or self.downstream.closed:
            return False
        if kind != "connect_failure" and (self.oneway or not route.idempotent):
            return False  # it may have been executed: resend only what is safe to
        if kind != "connect_failure" and route.cluster.active_retries >= route.cluster.thresholds.max_retries:
            # Envoy's max_retries (retries at once, per cluster) guards the
            # upstreams against retry storms; a connect failure sent nothing.
            return False
        return route.cluster.clock.now() < self.deadline

    def try_failed(self, kind: str, failure: Failure, detail: str = "", public: str = "") -> None:
        """The current try failed (``kind`` as in a retry policy's
        ``retry_on``); ``detail`` and ``public`` as for :meth:`fail`."""
        if self.done:
            return
        self._end_try(None, stuck=kind == "per_try_timeout", failed=None if kind == "overflow" else True)
        if self._may_retry(kind):
            self.is_retry = kind != "connect_failure"
            start_try(self)
        else:
            self.fail(failure, detail, public)

    def on_response(self, response: Any, now: float) -> None:
        """The upstream answered (``now``: the time of its read batch)."""
        protocol = self.semantics
        failure_statuses = self.route.cluster.failure_statuses
        # len(), not bool(): compiled, a frozenset's length is a field read and
        # bool() a generic call; the interpreter calls either.
        failed = len(failure_statuses) != 0 and protocol.status(response) in failure_statuses
        self._end_try(now - self.try_started, failed=failed)
        statuses = self.route.retry_statuses
        if statuses and protocol.status(response) in statuses and self._may_retry("status"):
            self.is_retry = True
            start_try(self)
            return
        self.finish(protocol.encode_response(response, self.frame), "success", now, response)

    def sent_oneway(self) -> None:
        self.done = True
        self._end_try(None)
        self.frame = None  # see abandon()

    # -- the end --------------------------------------------------------------

    def fail(self, failure: Failure, detail: str = "", public: str = "") -> None:
        """End with the protocol's error reply (nothing, for a oneway request).

        ``detail`` is for the log only: upstream addresses and cluster names
        are the operator's business, not the client's. The client gets the
        failure's kind, ``public`` (say, the deadline that was applied) and
        a reference to quote, which the log line carries too.
        """
        if self.oneway:
            if not self.done:
                self.done = True
                log.debug("oneway request dropped: %s: %s", failure.value, detail, extra=self._log_ids())
            return
        try:
            data = self.downstream.failure_reply(self.frame, failure, self.stream, public, detail)
        except Exception:  # a plugin's bug: no reply can be made, so the client learns from the close
            log.exception(
                "building the %s error reply failed; closing the client connection",
                failure.value,
                extra=self._log_ids(),
            )
            self.abandon()
            self.downstream.close_soon()
            return
        self.finish(data, failure.name.lower())

    def finish(self, data: Encoded, outcome: str, now: float | None = None, response: Any = None) -> None:
        """End with ``data`` for the client (in request order if it needs
        that); ``outcome`` (``success`` or a failure's name) is counted;
        ``response``: the upstream's answer, for the listener's observer."""
        if self.done:
            return
        self.done = True
        timer = self.deadline_timer
        if timer is not None:
            timer.leave(self.deadline_slot, self)  # no timer keeps a finished exchange alive
        cluster = self.route.cluster
        if now is None:
            now = cluster.clock.now()
        elapsed = now - self.started
        stats = cluster.stats  # inline: this runs once per request
        if outcome == "success":
            stats.successes += 1
        else:
            failures = stats.failures
            failures[outcome] = failures.get(outcome, 0) + 1
        latency = stats.latency
        bounds = latency.bounds
        buckets = latency.counts
        if _COMPILED:
            at = latency.hint = _bucket(bounds, elapsed, latency.hint)
        else:
            at = bisect_left(bounds, elapsed)
        buckets[at] = buckets[at] + 1  # not +=: compiled, a list item's += is a generic add
        latency.total += elapsed
        latency.count += 1
        observer = self.observer  # the access log, spans
        if observer is not None:
            observer(self, data, outcome, now, elapsed, response)
        if self.upstream is not None or self.endpoint is not None:
            self._end_try(None)
        self.sink.exchange_done(self, data)
        self.frame = None  # see abandon()

    def abandon(self) -> None:
        """The client is gone: end without a reply."""
        if not self.done:
            self.done = True
            timer = self.deadline_timer
            if timer is not None:
                timer.leave(self.deadline_slot, self)
            self._end_try(None)
            self.frame = None  # something may still hold the exchange: not its bytes


def start_try(exchange: Exchange, now: float | None = None) -> None:
    """Send ``exchange`` to the next endpoint its route's cluster picks
    (``now``: the caller's clock reading, if it has one)."""
    route = exchange.route
    cluster = route.cluster
    if cluster.active_requests >= cluster.max_requests:
        cluster.overflows += 1
        exchange.fail(Failure.OVERFLOW, f"cluster {cluster.name}: max_requests reached")
        return
    if now is None:
        now = cluster.clock.now()
    semantics = exchange.semantics
    health = exchange.health = cluster.health(semantics.protocol_name)
    last = exchange.last_tried
    tried = _NOTHING_TRIED if last is None else exchange.tried  # a retry: the endpoints to avoid
    endpoint = cluster.pick(exchange.key, tried, now, health)
    if endpoint is None:
        exchange.fail(Failure.NO_HEALTHY_UPSTREAM, f"cluster {cluster.name}: no endpoint is up")
        return
    exchange.attempt += 1
    if last is not None:
        exchange._retried = tried
    exchange.last_tried = endpoint
    exchange.endpoint = endpoint
    exchange.try_started = now
    counts = exchange.endpoint_stats = cluster.endpoint_stats[endpoint.address]
    counts.requests += 1
    if exchange.attempt > 1:
        counts.retries += 1
    if health.breakers is not None:
        exchange.breaker_generation = health.breakers[endpoint].generation
    cluster.active_requests += 1
    if exchange.is_retry:  # set by the failed try that asked for this one
        cluster.active_retries += 1
    if exchange.attempt > 1:
        cluster.stats.retries += 1
    if cluster.tracks_load:
        cluster.try_started(endpoint)
    per_try = route.per_try_timeout
    if per_try is not None and not exchange.oneway and now + per_try < exchange.deadline:
        exchange.try_timer, exchange.try_slot = exchange.downstream.listener.timers.call_at(
            now + per_try, exchange, exchange.attempt
        )
    cluster.pool(endpoint, semantics, exchange.downstream).submit(exchange)


class FilteredExchange(Exchange):
    """An exchange of a listener with stream filters: they see its upstream
    answer or failure before the reply is written. A listener without
    filters makes plain :class:`Exchange` objects and pays nothing for this."""

    __slots__ = ("filtered",)

    def __init__(
        self,
        downstream: Downstream,
        semantics: BoundSemantics,
        frame: Any,
        route: Route,
        key: str | None,
        deadline: float,
        oneway: bool,
        started: float,
        stream: int,
        observer: Callable[..., None] | None,
        filtered: FilterRequest,
    ) -> None:
        super().__init__(downstream, semantics, frame, route, key, deadline, oneway, started, stream, observer)
        #: The request as the listener's stream filters saw it.
        self.filtered = filtered

    def on_response(self, response: Any, now: float) -> None:
        self.filtered.response = response
        super().on_response(response, now)

    def fail(self, failure: Failure, detail: str = "", public: str = "") -> None:
        self.filtered.failure = failure
        super().fail(failure, detail, public)

    def finish(self, data: Encoded, outcome: str, now: float | None = None, response: Any = None) -> None:
        if not self.done:  # the filters hear of the answer before it is written
            filtered = self.filtered
            filtered.outcome = outcome
            chain = filtered.chain
            if chain is not None:
                chain.responded(filtered)
        super().finish(data, outcome, now, response)
