"""The client tool's run: connect, send, print, and the exit code.

:func:`execute` runs a checked :class:`~.args.CallPlan` in the running event
loop (the tests call it, and :func:`run_call`, on every backend);
``python -m sota_dispatch.call`` runs it with :func:`anyio.run`. What the
user sees is decided here and only here:

* one request: the answer's line (the protocol's
  :meth:`~sota_dispatch.FrameSemantics.describe_answer`), then its latency;
  ``--json``: one object with both;
* ``-n N``: the summary of :class:`~.load.LoadSummary` instead;
* exit status 0 for a successful answer (every answer, with ``-n``), 1 for
  an error answer or a timeout, 2 for a usage error or a server that
  cannot be reached; the last two as one ``error:`` line on stderr, never
  a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, TextIO

from ..cli.args import UsageError
from ..errors import ConnectionLost, SotaError, StreamTimeout
from .args import CallPlan, call_parser, callable_protocols, read_plan
from .connection import CallConnection, CannotConnect, call_connection
from .load import run_load

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "execute", "plan_or_exit", "run_call"]

#: Answered, and every answer a success.
EXIT_OK = 0
#: An error answer, a timeout, a connection lost before the answer.
EXIT_ERROR = 1
#: A usage error, or a server that cannot be reached.
EXIT_USAGE = 2


class _Failed(Exception):
    """A run that ends without an answer: the line to print, the exit code."""

    def __init__(self, message: str, code: int, kind: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


async def _connect_all(stack: AsyncExitStack, plan: CallPlan) -> list[CallConnection]:
    connections = []
    for _ in range(plan.connections):
        try:
            connection = await stack.enter_async_context(
                call_connection(
                    plan.protocol,
                    plan.address,
                    timeout=plan.timeout,
                    tls=plan.tls,
                    options=plan.options,
                    max_in_flight=max(1024, plan.concurrency),
                )
            )
        except CannotConnect as exc:
            raise _Failed(str(exc), EXIT_USAGE, "unreachable") from None
        except TimeoutError as exc:
            raise _Failed(f"timeout: {exc}", EXIT_ERROR, "timeout") from None
        except ConnectionLost as exc:
            message = f"{plan.address} closed the connection during the handshake{_reason(exc)}"
            raise _Failed(message, EXIT_ERROR, "lost") from None
        connections.append(connection)
    return connections


def _reason(exc: ConnectionLost) -> str:
    return "" if exc.reason is None else f": {exc.reason}"


async def _one(plan: CallPlan, connection: CallConnection, stdout: TextIO) -> int:
    started = time.perf_counter()  # not the loop's clock: uvloop's moves once per loop turn
    try:
        answer = await connection.request(plan.frame, timeout=plan.timeout)
    except StreamTimeout:
        raise _Failed(f"timeout: no answer within {plan.timeout:g}s", EXIT_ERROR, "timeout") from None
    except ConnectionLost as exc:
        message = f"{plan.address} closed the connection before answering{_reason(exc)}"
        raise _Failed(message, EXIT_ERROR, "lost") from None
    latency_ms = (time.perf_counter() - started) * 1000
    if answer is None:  # a oneway request: sent is all there is
        if plan.json:
            print(_dump({"protocol": plan.protocol.protocol_name, "ok": True, "oneway": True}), file=stdout)
        else:
            print(f"sent in {latency_ms:.3f} ms (oneway: no answer)", file=stdout)
        return EXIT_OK
    described = plan.protocol.describe_answer(answer)
    if plan.json:
        record = {
            "protocol": plan.protocol.protocol_name,
            "address": plan.address,
            "ok": described.ok,
            "latency_ms": round(latency_ms, 3),
            "text": described.text,
            "answer": described.data,
        }
        print(_dump(record), file=stdout)
    else:
        print(described.text, file=stdout)
        print(f"{'answered' if described.ok else 'error answer'} in {latency_ms:.3f} ms", file=stdout)
    return EXIT_OK if described.ok else EXIT_ERROR


async def execute(plan: CallPlan, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``plan`` in the running event loop, print what it got to
    ``stdout`` (errors to ``stderr``) and return the exit status."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        async with AsyncExitStack() as stack:
            connections = await _connect_all(stack, plan)
            if not plan.load:
                return await _one(plan, connections[0], stdout)
            summary = await run_load(
                connections,
                plan.frame,
                count=plan.count,
                concurrency=plan.concurrency,
                rate=plan.rate,
                timeout=plan.timeout,
                describe=plan.protocol.describe_answer,
            )
        if plan.json:
            print(
                _dump({"protocol": plan.protocol.protocol_name, "address": plan.address, **summary.as_json()}),
                file=stdout,
            )
        else:
            for line in summary.lines():
                print(line, file=stdout)
        return EXIT_OK if not summary.errors else EXIT_ERROR
    except (SotaError, OSError) as exc:  # what no branch above foresaw: still one line, no traceback
        failed = _Failed(str(exc) or type(exc).__name__, EXIT_ERROR, "failure")
    except _Failed as caught:
        failed = caught
    if plan.json and failed.code == EXIT_ERROR:
        record = {"protocol": plan.protocol.protocol_name, "ok": False, "error": failed.kind, "detail": str(failed)}
        print(_dump(record), file=stdout)
    print(f"error: {failed}", file=stderr)
    return failed.code


def plan_or_exit(argv: Sequence[str], stdout: TextIO, stderr: TextIO, prog: str) -> CallPlan | int:
    """The checked plan of ``argv``; or, when there is nothing to run
    (``--help``, ``--list-protocols``, a usage error), the exit status,
    with what was to be said printed."""
    try:
        args: argparse.Namespace = call_parser(prog).parse_intermixed_args(list(argv))
    except SystemExit as exit_:  # --help, or argparse's one error line (OneLineParser)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.list_protocols:
        for name, cls in sorted(callable_protocols().items()):
            summary = (cls.__doc__ or "").strip().splitlines()
            print(f"{name:<14} {summary[0] if summary else ''}".rstrip(), file=stdout)
        return EXIT_OK
    try:
        return read_plan(args)
    except (UsageError, SotaError) as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE


async def run_call(
    argv: Sequence[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    prog: str = "python -m sota_dispatch.call",
) -> int:
    """The whole tool in the running event loop (``--backend`` aside):
    parse ``argv``, run it, print, return the exit status."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    plan = plan_or_exit(argv, stdout, stderr, prog)
    if isinstance(plan, int):
        return plan
    return await execute(plan, stdout, stderr)
