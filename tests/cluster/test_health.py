"""The per-endpoint breaker and outlier detection, as state machines on a
clock the test controls (the proxy tests drive them with real traffic)."""

from __future__ import annotations

from sota_dispatch.cluster.health import BreakerConfig, BreakerState, EndpointBreaker, OutlierConfig, OutlierDetector


def state_of(breaker: EndpointBreaker) -> BreakerState:
    """The state, read through a call (so that the checker does not narrow it)."""
    return breaker.state


def test_breaker_opens_after_more_than_n_failures_in_a_row_then_probes() -> None:
    breaker = EndpointBreaker(BreakerConfig(consecutive_failures=5, min_requests=100, open_timeout=5))
    for _ in range(5):
        breaker.record(False, 0.0)
    assert state_of(breaker) is BreakerState.CLOSED  # 5 is not more than 5
    breaker.record(False, 0.0)
    assert state_of(breaker) is BreakerState.OPEN
    assert not breaker.allow(4.9)
    assert breaker.allow(5.0)  # half-open: one probe
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow(5.0)  # the probe is taken
    breaker.record(True, 5.1)
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.transitions == {BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 1, BreakerState.CLOSED: 1}


def test_breaker_opens_on_the_failure_ratio_within_the_interval() -> None:
    breaker = EndpointBreaker(BreakerConfig(failure_ratio=0.6, min_requests=3, interval=10))
    breaker.record(False, 0.0)
    breaker.record(True, 1.0)
    assert state_of(breaker) is BreakerState.CLOSED  # 1 of 2: too few requests to judge
    breaker.record(False, 2.0)
    assert state_of(breaker) is BreakerState.OPEN  # 2 of 3 >= 0.6


def test_breaker_ratio_counts_only_the_current_interval() -> None:
    breaker = EndpointBreaker(BreakerConfig(failure_ratio=0.6, min_requests=3, interval=10))
    breaker.record(False, 0.0)
    breaker.record(False, 1.0)
    breaker.record(True, 11.0)  # a new interval: the two failures are forgotten
    breaker.record(True, 12.0)
    breaker.record(False, 13.0)
    assert state_of(breaker) is BreakerState.CLOSED  # 1 of 3 (with the old ones: 3 of 5, open)
    breaker.record(False, 14.0)
    assert state_of(breaker) is BreakerState.CLOSED  # 2 of 4
    breaker.record(False, 15.0)
    assert state_of(breaker) is BreakerState.OPEN  # 3 of 5


def test_half_open_failure_opens_again_and_probes_are_bounded() -> None:
    breaker = EndpointBreaker(BreakerConfig(consecutive_failures=0, open_timeout=1, half_open_requests=2))
    breaker.record(False, 0.0)
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.allow(1.0)
    assert breaker.allow(1.0)
    assert not breaker.allow(1.0)  # two probes at most
    breaker.record(False, 1.2)
    assert state_of(breaker) is BreakerState.OPEN
    assert not breaker.available(2.1)
    assert breaker.available(2.2)


def test_outlier_ejection_grows_and_is_capped() -> None:
    detector = OutlierDetector(
        OutlierConfig(consecutive_failures=2, base_ejection_time=10, max_ejection_time=25, max_ejection_percent=50), 4
    )
    assert detector.cap == 2
    for _ in range(2):
        detector.record("a", False, 0.0)
    assert detector.is_ejected("a", 9.9)
    assert not detector.is_ejected("a", 10.0)  # back after 10 s
    for _ in range(2):
        detector.record("a", False, 11.0)
    assert detector.is_ejected("a", 30.9)  # the second ejection: 20 s
    assert not detector.is_ejected("a", 31.0)
    for _ in range(2):
        detector.record("a", False, 40.0)
    assert detector.ejected["a"] == 65.0  # the third: 30 s, capped at 25
    for name in ("b", "c"):
        for _ in range(2):
            detector.record(name, False, 41.0)
    assert set(detector.ejected) == {"a", "b"}  # never more than half of 4


