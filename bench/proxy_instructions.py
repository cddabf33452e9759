"""Proxy CPU work per request in instructions (callgrind): an A/B that noise cannot move.

proxy_bench.py measures the proxy's CPU time per request, which on a shared
machine moves by 10-20% between runs of the same code. This script counts
what the proxy *does* instead: the proxy process runs under valgrind's
callgrind, its counters are zeroed after a warm-up, the same client as
proxy_bench.py (this checkout's) pipelines ``--count`` requests through it,
and the instructions the proxy executed meanwhile are divided by the count.
The same code on the same input gives the same number to within a fraction
of a percent, whatever else the machine is doing.

``--side NAME=PYTHON`` (repeatable) names the Python environments whose
proxy is measured, e.g. a worktree of an older commit with its own venv
installed in editable mode; the backend (the protocol's local echo service)
and the client are this checkout's, the same for every side. With two or
more sides the report gives each side's count over the first side's. The
sides of one case run at the same time (one proxy each).

``--side NAME=PYTHON+filters`` runs that side's proxy with the three
built-in stream filters chained (each letting every request through): the
cost of running a chain.

``--target service`` measures the protocol's local echo service instead
(``python -m sota_dispatch.serve --protocol P``, what a user runs), driven
by the same client.

Instructions are not time: they miss cache misses and system calls, and
weigh every instruction alike. Use it to compare two builds of the same
Python code; use proxy_bench.py for what a user sees. Needs valgrind
(``apt-get install valgrind``); CPython under callgrind runs about 50 times
slower, so a case takes tens of seconds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread
from proxy_bench import PROTOCOLS, Client

from harness import machine_lines, positive_int, publish, report_head, source_line, version

_LISTENING = re.compile(r"listening on (\S+?),? ")


def _start(command: Sequence[str], timeout: float, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a ``serve`` command in ``cwd``; return it and the address it logs.

    Never in a checkout: ``python -m`` puts the working directory first on
    ``sys.path``, so another side's proxy would import this checkout's
    ``sota_dispatch`` instead of its own."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:  # readline blocks; the process ends its stderr if it dies
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = _LISTENING.search(line + " ")
        if found:
            return process, found.group(1)
    process.kill()
    process.wait()
    raise RuntimeError(f"{command[0]} did not start: {''.join(lines)[-2000:]}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)  # callgrind writes its last dump on the way out
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _measured_total(out: Path) -> int:
    """The instruction total of the dump ``callgrind_control`` asked for
    (the one whose trigger is ``measured``; the exit writes another)."""
    dumps = [p for p in out.parent.glob(out.name + ".*") if "measured" in p.read_text(errors="replace")[:2000]]
    if len(dumps) != 1:
        raise RuntimeError(f"expected one 'measured' dump of {out}, found {len(dumps)}")
    for line in dumps[0].read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dumps[0]}: no summary line")


async def measure_side(protocol: str, window: int, side: int, args: argparse.Namespace, work: Path) -> float:
    """Instructions per request of side ``side``'s proxy in front of this
    checkout's backend (``--target service``: of its local echo service)."""
    python, filtered = _python_of(args.sides[side][1])
    common = ["--protocol", protocol, "--listen", "127.0.0.1:0"]
    backend: subprocess.Popen[str] | None = None
    upstream: list[str] = []
    if args.target == "proxy":
        backend, backend_address = await anyio.to_thread.run_sync(
            _start, [sys.executable, "-m", "sota_dispatch.serve", *common], 60, work
        )
        upstream = ["--upstream", backend_address]
        if filtered is not None:
            config = work / f"filters.{protocol}.{window}.{side}.yaml"
            config.write_text(FILTERED_CONFIG.format(protocol=protocol, backend=backend_address, filters=filtered))
            common, upstream = [], ["--config", str(config)]
    out = work / f"callgrind.{protocol}.{window}.{side}"
    try:
        proxy, address = await anyio.to_thread.run_sync(
            _start,
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                python,
                "-m",
                "sota_dispatch.serve",
                *common,
                *upstream,
            ],
            600,
            work,
        )
        try:
            client = await Client.connect(address, protocol, body=args.body)
            await client.pipelined(args.warmup, window)
            await anyio.run_process(["callgrind_control", "--zero", str(proxy.pid)])
            await client.pipelined(args.count, window)
            await anyio.run_process(["callgrind_control", "--dump=measured", str(proxy.pid)])
            await client.stream.aclose()
        finally:
            await anyio.to_thread.run_sync(_stop, proxy)
    finally:
        if backend is not None:
            await anyio.to_thread.run_sync(_stop, backend)
    count: int = args.count
    return await anyio.to_thread.run_sync(_measured_total, out) / count


async def run(args: argparse.Namespace, work: Path) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {}
    for protocol in args.protocols:
        for window in args.windows:
            counts = [0.0] * len(args.sides)

            async def one(
                index: int, protocol: str = protocol, window: int = window, counts: list[float] = counts
            ) -> None:
                counts[index] = await measure_side(protocol, window, index, args, work)

            with anyio.fail_after(args.timeout):
                async with anyio.create_task_group() as tasks:
                    for index in range(len(args.sides)):
                        tasks.start_soon(one, index)
            results[protocol, window] = counts
            print(f"{protocol} {window}: " + ", ".join(f"{c:,.0f}" for c in counts), file=sys.stderr)
    return results


