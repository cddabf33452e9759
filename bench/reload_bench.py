"""What a live reload costs: the time ``Proxy.apply`` takes, and the traffic it disturbs.

Two measurements, in one process (the proxy, a simple_line echo backend and
the load client share one event loop, as the tests do; run each backend):

* ``apply``: a proxy with N clusters (two endpoints each) and one listener
  with N routes (one per cluster, matched on a query key). The time of one
  ``Proxy.apply()`` for: the same config again (nothing changes), one
  cluster's endpoints changed, one route changed, and every cluster
  replaced (new balancers and pools for all). Median of repeats.
* ``traffic``: one client pipelining simple_line requests (100 in flight)
  through the proxy for a few seconds, with no reloads, then with a reload
  every 50 ms that replaces the cluster the route goes to (each a new
  cluster, its upstream connection opened, the old one closed once idle).
  Throughput with reloads over without, from the same run.

Requires the simple_line plugin (``pip install -e protocols/simple_line``).
Not measured here: reading and checking the file, which a reload does in a
worker thread (0.9 s for 1,000 clusters on the machine of RELOAD_RESULTS.md), so
the loop keeps serving meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_lines, publish, report_head, source_line, version
from sota_dispatch.config import ProxyConfig, parse_config
from sota_dispatch.testing import pipelined, running_proxy, serving

BACKENDS = {
    "asyncio": ("asyncio", {"use_uvloop": False}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def document(
    clusters: int, endpoints: list[str], *, weight: int = 1, route_timeout: str = "15s", lb: str = "round_robin"
) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "lines",
                "address": "127.0.0.1:0",
                "protocol": "simple_line",
                "routes": [
                    {"cluster": f"c{i}", "match": [{"attribute": "c", "exact": str(i)}], "timeout": route_timeout}
                    for i in range(clusters)
                ],
            }
        ],
        "clusters": [
            {"name": f"c{i}", "lb": lb, "endpoints": [{"address": a, "weight": weight} for a in endpoints]}
            for i in range(clusters)
        ],
    }


async def apply_times(clusters: int, repeats: int, backend_address: str) -> dict[str, float]:
    endpoints = [backend_address, backend_address.replace("127.0.0.1", "localhost")]
    base = parse_config(document(clusters, endpoints))
    variants: dict[str, Callable[[int], ProxyConfig]] = {
        "same config": lambda k: parse_config(document(clusters, endpoints)),
        "one cluster's endpoints": lambda k: _one_cluster_weight(clusters, endpoints, k),
        "one route": lambda k: parse_config(document(clusters, endpoints, route_timeout=f"{15 + k % 2}s")),
        "every cluster replaced": lambda k: parse_config(
            document(clusters, endpoints, lb=("random", "round_robin")[k % 2])
        ),
    }
    result = {}
    async with running_proxy(base) as proxy:
        for name, make in variants.items():
            configs = [make(k + 1) for k in range(repeats)]  # parsed before timing: apply() alone is measured
            times = []
            for config in configs:
                started = time.perf_counter()
                await proxy.apply(config)
                times.append(time.perf_counter() - started)
            result[name] = statistics.median(times) * 1000
    return result


def _one_cluster_weight(clusters: int, endpoints: list[str], k: int) -> ProxyConfig:
    doc = document(clusters, endpoints)
    doc["clusters"][0]["endpoints"][0]["weight"] = 1 + k % 2
    return parse_config(doc)


async def throughput(backend_address: str, seconds: float, reload_every: float | None) -> float:
    from sota_simple_line import SimpleLineDispatcher

    configs = [parse_config(document(1, [backend_address], lb=lb)) for lb in ("round_robin", "random")]
    answered = 0
    async with running_proxy(configs[0]) as proxy:
        address = proxy.addresses["lines"]
        requests = [b"c=0&n=%d\r\n" % i for i in range(2000)]
        deadline = anyio.current_time() + seconds
        async with anyio.create_task_group() as tg:
            if reload_every is not None:

                async def reload() -> None:
                    k = 0
                    while anyio.current_time() < deadline:
                        await anyio.sleep(reload_every)
                        k += 1
                        await proxy.apply(configs[k % 2])

                tg.start_soon(reload)
            started = anyio.current_time()
            while anyio.current_time() < deadline:
                answers = await pipelined(address, SimpleLineDispatcher, requests, window=100)
                answered += len(answers)
            elapsed = anyio.current_time() - started
    return answered / elapsed


async def run(args: argparse.Namespace) -> list[str]:
    from sota_simple_line import SimpleLineDispatcher  # the plugin's local service: echoes the query

    rows_apply: list[str] = []
    rows_traffic: list[str] = []
    async with serving(SimpleLineDispatcher) as backend:
        assert backend.address is not None
        for size in args.clusters:
            times = await apply_times(size, args.repeats, backend.address)
            rows_apply.append(f"| {size} | " + " | ".join(f"{t:.2f}" for t in times.values()) + " |")
        plain = await throughput(backend.address, args.seconds, None)
        reloading = await throughput(backend.address, args.seconds, 0.05)
        rows_traffic.append(f"| none | {plain:,.0f} | 1.00 |")
        rows_traffic.append(f"| every 50 ms (cluster replaced) | {reloading:,.0f} | {reloading / plain:.2f} |")
    return [*rows_apply, "", "TRAFFIC", *rows_traffic]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one backend")
    parser.add_argument("--output", default=str(Path(__file__).with_name("RELOAD_RESULTS.md")))
    args = parser.parse_args()
    started = time.monotonic()
    args.clusters = [10, 100] if args.quick else [10, 100, 1000]
    args.repeats = 3 if args.quick else 11
    args.seconds = 0.5 if args.quick else 3.0
    backends = ["asyncio"] if args.quick else list(BACKENDS)
    lines = report_head("Live reload: apply time and traffic", "bench/reload_bench.py", "python bench/reload_bench.py")
    lines += machine_lines(f"anyio {version('anyio')}, uvloop {version('uvloop')}, trio {version('trio')}")
    lines += [source_line(["sota_dispatch", "protocols/simple_line"]), ""]
    for name in backends:
        backend, options = BACKENDS[name]
        rows = anyio.run(run, args, backend=backend, backend_options=options)
        split = rows.index("TRAFFIC")
        lines += [
            f"## {name}",
            "",
            "`Proxy.apply()`, median ms (N clusters of two endpoints, one listener with N routes):",
            "",
            "| clusters | same config | one cluster's endpoints | one route | every cluster replaced |",
            "|---:|---:|---:|---:|---:|",
            *rows[:split],
            "",
            "simple_line through the proxy, one client, 100 in flight:",
            "",
            "| reloads | answers/s | ratio |",
            "|---|---:|---:|",
            *rows[split + 1 :],
            "",
        ]
    publish("\n".join(lines), "-" if args.quick else args.output, started)


if __name__ == "__main__":
    main()
