"""ZMTP broker benchmark: the ZMTP proxy users run against libzmq's ``zmq.proxy``.

The question: does ``python -m sota_dispatch.serve --protocol zmtp
--upstream ...`` (a ZMTP listener and one cluster: what a user runs) cost
no more CPU per message than libzmq's own broker, ``zmq.proxy(ROUTER,
DEALER)`` driven from pyzmq in one process? Both sit between the same
pyzmq DEALER client (``zmtp_bench.py --client``: one connection, a window of
messages in flight) and the same pyzmq ROUTER echo behind
(``zmtp_bench.py --serve pyzmq-frames``), so only the broker changes.

Per measurement, fresh processes: the echo, the broker, the client. The
broker's CPU is its utime+stime from ``/proc`` over the timed part only
(every thread: libzmq's I/O thread counts for ``zmq.proxy``). Variants run
round-robin, the order rotating each round, and medians are reported with
each broker's ratio to ``zmq-proxy`` at the same size. The header's build
line says whether the compiled (mypyc) modules or the pure-Python ones ran.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from harness import (
    ServerCpu,
    announce,
    exit_when_parent_goes,
    machine_lines,
    parse_variants,
    positive_int,
    publish,
    read_line,
    report_head,
    resolution_line,
    run_timed,
    source_line,
    spawn,
    start_serve,
    stop,
    version,
)

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "broker_bench.py"
ZMTP_BENCH = HERE / "zmtp_bench.py"
HOST = "127.0.0.1"
#: The library code this benchmark measures, for the report's source line.
SOURCE = ("sota_dispatch", "protocols/zmtp")
BASELINE = "zmq-proxy"
#: Each variant: how ``serve`` is told which loop to run (None: libzmq's broker).
VARIANTS: dict[str, list[str] | None] = {
    "zmq-proxy": None,
    "sota-asyncio": ["--backend", "asyncio", "--no-uvloop"],
    "sota-uvloop": ["--backend", "asyncio"],
    "sota-trio": ["--backend", "trio"],
}
#: The goal: the broker's CPU per message at most libzmq's.
TARGET_CPU_RATIO = 1.0
START_TIMEOUT = 30.0
#: The sota broker: a ZMTP listener and one cluster, the echo. Its limit on
#: requests in flight per client connection (256 by default) is raised above
#: the client's window, as libzmq's high-water marks are.
CONFIG = """\
listeners:
  - name: broker
    address: {host}:0
    protocol: zmtp
    limits: {{max_in_flight: {in_flight}}}
    routes: [{{cluster: echo}}]
clusters:
  - name: echo
    endpoints: ["{host}:{echo_port}"]
