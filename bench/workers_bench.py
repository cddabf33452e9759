"""Proxy throughput with 1 and 2 worker processes (``serve --workers N``), in one run.

One backend process runs the protocol's local echo service; a proxy runs
``--config`` with one listener and ``--workers N`` for each N in
``--workers`` (1,2 by default); the client, in this process, opens
``--connections`` connections (spread over the workers by the kernel) and
pipelines ``--window`` requests on each. Reported per N: requests/s, the
proxy's CPU per request summed over its workers (and the supervisor),
the CPU each worker spent, the backend's, and the client's own CPU per
request: on a machine with as many cores as processes here, the client
and the backend compete with the workers, so the client's share says how
much of the machine the proxy could not have.

Runs alternate between the worker counts, ``--rounds`` times, and medians
are reported. Everything is on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from proxy_bench import Client, loop_in_use

from harness import machine_lines, positive_int, proc_cpu, publish, report_head, source_line, version
from sota_dispatch.testing import ServeProcess, serve_process


def config_file(directory: str, protocol: str, upstream: str) -> str:
    document = {
        "listeners": [{"name": "bench", "address": "127.0.0.1:0", "protocol": protocol, "routes": [{"cluster": "up"}]}],
        "clusters": [{"name": "up", "endpoints": [upstream]}],
        "admin": {"address": "127.0.0.1:0"},
    }
    path = Path(directory) / f"{protocol}.json"
    path.write_text(json.dumps(document))
    return str(path)


def workers_of(proxy: ServeProcess) -> list[int]:
    """The worker pids, from the supervisor's ``/workers``."""
    line = proxy.wait_for_line("admin endpoint on", 30)
    admin = line.split("http://")[1].split("/")[0]
    with urllib.request.urlopen(f"http://{admin}/workers", timeout=10) as answer:
        return [int(w["pid"]) for w in json.load(answer)["workers"]]


def cpu(pid: int) -> float:
    return sum(proc_cpu(pid))


async def one_round(clients: list[Client], count: int, window: int) -> float:
    """Seconds for every client to get ``count`` answers, all at once."""
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.pipelined, count, window)
    return time.perf_counter() - start


async def measure(protocol: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    samples: dict[int, dict[str, list[float]]] = {n: {} for n in args.workers}
    with tempfile.TemporaryDirectory() as directory:
        common = ["--listen", "127.0.0.1:0", "--backend", args.backend]
        with serve_process(["--protocol", protocol, *common]) as upstream:
            config = config_file(directory, protocol, upstream.address)
            for _ in range(args.rounds):
                for n in args.workers:
                    command = ["--config", config, "--workers", str(n), "--backend", args.backend]
                    with serve_process(command, timeout=60) as proxy:
                        pids = workers_of(proxy)
                        clients = [await Client.connect(proxy.address, protocol) for _ in range(args.connections)]
                        await one_round(clients, min(args.count, 2000), args.window)  # warm-up
                        before = {pid: cpu(pid) for pid in [*pids, proxy.process.pid, upstream.process.pid]}
                        mine = time.process_time()
                        seconds = await one_round(clients, args.count, args.window)
                        mine = time.process_time() - mine
                        spent = {pid: cpu(pid) - before[pid] for pid in before}
                        for client in clients:
                            await client.stream.aclose()
                        proxy.stop()
                    total = args.count * args.connections
                    record = samples[n]
                    record.setdefault("rate", []).append(total / seconds)
                    proxy_cpu = sum(spent[pid] for pid in pids) + spent[proxy.process.pid]
                    record.setdefault("proxy_us", []).append(proxy_cpu / total * 1e6)
                    record.setdefault("per_worker", []).append(
                        statistics.mean(spent[pid] for pid in pids) / seconds * 100
                    )
                    record.setdefault("supervisor_us", []).append(spent[proxy.process.pid] / total * 1e6)
                    record.setdefault("backend_us", []).append(spent[upstream.process.pid] / total * 1e6)
                    record.setdefault("client_us", []).append(mine / total * 1e6)
    return {n: {key: statistics.median(values) for key, values in record.items()} for n, record in samples.items()}


def report(results: dict[str, dict[int, dict[str, float]]], args: argparse.Namespace, command: str) -> str:
    lines = report_head("Proxy throughput with worker processes", "bench/workers_bench.py", command)
    lines += machine_lines(f"anyio {version('anyio')}, uvloop {version('uvloop')}, backend {args.backend}")
    lines += [
        f"usable cores: {len(os.sched_getaffinity(0))}",
        source_line(["sota_dispatch", "protocols"]),
        f"- event loop of the backend and the workers: {loop_in_use(args.backend)}",
        "",
    ]
    lines += [
        "## Throughput",
        "",
        f"{args.connections} connections, {args.window} requests in flight on each, {args.count:,} requests per "
        f"connection per round, median of {args.rounds} rounds. CPU is per request (µs): the proxy's summed over "
        "its workers and supervisor; each worker's busy share is its CPU time over the wall time.",
        "",
        "| protocol | workers | req/s | vs 1 worker | proxy CPU µs/req | worker busy % | supervisor µs/req "
        "| backend µs/req | client µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for protocol, by_n in results.items():
        base = by_n[args.workers[0]]["rate"]
        for n, r in by_n.items():
            lines.append(
                f"| {protocol} | {n} | {r['rate']:,.0f} | {r['rate'] / base:.2f}x | {r['proxy_us']:.1f} "
                f"| {r['per_worker']:.0f} | {r['supervisor_us']:.2f} | {r['backend_us']:.1f} | {r['client_us']:.1f} |"
            )
    lines += [
        "",
        "## What a machine with more cores should reach",
        "",
        "Each worker serves about 1 / (its CPU per request) requests per second of its own core, so with a core "
        "per worker (and the clients and backends elsewhere) the rate grows with the worker count until the "
        "backends or the network give out. On this machine the client, the backend and the workers share the "
        "cores, so a second worker mostly takes time from them. From the one-worker runs:",
        "",
    ]
    for protocol, by_n in results.items():
        cost = by_n[args.workers[0]]["proxy_us"]
        if cost <= 0:  # a run too short for /proc's clock ticks (--quick)
            lines.append(f"- {protocol}: the run was too short to measure its CPU.")
            continue
        per_core = 1e6 / cost
        lines.append(
            f"- {protocol}: about {per_core:,.0f} req/s per worker core, so about {4 * per_core:,.0f} with 4 workers "
            f"and {8 * per_core:,.0f} with 8, each on a core of its own."
        )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="simple_line,bolt", help="comma-separated (default simple_line,bolt)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--connections", type=positive_int, default=8)
    parser.add_argument("--window", type=positive_int, default=100, help="requests in flight per connection")
    parser.add_argument("--count", type=positive_int, default=20_000, help="requests per connection per round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, one round")
    parser.add_argument(
        "--output", default=str(Path(__file__).with_name("WORKERS_RESULTS.md")), help="report file ('-': print only)"
    )
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds, args.connections = 300, 1, 2
    args.workers = [positive_int(n) for n in args.workers.split(",") if n.strip()]
    started = time.monotonic()
    command = "python bench/workers_bench.py " + " ".join(sys.argv[1:])

    async def run() -> dict[str, dict[int, dict[str, float]]]:
        return {p.strip(): await measure(p.strip(), args) for p in args.protocols.split(",") if p.strip()}

    results: Any = anyio.run(run)
    publish(report(results, args, command.strip()), args.output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
