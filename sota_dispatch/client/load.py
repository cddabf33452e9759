"""The client tool's load mode: N requests, a concurrency, a rate, one summary.

``-n 10000 --concurrency 50 --rate 2000`` runs 50 workers over the tool's
connections; each takes the next request number and, with a rate, waits
for that request's slot (request ``i`` starts no earlier than ``i / rate``
seconds after the first), so the rate holds however fast the server
answers and the concurrency bounds what is in flight when it does not.
Every answer's latency is kept (a float each: 10^6 requests are 8 MB) so
the percentiles are exact, not estimated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs

from ..errors import ConnectionLost, SotaError, StreamTimeout
from ..protocol.calls import CallAnswer
from .connection import CallConnection

__all__ = ["LoadSummary", "run_load"]


@attrs.frozen
class LoadSummary:
    """What a load run did: counts, time, and the latency of every answer.

    ``latencies``: seconds, sorted, one per answer (error answers
    included: the server did answer). ``errors`` are the requests that did
    not get a successful answer: error answers, timeouts and failures (the
    connection lost, a request refused locally).
    """

    count: int
    error_answers: int
    timeouts: int
    failures: int
    elapsed: float
    latencies: tuple[float, ...]
    #: The first error seen, for the one line that says why.
    first_error: str = ""

    @property
    def errors(self) -> int:
        return self.error_answers + self.timeouts + self.failures

    @property
    def rate(self) -> float:
        """Requests finished per second (answered or not)."""
        return self.count / self.elapsed if self.elapsed > 0 else math.inf

    def percentile(self, percent: float) -> float | None:
        """The latency (seconds) at or under which ``percent`` % of the
        answers came (the nearest-rank method: always a measured value);
        None without answers."""
        if not self.latencies:
            return None
        rank = math.ceil(percent / 100 * len(self.latencies))
        return self.latencies[min(max(rank, 1), len(self.latencies)) - 1]

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values (latencies in milliseconds)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        latency = {f"p{p}": ms(self.percentile(p)) for p in (50, 90, 99)}
        latency["max"] = ms(self.latencies[-1] if self.latencies else None)
        latency["mean"] = ms(sum(self.latencies) / len(self.latencies) if self.latencies else None)
        return {
            "count": self.count,
            "errors": self.errors,
            "error_answers": self.error_answers,
            "timeouts": self.timeouts,
            "failures": self.failures,
            "elapsed_s": round(self.elapsed, 6),
            "rate": round(self.rate, 1) if math.isfinite(self.rate) else None,
            "latency_ms": latency,
            "first_error": self.first_error or None,
        }

    def lines(self) -> list[str]:
        """The summary for a person: counts and rate, then the latencies."""
        errors = f"{self.errors} errors"
        if self.errors:
            kinds = [(self.error_answers, "error answers"), (self.timeouts, "timeouts"), (self.failures, "failures")]
            errors += " (" + ", ".join(f"{n} {what}" for n, what in kinds if n) + ")"
        lines = [f"{self.count} requests, {errors} in {self.elapsed:.3f} s: {self.rate:.1f} req/s"]
        if self.latencies:
            shown = ", ".join(f"p{p} {self.percentile(p) * 1000:.3f}" for p in (50, 90, 99))  # type: ignore[operator]
            lines.append(f"latency ms: {shown}, max {self.latencies[-1] * 1000:.3f}")
        if self.first_error:
            lines.append(f"first error: {self.first_error}")
        return lines


@attrs.define
class _Tally:
    """The counts the workers share (one task runs at a time: no locks)."""

    next: int = 0
    error_answers: int = 0
    timeouts: int = 0
    failures: int = 0
    latencies: list[float] = attrs.field(factory=list)
    first_error: str = ""

    def note(self, error: str) -> None:
        if not self.first_error:
            self.first_error = error


async def run_load(
    connections: Sequence[CallConnection],
    frame: Any,
    *,
    count: int,
    concurrency: int,
    rate: float | None,
    timeout: float,
    describe: Callable[[Any], CallAnswer],
) -> LoadSummary:
    """Send ``frame`` ``count`` times over ``connections`` (worker ``k``
    uses connection ``k`` modulo their number), at most ``concurrency`` in
    flight and, with ``rate``, at most that many a second; each request
    waits ``timeout`` seconds for its answer, which ``describe`` judges."""
    tally = _Tally()
    start, wall_start = anyio.current_time(), time.perf_counter()

    async def worker(connection: CallConnection) -> None:
        while tally.next < count:
            number = tally.next
            tally.next += 1
            if rate is not None:
                await anyio.sleep_until(start + number / rate)
            sent = time.perf_counter()  # not the loop's clock: uvloop's moves once per loop turn
            try:
                answer = await connection.request(frame, timeout=timeout)
            except StreamTimeout:
                tally.timeouts += 1
                tally.note(f"no answer within {timeout:g}s")
                continue
            except (SotaError, OSError) as exc:  # ConnectionLost, StreamLimitError, a send that failed
                tally.failures += 1
                tally.note(_failure_text(exc))
                continue
            tally.latencies.append(time.perf_counter() - sent)
            if answer is not None:
                described = describe(answer)
                if not described.ok:
                    tally.error_answers += 1
                    tally.note(described.text)

    async with anyio.create_task_group() as tg:
        for k in range(max(1, min(concurrency, count))):
            tg.start_soon(worker, connections[k % len(connections)])
    elapsed = time.perf_counter() - wall_start
    return LoadSummary(
        count=count,
        error_answers=tally.error_answers,
        timeouts=tally.timeouts,
        failures=tally.failures,
        elapsed=elapsed,
        latencies=tuple(sorted(tally.latencies)),
        first_error=tally.first_error,
    )


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, ConnectionLost):
        reason = exc.reason
        if reason is None:
            return "the server closed the connection"
        return f"the connection was lost: {reason}"
    return str(exc) or type(exc).__name__