def report(results: dict[tuple[str, int], list[float]], args: argparse.Namespace, command: str) -> str:
    lines = report_head("Proxy instructions per request (callgrind)", "bench/proxy_instructions.py", command)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    lines += machine_lines(f"anyio {version('anyio')}, uvloop {version('uvloop')}, {valgrind}")
    lines += [source_line(["sota_dispatch", "protocols"]), ""]
    lines += ["## Sides", ""] + [f"- {name}: `{python}`" for name, python in args.sides] + [""]
    lines += [
        "## Instructions per proxied request" if args.target == "proxy" else "## Instructions per request served",
        "",
        f"{args.count:,} requests pipelined on one connection after {args.warmup:,} of warm-up; "
        f"the {'proxy' if args.target == 'proxy' else 'local echo service'}'s instructions in between, "
        f"over the count. Request bodies: {args.body} bytes.",
        "",
    ]
    names = [name for name, _ in args.sides]
    ratios = [f"{name} / {names[0]}" for name in names[1:]]
    lines.append("| protocol | in flight | " + " | ".join(names + ratios) + " |")
    lines.append("|---|---:|" + "---:|" * (len(names) + len(ratios)))
    for (protocol, window), counts in results.items():
        cells = [f"{c:,.0f}" for c in counts] + [f"{c / counts[0]:.3f}" for c in counts[1:]]
        lines.append(f"| {protocol} | {window} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _side(text: str) -> tuple[str, str]:
    name, sep, python = text.partition("=")
    if not sep or not name or not python:
        raise argparse.ArgumentTypeError(f"expected NAME=PYTHON or NAME=PYTHON+filters, got {text!r}")
    return name, python


#: A side's proxy with the three built-in stream filters chained, each
#: letting every request through (the cost of running them, not of refusing).
FILTERED_CONFIG = """
listeners:
  - name: bench
    address: 127.0.0.1:0
    protocol: {protocol}
    stream_filters: {filters}
    routes: [{{cluster: backend}}]
clusters:
  - name: backend
    endpoints: [{backend}]
"""

BUILTIN_FILTERS = """
      - {type: rbac, config: {action: allow, source: "127.0.0.0/8,::1"}}
      - {type: local_rate_limit, config: {tokens_per_second: 1000000000}}
      - {type: fault_inject, config: {abort_percent: 0}}"""


def _python_of(side: str) -> tuple[str, str | None]:
    """A side's Python, and the filters its proxy runs from a config file:
    ``+filters`` the three built-ins, ``+config`` none (the baseline for
    ``+filters``: a config file instead of ``--upstream``), else no file."""
    for suffix, filters in (("+filters", BUILTIN_FILTERS), ("+config", "[]")):
        if side.endswith(suffix):
            return side.removesuffix(suffix), filters
    return side, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated (default: all)")
    parser.add_argument("--windows", default="100,1000", help="comma-separated requests in flight (default 100,1000)")
    parser.add_argument("--count", type=positive_int, default=30_000, help="measured requests per case")
    parser.add_argument("--warmup", type=positive_int, default=3_000, help="requests before the counters are zeroed")
    parser.add_argument(
        "--side",
        dest="sides",
        type=_side,
        action="append",
        help="NAME=PYTHON whose proxy to measure (repeatable; default: this=the running Python); "
        "NAME=PYTHON+filters: that proxy with the three built-in stream filters chained "
        "(+config: from a config file, without filters)",
    )
    parser.add_argument(
        "--target",
        choices=("proxy", "service"),
        default="proxy",
        help="what is measured: the proxy (default), or the protocol's local echo service (serve --protocol P)",
    )
    parser.add_argument(
        "--body", type=positive_int, default=64, help="bytes of bolt content, dubbo argument, ZMTP message (default 64)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case at most")
    parser.add_argument("--quick", action="store_true", help="a smoke run: simple_line, tiny counts")
    parser.add_argument("--output", default="-", help="report file ('-', the default: print only)")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the callgrind dumps in this directory (read them with callgrind_annotate: where the work goes)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind and callgrind_control on PATH (apt-get install valgrind)")
    if args.quick:
        args.protocols, args.windows, args.count, args.warmup = "simple_line", "10", 200, 100
    args.sides = args.sides or [("this", sys.executable)]
    try:
        args.windows = [positive_int(w) for w in args.windows.split(",") if w.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--windows: {exc}")
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(args.protocols) - set(PROTOCOLS))
    if unknown or not args.protocols or not args.windows:
        parser.error(f"choose protocols from {', '.join(PROTOCOLS)} and at least one window")
    started = time.monotonic()
    command = "python bench/proxy_instructions.py " + " ".join(sys.argv[1:])
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = anyio.run(run, args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="proxy-instructions-") as work:
            results = anyio.run(run, args, Path(work))
    publish(report(results, args, command.strip()), args.output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
