"""The latency histograms' bucket search: the compiled build's own loop
gives what ``bisect_left`` gives (the interpreter's spelling)."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

import sota_dispatch.proxy.exchange as exchange
from sota_dispatch import build_info
from sota_dispatch.cluster.stats import LATENCY_BUCKETS

finite = st.floats(allow_nan=False)


def test_each_build_takes_its_own_spelling() -> None:
    assert ("sota_dispatch.proxy.exchange" in build_info().compiled) == exchange._COMPILED


@given(finite)
def test_a_latency_lands_where_bisect_puts_it(value: float) -> None:
    assert exchange._bucket(LATENCY_BUCKETS, value) == bisect_left(LATENCY_BUCKETS, value)


@given(st.lists(finite, max_size=20).map(lambda bounds: tuple(sorted(bounds))), finite)
def test_any_sorted_bounds_search_as_bisect_does(bounds: tuple[float, ...], value: float) -> None:
    assert exchange._bucket(bounds, value) == bisect_left(bounds, value)
    for bound in bounds:  # on a bound: the bucket it closes (le=bound), as Prometheus counts
        assert exchange._bucket(bounds, bound) == bisect_left(bounds, bound)


@given(st.lists(finite, max_size=20).map(lambda bounds: tuple(sorted(bounds))), finite, st.integers(0, 20))
def test_any_hint_gives_what_bisect_gives(bounds: tuple[float, ...], value: float, hint: int) -> None:
    """The hint (the last value's bucket) is only where the search starts:
    right or wrong, in range or past it, the bucket is bisect's."""
    hint = min(hint, len(bounds))
    assert exchange._bucket(bounds, value, hint) == bisect_left(bounds, value)
    for bound in bounds:
        assert exchange._bucket(bounds, bound, hint) == bisect_left(bounds, bound)
