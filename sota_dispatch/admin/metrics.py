"""The proxy's metrics for Prometheus, read from its plain counters at scrape time.

Serving traffic pays nothing for them: the collector turns the counters the
request path keeps anyway into metric families when ``/metrics`` is asked.
Labels stay low-cardinality: listener, protocol, cluster, endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..cluster.health import BreakerState
from .view import ProxyView

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["ProxyCollector", "registry"]


class ProxyCollector:
    """Turns the proxy's counters into Prometheus metrics when scraped.

    Labels stay low-cardinality: listener, protocol, cluster, endpoint.
    """

    def __init__(self, proxy: ProxyView) -> None:
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
        waiting = GaugeMetricFamily(
            "sota_downstream_connections_waiting",
            "Client connections that have sent nothing yet, held as bare sockets",
            labels=listener_labels,
        )
        first_byte_timeouts = CounterMetricFamily(
            "sota_downstream_first_byte_timeouts",
            "Client connections closed for sending nothing in time",
            labels=listener_labels,
        )
        parked = GaugeMetricFamily(
            "sota_downstream_connections_parked",
            "Idle client connections parked as bare sockets (limits.park_idle_after)",
            labels=listener_labels,
        )
        parks = CounterMetricFamily(
            "sota_downstream_connection_parks", "Times an idle client connection was parked", labels=listener_labels
        )
        adopted = CounterMetricFamily(
            "sota_downstream_connections_adopted",
            "Client connections taken over from the process this one replaced (hot restart hand-off)",
            labels=listener_labels,
        )
        handed_off = CounterMetricFamily(
            "sota_downstream_connections_handed_off",
            "Client connections moved to the process that replaced this one (hot restart hand-off)",
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
            waiting.add_metric(labels, server.waiting_connections)
            first_byte_timeouts.add_metric(labels, server.first_byte_timeouts)
            parked.add_metric(labels, server.parked_connections)
            parks.add_metric(labels, server.connections_parked)
            adopted.add_metric(labels, server.connections_adopted)
            handed_off.add_metric(labels, server.connections_handed_off)
            bytes_in.add_metric(labels, listener_stats.bytes_in)
            bytes_out.add_metric(labels, listener_stats.bytes_out)
            decode.add_metric(labels, listener_stats.decode_errors)
            requests.add_metric(labels, listener_stats.requests)
            for outcome, count in sorted(listener_stats.local_replies.items()):
                local.add_metric([*labels, outcome], count)
        yield from (connections, active, refused, waiting, first_byte_timeouts, parked, parks, adopted, handed_off)
        yield from (bytes_in, bytes_out, decode, requests, local)

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
        actions.add_metric(["pause_reading"], budget.read_pauses)
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
        yield from self._endpoints()

    def _endpoints(self) -> Iterator[Metric]:
        """Per endpoint (Envoy's per-host stats): tries, their ends, retries, latency."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        labels = ["cluster", "endpoint"]
        tries = CounterMetricFamily("sota_endpoint_requests", "Tries sent to the endpoint", labels=labels)
        ends = CounterMetricFamily(
            "sota_endpoint_responses",
            "Tries ended: success (answered), error (failure status, connect failure, reset), timeout",
            labels=[*labels, "outcome"],
        )
        retried = CounterMetricFamily("sota_endpoint_retries", "Tries that retried a request", labels=labels)
        latency = HistogramMetricFamily(
            "sota_endpoint_request_duration_seconds", "Time to each answer from the endpoint", labels=labels
        )
        for cluster in self.proxy.clusters.values():
            for address, counts in cluster.endpoint_stats.items():
                names = [cluster.name, address]
                tries.add_metric(names, counts.requests)
                ends.add_metric([*names, "success"], counts.successes)
                ends.add_metric([*names, "error"], counts.errors)
                ends.add_metric([*names, "timeout"], counts.timeouts)
                retried.add_metric(names, counts.retries)
                latency.add_metric(names, counts.latency.cumulative(), counts.latency.total)
        yield from (tries, ends, retried, latency)


def registry(proxy: ProxyView) -> Any:
    """A prometheus-client ``CollectorRegistry`` with ``proxy``'s metrics and
    the process's own (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
    open file descriptors...: prometheus-client's process collector, where the
    platform has ``/proc``)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    result = CollectorRegistry(auto_describe=False)
    result.register(ProxyCollector(proxy))
    ProcessCollector(registry=result)
    return result
