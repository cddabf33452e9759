"""The client tool's load mode and its connection, no plugin: counts, rate,
connections, errors, and every answer matched to its own request (by order
for lines, by id for idproto) however many are in flight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from call_protocols import CallIds, CallLines, call, raw_server, registered
from idproto import REQUEST, Frame

from sota_dispatch.client import LoadSummary, call_connection
from sota_dispatch.testing import serving

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def call_protocols() -> Iterator[None]:
    with registered():
        yield


@pytest.mark.parametrize("name", ["call_lines", "call_ids"])
async def test_n_requests_with_concurrency_print_a_summary_with_the_count(name: str) -> None:
    factory = CallLines if name == "call_lines" else CallIds
    async with serving(factory) as server:
        assert server.address is not None
        code, out, err = await call("--protocol", name, server.address, "x", "-n", "300", "--concurrency", "30")
    assert (code, err) == (0, "")
    first, latency = out.splitlines()
    assert first.startswith("300 requests, 0 errors in ")
    assert first.endswith(" req/s")
    assert latency.startswith("latency ms: p50 ")
    assert ", p90 " in latency
    assert ", p99 " in latency
    assert ", max " in latency


async def test_the_json_summary_counts_every_request() -> None:
    async with serving(CallIds) as server:
        assert server.address is not None
        code, out, _ = await call("--protocol", "call_ids", server.address, "x", "-n", "120", "-c", "7", "--json")
    summary = json.loads(out)
    assert code == 0
    assert (summary["count"], summary["errors"], summary["protocol"]) == (120, 0, "idproto")
    latency = summary["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


async def test_error_answers_are_counted_and_exit_1() -> None:
    async with serving(CallLines) as server:
        assert server.address is not None
        code, out, _ = await call("--protocol", "call_lines", server.address, "fail", "-n", "10", "-c", "3", "--json")
    summary = json.loads(out)
    assert code == 1
    assert (summary["count"], summary["errors"], summary["error_answers"]) == (10, 10, 10)
    assert summary["first_error"] == "echo:fail"


async def test_timeouts_are_counted_and_exit_1() -> None:
    async with raw_server() as address:
        code, out, _ = await call("--protocol", "call_ids", address, "x", "-n", "6", "-c", "6", "--timeout", "0.2")
    assert code == 1
    assert out.splitlines()[0].startswith("6 requests, 6 errors (6 timeouts) in ")
    assert out.splitlines()[-1] == "first error: no answer within 0.2s"


async def test_the_rate_holds() -> None:
    # 20 requests at 100/s: the last may start 190 ms after the first,
    # not before (less a loop clock's millisecond); unpaced, 20 answers on
    # loopback take a few ms.
    async with serving(CallIds) as server:
        assert server.address is not None
        argv = ["--protocol", "call_ids", server.address, "x", "-n", "20", "-c", "20", "--json"]
        _, paced, _ = await call(*argv, "--rate", "100")
        _, unpaced, _ = await call(*argv)
    assert json.loads(paced)["elapsed_s"] >= 0.185
    assert json.loads(unpaced)["elapsed_s"] < 0.15


async def test_the_requests_share_the_connections_asked_for() -> None:
    async with serving(CallIds) as server:
        assert server.address is not None
        argv = ["--protocol", "call_ids", server.address, "x", "-n", "60", "-c", "6", "--connections", "3"]
        code, _, _ = await call(*argv)
        assert code == 0
        assert server.connections_total == 3


@pytest.mark.parametrize("protocol", [CallLines, CallIds])
async def test_each_answer_goes_to_its_own_request(protocol: type[CallLines | CallIds]) -> None:
    answers: dict[int, Any] = {}

    async with serving(protocol) as server, call_connection(protocol, server.address or "", timeout=10) as conn:

        async def one(i: int) -> None:
            answers[i] = await conn.request(protocol.call_request([f"n{i}"], {}), timeout=10)

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
    texts = {i: protocol.describe_answer(answer).text for i, answer in answers.items()}
    expected = {i: (f"echo:n{i}" if protocol is CallLines else f"N{i}") for i in range(200)}
    assert texts == expected


async def test_requests_fail_once_the_server_closed() -> None:
    # The first waits for its answer when the server closes; the next is
    # refused by the closed multiplexer at once, never left waiting.
    async with raw_server(answer_after=1) as address, call_connection(CallIds, address, timeout=5) as conn:
        with pytest.raises(Exception, match="connection lost"):
            await conn.request(Frame.make(REQUEST, 0, b"a"), timeout=5)
        with pytest.raises(Exception, match="connection lost"):
            await conn.request(Frame.make(REQUEST, 0, b"b"), timeout=5)


def test_percentiles_are_measured_values_by_nearest_rank() -> None:
    summary = LoadSummary(
        count=100,
        error_answers=0,
        timeouts=0,
        failures=0,
        elapsed=2.0,
        latencies=tuple(i / 1000 for i in range(1, 101)),
    )
    assert summary.percentile(50) == 0.05
    assert summary.percentile(90) == 0.09
    assert summary.percentile(99) == 0.099
    assert summary.percentile(100) == 0.1
    assert summary.rate == 50.0
    assert summary.lines() == [
        "100 requests, 0 errors in 2.000 s: 50.0 req/s",
        "latency ms: p50 50.000, p90 90.000, p99 99.000, max 100.000",
    ]
    empty = LoadSummary(count=3, error_answers=1, timeouts=1, failures=1, elapsed=1.0, latencies=())
    assert empty.percentile(50) is None
    assert empty.lines()[0] == "3 requests, 3 errors (1 error answers, 1 timeouts, 1 failures) in 1.000 s: 3.0 req/s"
    assert empty.as_json()["latency_ms"] == {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
