from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch.cluster.balancers import (
    Endpoint,
    LeastRequest,
    LowestLatency,
    Maglev,
    ModuloHash,
    RandomBalancer,
    RingHash,
    SmoothWeightedRoundRobin,
    hash_key,
    pick_priority,
)

A, B, C = Endpoint("a:1", weight=5), Endpoint("b:1"), Endpoint("c:1")


def test_smooth_wrr_sequence_is_smooth() -> None:
    wrr = SmoothWeightedRoundRobin([A, B, C])
    assert [wrr.pick() for _ in range(7)] == [A, A, B, A, C, A, A]  # nginx's example


@settings(max_examples=50)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6))
def test_smooth_wrr_ratio_is_exact_per_cycle(weights: list[int]) -> None:
    endpoints = [Endpoint(f"e{i}:1", weight=w) for i, w in enumerate(weights)]
    wrr = SmoothWeightedRoundRobin(endpoints)
    total = sum(weights)
    counts = Counter(wrr.pick() for _ in range(total * 10))
    assert all(counts[e] == e.weight * 10 for e in endpoints)


def test_smooth_wrr_1000_requests_within_2_percent() -> None:
    heavy, light = Endpoint("h:1", weight=3), Endpoint("l:1", weight=1)
    wrr = SmoothWeightedRoundRobin([heavy, light])
    counts = Counter(wrr.pick() for _ in range(1000))
    assert abs(counts[heavy] / 1000 - 0.75) <= 0.02


def test_exclude_is_respected_by_every_policy() -> None:
    for balancer in (
        SmoothWeightedRoundRobin([A, B, C]),
        RandomBalancer([A, B, C], rng=random.Random(1)),
        LeastRequest([A, B, C], rng=random.Random(1)),
        RingHash([A, B, C]),
        Maglev([A, B, C], table_size=251),
        ModuloHash([A, B, C]),
    ):
        for i in range(50):
            assert balancer.pick(f"k{i}", exclude={A, B}) == C
        assert balancer.pick("k", exclude={A, B, C}) is None


def test_least_request_prefers_the_less_loaded() -> None:
    balancer = LeastRequest([A, B], rng=random.Random(0))
    for _ in range(10):
        balancer.started(B)
    assert all(balancer.pick() is A for _ in range(20))
    balancer.finished(B)
    assert balancer.in_flight[B] == 9


def test_lowest_latency_prefers_the_faster_and_tries_unmeasured_first() -> None:
    fast, slow = Endpoint("fast:1"), Endpoint("slow:1")
    balancer = LowestLatency([fast, slow], rng=random.Random(0))
    balancer.observe(slow, 0.100)
    assert balancer.pick() is fast  # never measured: tried first
    balancer.observe(fast, 0.001)
    assert all(balancer.pick() is fast for _ in range(20))


@pytest.mark.parametrize("policy", [RingHash, Maglev])
def test_consistent_hash_same_key_same_endpoint_and_minimal_moves(policy: type[RingHash] | type[Maglev]) -> None:
    endpoints = [Endpoint(f"10.0.0.{i}:80") for i in range(5)]
    full = policy(endpoints)
    keys = [f"user-{i}" for i in range(5000)]
    first = {k: full.pick(k) for k in keys}
    assert all(full.pick(k) == first[k] for k in keys[:500])
    shares = Counter(first.values())
    assert min(shares.values()) > 5000 / 5 * 0.7  # roughly balanced
    smaller = policy(endpoints[:4])
    moved = sum(1 for k in keys if smaller.pick(k) != first[k])
    removed = shares[endpoints[4]]
    # Only the removed endpoint's keys (~1/N) move, plus a little churn.
    assert removed <= moved <= removed + 5000 * 0.05
    assert abs(moved / 5000 - 1 / 5) < 0.08


def test_modulo_hash_is_stable_but_not_consistent() -> None:
    endpoints = [Endpoint(f"m{i}:1") for i in range(5)]
    balancer = ModuloHash(endpoints)
    assert balancer.pick("k") == balancer.pick("k")
    smaller = ModuloHash(endpoints[:4])
    moved = sum(1 for i in range(2000) if smaller.pick(f"k{i}") != balancer.pick(f"k{i}"))
    assert moved > 2000 * 0.5  # why ring hash and maglev exist


def test_hash_balancers_need_a_key() -> None:
    with pytest.raises(ValueError, match="routing key"):
        RingHash([A]).pick()


def test_hash_key_is_stable_across_processes() -> None:
    import os
    import subprocess
    import sys

    code = "from sota_dispatch.cluster.balancers import hash_key; print(hash_key('user-1'))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # Python's own hash() would differ
    )
    assert int(other.stdout) == hash_key("user-1") == hash_key(b"user-1")


def test_priorities_standby_only_when_no_primary_is_healthy() -> None:
    primary1, primary2 = Endpoint("p1:1"), Endpoint("p2:1")
    standby = Endpoint("s:1", priority=1)
    endpoints = [primary1, primary2, standby]
    assert pick_priority(endpoints, healthy={primary1, standby}) == [primary1]
    assert pick_priority(endpoints, healthy={standby}) == [standby]
    assert pick_priority(endpoints, healthy=set()) == []


def test_endpoint_validation() -> None:
    with pytest.raises(ValueError, match="weight"):
        Endpoint("x:1", weight=0)
    with pytest.raises(ValueError, match="at least one endpoint"):
        SmoothWeightedRoundRobin([])