def test_outlier_success_resets_the_count_and_the_cluster_never_ejects_everything() -> None:
    detector = OutlierDetector(OutlierConfig(consecutive_failures=2, max_ejection_percent=100), 2)
    assert detector.cap == 1
    detector.record("a", False, 0.0)
    detector.record("a", True, 0.0)
    detector.record("a", False, 0.0)
    assert not detector.ejected
    detector.record("a", False, 0.0)
    for _ in range(5):
        detector.record("b", False, 0.0)
    assert list(detector.ejected) == ["a"]


def test_a_probe_without_a_verdict_goes_back() -> None:
    breaker = EndpointBreaker(BreakerConfig(consecutive_failures=0, open_timeout=1))
    breaker.record(False, 0.0)
    assert breaker.allow(1.0)
    assert not breaker.available(1.0)
    breaker.release()  # e.g. the client left before the answer
    assert breaker.available(1.0)
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_failures_reported_while_ejected_do_not_count_after_the_return() -> None:
    detector = OutlierDetector(OutlierConfig(consecutive_failures=5, base_ejection_time=10), 3)
    for _ in range(5):
        detector.record("a", False, 0.0)
    assert detector.is_ejected("a", 1.0)
    for _ in range(20):  # answers to tries sent before the ejection
        detector.record("a", False, 2.0)
    assert not detector.is_ejected("a", 10.5)  # back
    detector.record("a", False, 11.0)
    assert not detector.is_ejected("a", 11.0)  # one failure is not five


def test_the_ejection_time_shrinks_again_while_an_endpoint_stays_healthy() -> None:
    detector = OutlierDetector(OutlierConfig(consecutive_failures=1, base_ejection_time=10, max_ejection_percent=50), 2)
    detector.record("a", False, 0.0)  # ejected for 10 s
    detector.record("a", True, 10.0)  # back at 10
    detector.record("a", False, 11.0)  # ejected for 20 s (second ejection)
    assert detector.ejected["a"] == 31.0
    detector.record("a", True, 31.0)  # back at 31
    detector.record("a", True, 41.0)  # healthy for a base time: one step back
    detector.record("a", False, 42.0)
    assert detector.ejected["a"] == 62.0  # 20 s again, not 30 s


def test_an_outcome_from_before_the_breaker_opened_does_not_decide_the_probe() -> None:
    breaker = EndpointBreaker(BreakerConfig(consecutive_failures=1, open_timeout=1, half_open_requests=1))
    assert breaker.allow(0.0)
    before = breaker.generation  # a try let through while closed, still out
    breaker.record(False, 0.1, breaker.generation)
    breaker.record(False, 0.2, breaker.generation)
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.allow(1.5)  # half-open: the one probe
    breaker.release(before)  # the old try ends without a verdict: not the probe
    assert not breaker.allow(1.6)
    breaker.record(True, 1.7, before)  # nor does its success close the breaker
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.record(True, 1.8, breaker.generation)  # the probe's does
    assert state_of(breaker) is BreakerState.CLOSED


def test_protocol_health_backs_off_doubling_and_clears_on_a_connect() -> None:
    from sota_dispatch.proxy import ProtocolHealth

    health = ProtocolHealth("bolt", {"a": "a:1", "b": "b:1"}, "c")
    assert health.connect_failed("a", 100.0) == (1, 0.25)
    assert health.connect_failed("a", 100.0) == (2, 0.5)
    assert health.unavailable("a", 100.4)
    assert not health.unavailable("a", 100.6)
    assert not health.unavailable("b", 100.0)
    assert health.state("a", 100.1) == "unreachable"
    assert health.connected("a") is True
    assert health.connected("a") is False
    assert health.state("a", 100.1) == "healthy"


def test_each_protocol_judges_an_endpoint_apart() -> None:
    from sota_dispatch.proxy import ProtocolHealth

    outlier = OutlierConfig(consecutive_failures=2, max_ejection_percent=100)
    zmtp = ProtocolHealth("zmtp", {"a": "a:1", "b": "b:1"}, "c", outlier=outlier)
    bolt = ProtocolHealth("bolt", {"a": "a:1", "b": "b:1"}, "c", outlier=outlier)
    for _ in range(2):
        zmtp.outcome("a", False, 1.0)
    assert zmtp.unavailable("a", 1.0)
    assert not bolt.unavailable("a", 1.0)
    assert bolt.judged
    assert not ProtocolHealth("x", {}, "c").judged