"""


@attrs.frozen
class Sample(ServerCpu):
    variant: str
    size: int
    rep: int
    wall: float
    cpu_user: float
    cpu_sys: float
    messages: int


def serve_zmq_proxy(echo_port: int) -> None:
    """libzmq's broker: a ROUTER for the clients, a DEALER to the echo, and
    ``zmq.proxy`` moving messages between them, until the parent goes."""
    import zmq

    exit_when_parent_goes()
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (front, back):
        sock.setsockopt(zmq.LINGER, 0)
        # Room for a whole window everywhere: nothing dropped at a high-water mark.
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
    front.bind(f"tcp://{HOST}:0")
    back.connect(f"tcp://{HOST}:{echo_port}")
    endpoint = front.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    announce(int(endpoint.rpartition(b":")[2]), pid=True)
    zmq.proxy(front, back)


async def _start_broker(
    variant: str, echo_port: int, max_in_flight: int, workdir: Path
) -> tuple[asyncio.subprocess.Process, int, int]:
    """The broker of ``variant``: (its process, its port, the pid to measure);
    its configuration file goes in ``workdir``."""
    loop_args = VARIANTS[variant]
    if loop_args is None:
        proc = await spawn(SCRIPT, ["--zmq-proxy", str(echo_port)])
        word, zmq_port, pid = [*(await read_line(proc, START_TIMEOUT, variant)).split(), "", "", ""][:3]
        if word != "PORT":
            raise RuntimeError(f"{variant}: unexpected first line")
        return proc, int(zmq_port), int(pid)
    config = workdir / "broker.yaml"
    config.write_text(CONFIG.format(host=HOST, echo_port=echo_port, in_flight=max_in_flight))
    command = ["--config", str(config), *loop_args]
    broker, port = await start_serve(command, START_TIMEOUT, variant)
    return broker, port, broker.pid


async def measure(variant: str, size: int, rep: int, args: argparse.Namespace) -> Sample:
    """One run: echo, broker and client started afresh; always stopped."""
    procs: list[asyncio.subprocess.Process] = []
    workdir = tempfile.TemporaryDirectory(prefix="broker-bench-")
    try:
        echo = await spawn(ZMTP_BENCH, ["--serve", "pyzmq-frames"])
        procs.append(echo)
        echo_port = int((await read_line(echo, START_TIMEOUT, "echo")).split()[1])
        broker, port, pid = await _start_broker(variant, echo_port, 2 * args.window, Path(workdir.name))
        procs.append(broker)
        client_args = ["--client", "--port", str(port), "--sizes", str(size), "--messages", str(args.messages)]
        client_args += ["--window", str(args.window), "--warmup", str(args.warmup), "--timeout", str(args.timeout)]
        client = await spawn(ZMTP_BENCH, client_args)
        procs.append(client)
        result, user, system = await run_timed(client, pid, args.timeout, f"client via {variant} ({size} B)")
        if broker.returncode is not None:
            raise RuntimeError(f"{variant} died during the run")
        return Sample(variant, size, rep, float(result["wall"]), user, system, args.messages)
    finally:
        for proc in reversed(procs):
            await stop(proc)
        workdir.cleanup()  # its configuration file; one directory per run was left behind


async def run_all(variants: Sequence[str], sizes: Sequence[int], args: argparse.Namespace) -> list[Sample]:
    samples = []
    for rep in range(args.reps):
        shift = rep % len(variants)
        for size in sizes:
            for variant in [*variants[shift:], *variants[:shift]]:
                sample = await measure(variant, size, rep, args)
                print(
                    f"round {rep + 1} {variant:13} {size:5} B: {sample.cpu_us_per_msg:6.2f} us/msg, "
                    f"{sample.msgs_per_s:9,.0f} msg/s",
                    file=sys.stderr,
                )
                samples.append(sample)
    return samples


def _median(samples: Sequence[Sample], variant: str, size: int, key: str) -> float:
    values: list[float] = [getattr(s, key) for s in samples if s.variant == variant and s.size == size]
    return statistics.median(values)


def report(samples: Sequence[Sample], variants: Sequence[str], sizes: Sequence[int], args: argparse.Namespace) -> str:
    import zmq

    out = [
        *report_head("ZMTP broker benchmark", "bench/broker_bench.py", "python " + " ".join(sys.argv)),
        *machine_lines(
            f"pyzmq {version('pyzmq')} (libzmq {zmq.zmq_version()}), anyio {version('anyio')}, "
            f"trio {version('trio')}, uvloop {version('uvloop')}, sota-dispatch {version('sota-dispatch')}, "
            f"sota-zmtp {version('sota-zmtp')}"
        ),
        source_line(SOURCE),
        "",
        "## Workload",
        "",
        f"- one pyzmq DEALER sends {args.messages:,} single-frame messages per run through the broker, keeping "
        f"up to {args.window} unanswered; {args.warmup:,} untimed warm-up messages first; a pyzmq ROUTER echo "
        "(`zmtp_bench.py --serve pyzmq-frames`) answers behind the broker. Fresh processes per run; "
        f"{args.reps} runs per (variant, size), round-robin, the order rotating each round",
        "- `zmq-proxy`: `zmq.proxy(ROUTER, DEALER)` in one pyzmq process (its I/O thread counted), high-water "
        "marks 100,000. `sota-*`: `python -m sota_dispatch.serve --config broker.yaml` (a ZMTP listener whose "
        f"`max_in_flight` is {2 * args.window}, one cluster: the echo) on asyncio's own loop, uvloop or trio",
        "- broker CPU = utime+stime of the broker process over the timed part; msg/s = messages / client wall time",
        resolution_line(samples),
        "",
        "## Results",
        "",
    ]
    for size in sizes:
        base = _median(samples, BASELINE, size, "cpu_us_per_msg")
        out += [
            f"### {size} B messages",
            "",
            "| variant | broker CPU us/msg, median | min - max | msg/s, median | broker busy "
            "| CPU ratio to zmq-proxy |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for variant in variants:
            runs = [s for s in samples if s.variant == variant and s.size == size]
            cpu = [s.cpu_us_per_msg for s in runs]
            ratio = statistics.median(cpu) / base
            bold = "**" if variant != BASELINE else ""
            out.append(
                f"| {variant} | {statistics.median(cpu):.2f} | {min(cpu):.2f} - {max(cpu):.2f} | "
                f"{statistics.median(s.msgs_per_s for s in runs):,.0f} | "
                f"{statistics.median(s.busy for s in runs):.0%} | "
                f"{'-' if variant == BASELINE else f'{bold}{ratio:.2f}x{bold}'} |"
            )
        out.append("")
    out += ["## Goal", "", f"Broker CPU per message at most {TARGET_CPU_RATIO:.1f}x `zmq-proxy`'s, at every size:", ""]
    for size in sizes:
        base = _median(samples, BASELINE, size, "cpu_us_per_msg")
        for variant in variants[1:]:
            ratio = _median(samples, variant, size, "cpu_us_per_msg") / base
            verdict = "met" if ratio <= TARGET_CPU_RATIO else "NOT met"
            out.append(f"- {variant}, {size} B: {ratio:.2f}x: {verdict}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--sizes", default="16,1024", help="payload sizes in bytes (default 16,1024)")
    parser.add_argument("--messages", type=positive_int, default=200_000, help="timed messages per run")
    parser.add_argument("--window", type=positive_int, default=1000, help="messages in flight (default 1000)")
    parser.add_argument("--warmup", type=int, default=10_000, help="untimed messages per run first")
    parser.add_argument("--reps", type=positive_int, default=5, help="runs per (variant, size)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per client run")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20,000 messages, 1 rep; no report")
    parser.add_argument("--output", default=str(HERE / "BROKER_RESULTS.md"), help="report path, '-' for none")
    parser.add_argument("--zmq-proxy", type=int, metavar="ECHO_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.zmq_proxy is not None:
        serve_zmq_proxy(args.zmq_proxy)
        return
    if args.quick:
        args.messages, args.warmup, args.reps, args.output = 20_000, 1000, 1, "-"
    variants = parse_variants(parser, args.variants, VARIANTS) if args.variants else list(VARIANTS)
    if BASELINE not in variants:
        variants.insert(0, BASELINE)
    if "sota-trio" in variants and importlib_missing("trio"):
        variants.remove("sota-trio")
    sizes = [positive_int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    samples = asyncio.run(run_all(variants, sizes, args))
    publish(report(samples, variants, sizes, args), args.output, started)


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


if __name__ == "__main__":
    main()
