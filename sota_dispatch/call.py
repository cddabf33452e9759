"""``python -m sota_dispatch.call``: send a request to a server of any protocol.

Like grpcurl, or a ZeroMQ user's one-liner::

    python -m sota_dispatch.call --protocol simple_line 127.0.0.1:7070 'a=1&b=2'
    python -m sota_dispatch.call --protocol zmtp 127.0.0.1:5555 hello world
    python -m sota_dispatch.call --protocol dubbo 127.0.0.1:20880 --service com.example.Echo --method echo arg
    python -m sota_dispatch.call --protocol simple_line 127.0.0.1:7070 -n 10000 --concurrency 50 --rate 2000 a=1

It prints the answer and its latency, or with ``-n`` a summary (count,
errors, req/s, latency percentiles). Exit status: 0 answered OK, 1 an
error answer or a timeout, 2 a usage error or a server that cannot be
reached (one ``error:`` line on stderr, never a traceback). The work is
done in :mod:`sota_dispatch.client`; this module only picks the event loop.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from functools import partial

import anyio

from .client.tool import execute, plan_or_exit

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sota_dispatch.call") -> int:
    """Entry point (``sota-dispatch call`` calls it too); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    plan = plan_or_exit(arguments, sys.stdout, sys.stderr, prog)
    if isinstance(plan, int):
        return plan
    backend_options: dict[str, object] = {}
    if plan.backend == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        backend_options["use_uvloop"] = True  # as serve runs: the same loop on both ends
    try:
        return anyio.run(partial(execute, plan), backend=plan.backend, backend_options=backend_options)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
