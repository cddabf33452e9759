"""The admin endpoint: a small HTTP/1.1 server beside the proxy (Envoy's admin).

Loopback only unless the config says ``allow_remote: true``. One request
per connection (``Connection: close``), GET unless noted:

``/metrics``         Prometheus text exposition (prometheus-client renders it)
``/clusters``        endpoints with health, weight, priority, breaker, in flight (JSON)
``/config_dump``     the effective configuration (JSON)
``/ready``           200 while serving, 503 once draining
``/logging?level=``  show, or (POST) set, the log level at run time
``/drain``           (POST) stop accepting and drain, as SIGTERM does

The metrics are read from the proxy's plain counters at scrape time by a
custom collector, so serving traffic pays nothing for them.

Any web page can make a browser send requests to 127.0.0.1, so the admin
guards itself like a local service must: a request whose ``Host`` is a DNS
name other than ``localhost`` is refused (DNS rebinding: a name the attacker
controls, pointed at us), as is an absolute-form target for another host,
and a mutating request (POST) carrying an ``Origin`` other than the admin's
own. Connections still waiting for their request head are bounded: when
:data:`MAX_WAITING` wait, the oldest is closed, so idle connections cannot
lock an operator (or a readiness probe) out.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import anyio
import attrs
from anyio.abc import ByteStream

from ..cluster.health import BreakerState
from ..errors import LimitExceeded, ProtocolError
from ..protocol.dispatcher import ConnectionContext, Dispatcher

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..proxy.proxy import Proxy

__all__ = ["AdminConnection", "ProxyCollector", "WaitingConnections", "config_json", "host_is_allowed"]

log = logging.getLogger(__name__)

_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Seconds a client has to send its request head.
HEAD_TIMEOUT = 5.0
#: Admin connections that may wait for their request head at once; one more
#: closes the one that waited longest.
MAX_WAITING = 32
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
#: Methods that change the proxy's state.
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_is_allowed(host: str) -> bool:
    """Whether a ``Host`` value (``name[:port]``) may reach the admin: an IP
    address or ``localhost``, never another DNS name (DNS rebinding)."""
    name = _host_name(host)
    if name is None:
        return False
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _host_name(host: str) -> str | None:
    """The name part of ``name[:port]`` or ``[v6]:port``; None if malformed."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not host[end + 1 :].startswith(":")):
            return None
        return host[1:end]
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def config_json(value: Any) -> Any:
    """The config as JSON-ready values (attrs classes, tuples, mappings)."""
    if attrs.has(type(value)):
        return {f.name: config_json(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): config_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_json(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


class ProxyCollector:
    """Turns the proxy's counters into Prometheus metrics when scraped.

    Labels stay low-cardinality: listener, protocol, cluster, endpoint.
    """

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        proxy = self.proxy
        listener_labels = ["listener", "protocol"]
        connections = CounterMetricFamily(
            "sota_downstream_connections", "Client connections accepted", labels=listener_labels
        )
        active = GaugeMetricFamily(
            "sota_downstream_connections_active", "Client connections open", labels=listener_labels
        )
        refused = CounterMetricFamily(
            "sota_downstream_connections_refused",
            "Connections closed at once (max_connections)",
            labels=listener_labels,
        )
        bytes_in = CounterMetricFamily(
            "sota_downstream_bytes_received", "Bytes read from clients", labels=listener_labels
        )
        bytes_out = CounterMetricFamily(
            "sota_downstream_bytes_sent", "Bytes of answers for clients", labels=listener_labels
        )
        decode = CounterMetricFamily(
            "sota_decode_errors", "Client connections closed for bad bytes", labels=listener_labels
        )
        requests = CounterMetricFamily(
            "sota_downstream_requests", "Frames decoded from clients", labels=listener_labels
        )
        local = CounterMetricFamily(
            "sota_local_replies", "Requests answered by the proxy itself", labels=[*listener_labels, "outcome"]
        )
        for listener in proxy.listeners:
            labels = [listener.name, listener.config.protocol]
            server, listener_stats = listener.server, listener.stats
            connections.add_metric(labels, server.connections_total)
            active.add_metric(labels, server.active_connections)
            refused.add_metric(labels, server.connections_refused)
            bytes_in.add_metric(labels, listener_stats.bytes_in)
            bytes_out.add_metric(labels, listener_stats.bytes_out)
            decode.add_metric(labels, listener_stats.decode_errors)
            requests.add_metric(labels, listener_stats.requests)
            for outcome, count in sorted(listener_stats.local_replies.items()):
                local.add_metric([*labels, outcome], count)
        yield from (connections, active, refused, bytes_in, bytes_out, decode, requests, local)

        limit = GaugeMetricFamily(
            "sota_downstream_connections_limit",
            "Client connections a listener serves at once (max_connections; absent: none)",
            labels=listener_labels,
        )
        for listener in proxy.listeners:
            if listener.server.max_connections is not None:
                limit.add_metric([listener.name, listener.config.protocol], listener.server.max_connections)
        budget = proxy.budget
        held = GaugeMetricFamily("sota_buffer_bytes", "Bytes of partial frames all connections hold")
        held.add_metric([], budget.held)
        allowed = GaugeMetricFamily("sota_buffer_budget_bytes", "The buffer budget (overload.buffer_budget)")
        allowed.add_metric([], budget.limit)
        actions = CounterMetricFamily(
            "sota_overload_actions", "What the buffer budget did as it filled", labels=["action"]
        )
        actions.add_metric(["refuse_large_frame"], budget.frames_refused)
        actions.add_metric(["shed_connection"], budget.connections_shed)
        actions.add_metric(["pause_accepting"], budget.accept_pauses)
        yield from (limit, held, allowed, actions)

        outcomes = CounterMetricFamily(
            "sota_upstream_requests", "Requests ended, by outcome", labels=["cluster", "outcome"]
        )
        latency = HistogramMetricFamily("sota_request_duration_seconds", "Request latency", labels=["cluster"])
        retries = CounterMetricFamily("sota_upstream_retries", "Tries after the first", labels=["cluster"])
        failures = CounterMetricFamily("sota_upstream_connect_failures", "Failed upstream connects", labels=["cluster"])
        overflows = CounterMetricFamily("sota_upstream_overflows", "Requests over a threshold", labels=["cluster"])
        ejections = CounterMetricFamily("sota_outlier_ejections", "Outlier ejections", labels=["cluster", "endpoint"])
        trips = CounterMetricFamily("sota_breaker_trips", "Endpoint breaker openings", labels=["cluster", "endpoint"])
        in_flight = GaugeMetricFamily(
            "sota_upstream_requests_active", "Tries in flight", labels=["cluster", "endpoint"]
        )
        upstream = GaugeMetricFamily("sota_upstream_connections_active", "Upstream connections", labels=["cluster"])
        checks = CounterMetricFamily("sota_health_checks", "Active health checks run", labels=["cluster"])
        check_failures = CounterMetricFamily(
            "sota_health_check_failures", "Active health checks failed", labels=["cluster"]
        )
        for cluster in proxy.clusters.values():
            stats = cluster.stats
            for outcome, count in sorted(stats.outcomes.items()):
                outcomes.add_metric([cluster.name, outcome], count)
            latency.add_metric([cluster.name], stats.latency.cumulative(), stats.latency.total)
            retries.add_metric([cluster.name], stats.retries)
            failures.add_metric([cluster.name], stats.connect_failures)
            overflows.add_metric([cluster.name], cluster.overflows)
            upstream.add_metric([cluster.name], cluster.connection_count())
            checks.add_metric([cluster.name], stats.health_checks)
            check_failures.add_metric([cluster.name], stats.health_check_failures)
            protocols = cluster.protocol_health
            for endpoint in cluster.endpoints:
                labels = [cluster.name, endpoint.address]
                in_flight.add_metric(labels, cluster.in_flight(endpoint))
                # Summed over the protocols the endpoint is judged for.
                if cluster.config.outlier_detection is not None:
                    ejections.add_metric(
                        labels, sum(h.outliers.ejections.get(endpoint, 0) for h in protocols if h.outliers is not None)
                    )
                if cluster.config.endpoint_breaker is not None:
                    trips.add_metric(
                        labels,
                        sum(
                            h.breakers[endpoint].transitions[BreakerState.OPEN]
                            for h in protocols
                            if h.breakers is not None
                        ),
                    )
        yield from (outcomes, latency, retries, failures, overflows, ejections, trips, in_flight, upstream)
        yield from (checks, check_failures)


class WaitingConnections:
    """The admin connections waiting for their request head, oldest first:
    at :data:`MAX_WAITING`, a newcomer closes the one that waited longest."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self._waiting: dict[AdminConnection, None] = {}
        #: Connections closed to make room.
        self.evicted = 0

    def add(self, connection: AdminConnection) -> None:
        while len(self._waiting) >= self.limit:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self.evicted += 1
            oldest.abort()
        self._waiting[connection] = None

    def discard(self, connection: AdminConnection) -> None:
        self._waiting.pop(connection, None)


class AdminConnection(Dispatcher):
    """One admin HTTP request and its answer."""

    protocol_name: ClassVar[str] = "admin"
    linger_timeout = 1.0

    def __init__(
        self,
        stream: ByteStream,
        context: ConnectionContext,
        *,
        proxy: Proxy,
        waiting: WaitingConnections | None = None,
    ) -> None:
        super().__init__(stream, context)
        self.proxy = proxy
        self.waiting = waiting

    async def serve(self) -> None:
        if self.waiting is not None:
            self.waiting.add(self)
        try:
            with anyio.fail_after(HEAD_TIMEOUT):
                head = await self.reader.read_until(b"\r\n\r\n", max_bytes=8192)
        except LimitExceeded:
            self._answer(400, "request head over 8 KiB\n")
            return
        except TimeoutError:
            return  # a client that sends no request in time is closed
        finally:
            if self.waiting is not None:
                self.waiting.discard(self)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
        method, target = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        url = urlsplit(target)
        refusal = self._refusal(method, url.netloc, headers)
        if refusal is not None:
            log.warning("admin: refused %s %s from %s: %s", method, url.path[:80], self.context.remote_address, refusal)
            self._answer(403, refusal + "\n")
            return
        self._route(method, url.path, parse_qs(url.query))

    def _refusal(self, method: str, authority: str, headers: Mapping[str, str]) -> str | None:
        """Why a request that may come from a web page is refused (None: it is not)."""
        host = headers.get("host")
        if authority and (host is None or authority.lower() != host.lower()):
            return "an absolute-form target must name the Host the request was sent to"
        if host is not None and not host_is_allowed(host):
            return "Host must be an IP address or localhost"
        origin = headers.get("origin")
        if method in _MUTATING and origin is not None:
            allowed = host is not None and origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")
            if not allowed:
                return f"cross-origin {method} (Origin {origin[:80]})"
        return None

    def _route(self, method: str, path: str, query: Mapping[str, list[str]]) -> None:
        handlers = {
            "/metrics": ("GET", self._metrics),
            "/clusters": ("GET", self._clusters),
            "/config_dump": ("GET", self._config_dump),
            "/ready": ("GET", self._ready),
            "/drain": ("POST", self._drain),
        }
        if path == "/logging":
            self._logging(method, query)
            return
        entry = handlers.get(path)
        if entry is None:
            paths = ", ".join(sorted([*handlers, "/logging"]))
            self._answer(404, f"no such path; try {paths}\n")
            return
        wanted, handler = entry
        if method != wanted:
            self._answer(405, f"{path} takes {wanted}\n", headers={"Allow": wanted})
            return
        handler()

    def _answer(
        self,
        status: int,
        body: str | bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(data)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def _json(self, value: Any) -> None:
        self._answer(200, json.dumps(value, indent=2, sort_keys=False) + "\n", "application/json")

    def _metrics(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._answer(200, generate_latest(self.proxy.metrics), CONTENT_TYPE_LATEST)

    def _clusters(self) -> None:
        self._json({name: cluster.describe() for name, cluster in self.proxy.clusters.items()})

    def _config_dump(self) -> None:
        self._json(config_json(self.proxy.config))

    def _ready(self) -> None:
        if self.proxy.draining:
            self._answer(503, "draining\n")
        else:
            self._answer(200, "ready\n")

    def _drain(self) -> None:
        log.info("admin: drain requested")
        self._answer(200, "draining\n")
        self.proxy.shutdown()

    def _logging(self, method: str, query: Mapping[str, list[str]]) -> None:
        root = logging.getLogger()
        levels = query.get("level")
        if levels:
            level = levels[-1].lower()
            if method != "POST":
                self._answer(405, "setting the level takes POST\n", headers={"Allow": "GET, POST"})
                return
            if level not in _LEVELS:
                self._answer(400, f"unknown level {level!r}; use one of {', '.join(_LEVELS)}\n")
                return
            root.setLevel(level.upper())
            log.warning("admin: log level set to %s", level)
        self._answer(200, f"level: {logging.getLevelName(root.level).lower()}\n")
