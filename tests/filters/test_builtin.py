"""The built-in filters on their own, on a clock the test moves.

Requests are EchoLines frames from a client at 10.1.2.3 (the routing
attribute ``echo`` is the text after ``echo:``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from sota_dispatch import ConnectionContext, Failure
from sota_dispatch.filters import (
    FaultInject,
    FilterContext,
    FilterRequest,
    LocalRateLimit,
    LocalReply,
    Rbac,
    StreamFilter,
    get_filter,
)
from sota_dispatch.testing import EchoLines, ManualClock

pytestmark = pytest.mark.anyio


def make_request(
    echo: str = "hello", peer: str | None = "10.1.2.3:4", now: float = 0.0, names: tuple[str, ...] = ()
) -> FilterRequest:
    context = ConnectionContext(remote_address=peer, peer_names=names)
    return FilterRequest(b"echo:%s\n" % echo.encode(), EchoLines.bound_semantics(), "l", context, 1, now)


def build(cls: type[StreamFilter], options: Mapping[str, str], clock: ManualClock | None = None) -> Any:
    """``cls`` from text options, as the proxy builds it (checked first)."""
    values = cls.options.read(options, "filter")
    assert cls.check_options(values) == {}
    return cls(values, FilterContext("l", None, clock or ManualClock()))


def problems(cls: type[StreamFilter], options: Mapping[str, str]) -> dict[str, str]:
    errors = cls.options.errors(options, "filter")
    return errors or cls.check_options(cls.options.read(options, "filter"))


def test_the_built_ins_are_installed_through_entry_points() -> None:
    for name, cls in [("fault_inject", FaultInject), ("local_rate_limit", LocalRateLimit), ("rbac", Rbac)]:
        info = get_filter(name)
        assert info.factory is cls
        assert "entry point 'sota_dispatch.filters.builtin:" in info.source
        assert info.description


# -- fault_inject ------------------------------------------------------------


async def test_fault_inject_delays_on_the_proxy_clock_then_aborts() -> None:
    clock = ManualClock()
    fault = build(FaultInject, {"delay_percent": "100", "delay": "2s", "abort_percent": "100"}, clock)
    waiting = fault.on_request(make_request())
    result: list[LocalReply | None] = []

    async def run() -> None:
        result.append(await waiting)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(5):
            await clock.until_waiting()
        clock.advance(1.9)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert not result  # 1.9 s < 2 s
        clock.advance(0.1)
    assert result == [LocalReply(Failure.INTERNAL, public="fault injected", detail="fault_inject")]


def test_fault_inject_without_faults_lets_everything_through() -> None:
    fault = build(FaultInject, {})
    assert all(fault.on_request(make_request()) is None for _ in range(1000))


def test_fault_inject_abort_failure_and_its_share() -> None:
    fault = build(FaultInject, {"abort_percent": "30", "abort_failure": "no_healthy_upstream"})
    results = [fault.on_request(make_request()) for _ in range(10_000)]
    aborted = [r for r in results if r is not None]
    assert {r.failure for r in aborted} == {Failure.NO_HEALTHY_UPSTREAM}
    assert 2600 <= len(aborted) <= 3400  # 30% of 10,000, +- 8.7 standard deviations


def test_fault_inject_options_are_checked() -> None:
    assert problems(FaultInject, {"abort_percent": "120"}) == {
        "abort_percent": "expected a percentage from 0 to 100, got '120'"
    }
    assert "expected one of" in problems(FaultInject, {"abort_failure": "gone"})["abort_failure"]
    assert problems(FaultInject, {"delay_percent": "5"}) == {"delay": "needed (above zero) when delay_percent is set"}
    assert "expected a duration" in problems(FaultInject, {"delay": "soon"})["delay"]


# -- local_rate_limit ----------------------------------------------------------


def test_the_bucket_serves_its_burst_then_its_rate() -> None:
    clock = ManualClock()
    limit = build(LocalRateLimit, {"tokens_per_second": "10", "burst": "5"}, clock)
    answers = [limit.on_request(make_request(now=clock.now())) for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert all(isinstance(a, LocalReply) and a.failure is Failure.RATE_LIMITED for a in answers[5:])
    assert answers[5] is not None
    assert answers[5].public == "over 10 requests/s"
    clock.advance(0.25)  # 2.5 tokens come back
    assert [limit.on_request(make_request(now=clock.now())) is None for _ in range(3)] == [True, True, False]
    clock.advance(100)  # never more than the burst
    assert sum(limit.on_request(make_request(now=clock.now())) is None for _ in range(10)) == 5


def test_a_request_read_earlier_is_counted_at_the_time_already_reached() -> None:
    # A request that waited in an earlier filter reaches the bucket with the
    # time it was read, before requests already counted: no time went
    # backwards for the bucket, so the tokens there are are still there.
    limit = build(LocalRateLimit, {"tokens_per_second": "10", "burst": "10"})
    assert limit.on_request(make_request(now=101.0)) is None  # 9 tokens left
    assert limit.on_request(make_request(now=100.0)) is None  # read a second earlier: one of the 9
    assert limit.tokens == 8
    assert limit.on_request(make_request(now=101.1)) is None  # 8 + 1 token since 101.0, minus 1
    assert limit.tokens == pytest.approx(8)


def test_the_bucket_holds_one_second_by_default() -> None:
    limit = build(LocalRateLimit, {"tokens_per_second": "200"})
    assert sum(limit.on_request(make_request()) is None for _ in range(1000)) == 200


def test_rate_limit_options_are_checked() -> None:
    assert problems(LocalRateLimit, {}) == {"tokens_per_second": "required"}
    assert "above zero" in problems(LocalRateLimit, {"tokens_per_second": "0"})["tokens_per_second"]
    assert "positive integer" in problems(LocalRateLimit, {"tokens_per_second": "1", "burst": "0.5"})["burst"]


# -- rbac ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "echo", "peer", "denied"),
    [
        ({"attribute": "echo", "exact": "x"}, "x", "10.1.2.3:4", True),
        ({"attribute": "echo", "exact": "x"}, "y", "10.1.2.3:4", False),
        ({"attribute": "echo", "prefix": "adm"}, "admin", "10.1.2.3:4", True),
        ({"attribute": "echo", "regex": "a.c"}, "abc", "10.1.2.3:4", True),
        ({"attribute": "echo", "regex": "a.c"}, "abcd", "10.1.2.3:4", False),  # a full match
        ({"attribute": "other", "present": "true"}, "x", "10.1.2.3:4", False),
        ({"attribute": "other", "present": "0"}, "x", "10.1.2.3:4", True),
        ({"source": "10.0.0.0/8"}, "x", "10.1.2.3:4", True),
        ({"source": "10.0.0.0/8"}, "x", "[::1]:4", False),
        ({"source": "::1, 192.168.0.0/16"}, "x", "[::1]:4", True),
        ({"source": "10.0.0.0/8"}, "x", None, False),  # no address: not within
        ({"attribute": "echo", "exact": "x", "source": "10.0.0.0/8"}, "x", "127.0.0.1:4", False),  # both must hold
        ({"action": "allow", "source": "10.0.0.0/8"}, "x", "10.1.2.3:4", False),
        ({"action": "allow", "source": "10.0.0.0/8"}, "x", "127.0.0.1:4", True),
    ],
)
def test_rbac_decides_by_attribute_and_address(
    options: dict[str, str], echo: str, peer: str | None, denied: bool
) -> None:
    rbac = build(Rbac, options)
    answer = rbac.on_request(make_request(echo, peer))
    assert (answer is not None) is denied
    if denied:
        assert answer.failure is Failure.DENIED


@pytest.mark.parametrize(
    ("options", "names", "denied"),
    [
        ({"principal": "a.example"}, ("a.example",), True),
        ({"principal": "a.example, b.example"}, ("x.example", "b.example"), True),
        ({"principal": "a.example"}, (), False),  # no certificate: not that principal
        ({"principal": "a.example", "action": "allow"}, (), True),
        ({"principal": "a.example", "action": "allow"}, ("a.example",), False),
        ({"principal": "a.example", "source": "10.0.0.0/8"}, ("a.example",), True),  # 10.1.2.3: both hold
    ],
)
def test_rbac_decides_by_the_client_certificates_names(
    options: dict[str, str], names: tuple[str, ...], denied: bool
) -> None:
    answer = build(Rbac, options).on_request(make_request(names=names))
    assert (answer is not None) is denied


def test_rbac_options_are_checked() -> None:
    assert problems(Rbac, {}) == {"attribute": "give attribute (with a test), source or principal"}
    assert problems(Rbac, {"exact": "x"})["exact"] == "needs attribute"
    assert "exactly one of" in problems(Rbac, {"attribute": "a"})["attribute"]
    assert "exactly one of" in problems(Rbac, {"attribute": "a", "exact": "x", "prefix": "y"})["attribute"]
    assert "regular expression" in problems(Rbac, {"attribute": "a", "regex": "("})["regex"]
    assert problems(Rbac, {"source": "10.0.0.0/8, nonsense"}) == {
        "source": "expected addresses or networks (10.0.0.0/8), got 'nonsense'"
    }
    assert "expected one of deny, allow" in problems(Rbac, {"action": "maybe", "source": "::1"})["action"]
