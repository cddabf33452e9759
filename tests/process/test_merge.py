"""Summing workers' metrics as Prometheus' multi-process mode does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from sota_dispatch.process.merge import MetricsSum

WORKER = """\
# HELP sota_downstream_requests_total Frames decoded from clients
# TYPE sota_downstream_requests_total counter
sota_downstream_requests_total{{listener="lines",protocol="simple_line"}} {requests}
# HELP sota_downstream_connections_active Client connections open
# TYPE sota_downstream_connections_active gauge
sota_downstream_connections_active{{listener="lines",protocol="simple_line"}} {active}
# HELP sota_request_duration_seconds Request latency
# TYPE sota_request_duration_seconds histogram
sota_request_duration_seconds_bucket{{cluster="up",le="0.001"}} {fast}
sota_request_duration_seconds_bucket{{cluster="up",le="+Inf"}} {requests}
sota_request_duration_seconds_count{{cluster="up"}} {requests}
sota_request_duration_seconds_sum{{cluster="up"}} 0.5
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counters_and_histograms_sum_gauges_of_live_workers_only() -> None:
    total = MetricsSum()
    total.add(WORKER.format(requests=10, active=3, fast=4))
    total.add(WORKER.format(requests=5, active=2, fast=1))
    total.add(WORKER.format(requests=7, active=9, fast=7), gauges=False)  # a worker that exited
    rendered = samples(total.render())
    lines = (("listener", "lines"), ("protocol", "simple_line"))
    assert rendered[("sota_downstream_requests_total", lines)] == 22
    assert rendered[("sota_downstream_connections_active", lines)] == 5
    assert rendered[("sota_request_duration_seconds_bucket", (("cluster", "up"), ("le", "0.001")))] == 12
    assert rendered[("sota_request_duration_seconds_bucket", (("cluster", "up"), ("le", "+Inf")))] == 22
    assert rendered[("sota_request_duration_seconds_count", (("cluster", "up"),))] == 22
    assert rendered[("sota_request_duration_seconds_sum", (("cluster", "up"),))] == 1.5


def test_copy_is_independent() -> None:
    total = MetricsSum()
    total.add(WORKER.format(requests=1, active=1, fast=1))
    copy = total.copy()
    copy.add(WORKER.format(requests=1, active=1, fast=1))
    assert samples(total.render()) != samples(copy.render())


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=8))
def test_the_sum_of_any_counters_is_their_sum(counts: list[int]) -> None:
    total = MetricsSum()
    for count in counts:
        total.add(WORKER.format(requests=count, active=0, fast=0))
    lines = (("listener", "lines"), ("protocol", "simple_line"))
    assert samples(total.render())[("sota_downstream_requests_total", lines)] == sum(counts)
