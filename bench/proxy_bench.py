"""Proxy hop cost: the same client against a backend directly and through the proxy.

For each protocol (simple_line, bolt, dubbo, zmtp) one backend process runs
the protocol's local echo service (``python -m sota_dispatch.serve
--protocol P``) and one proxy process forwards to it (``--upstream``). The
client, in this process, speaks the protocol through the protocol's own
class (its client-role codec), so it is the same code both ways:

* throughput: requests pipelined over one connection, ``--windows`` in
  flight (100 and 1,000 by default: a small window measures round trips
  as much as work, a large one the CPU cost), for a fixed count;
  requests/s direct and through the proxy, and their ratio (goal for
  simple_line: at least 0.5);
* latency: one request in flight at a time; p50 and p99 direct and through
  the proxy, and the difference (the hop's added latency; goal: p50 under
  60 µs);
* the proxy process's CPU time per request in the throughput run;
* the same through ``relay.py``, a hop that does no work (the event loop
  copies bytes between the two sockets): what one more process in the path
  costs on this machine before the proxy does anything, the baseline the
  proxy's ratio is read against.

Direct and proxied runs alternate, ``--rounds`` times, and medians are
reported, so machine noise spreads over both. Every process is on 127.0.0.1
and is stopped at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteStream
from plots import Bar, Panel, figure_lines
from relay import loop_name, relay_process

from harness import machine_lines, positive_int, proc_cpu, publish, report_head, source_line, version
from sota_dispatch import FrameSemantics, encoded_bytes, get_protocol
from sota_dispatch.testing import ServeProcess, serve_process

PROTOCOLS = ("simple_line", "bolt", "dubbo", "zmtp")
#: The library code this benchmark measures, for the report's source line.
SOURCE = ("sota_dispatch", "protocols")
TITLE = "Proxy hop cost: direct to the backend against through the proxy"
#: The goals: simple_line through the proxy at least half as fast as direct,
#: and the hop adding under 60 µs at the median with one request in flight.
GOAL_RATIO = 0.5
GOAL_ADDED_P50_US = 60.0


def sample_request(protocol: str, body: int = 64) -> Any:
    """A small, typical request frame of ``protocol`` (its class encodes it);
    ``body``: the bytes of bolt's content, dubbo's string argument and the
    ZMTP message (simple_line's line stays as it is)."""
    if protocol == "simple_line":
        return b"service=orders&user=u1&op=get\r\n"
    if protocol == "zmtp":
        return [b"x" * body]
    from sota_xprotocol import bolt, dubbo, hessian2

    if protocol == "bolt":
        # Two header entries, as SOFA-RPC sends at least.
        header = bolt.encode_header_map({"service": "com.example.EchoService:1.0", "sofa_head_method_name": "echo"})
        return bolt.BoltFrame(
            bolt.FrameType.REQUEST,
            bolt.CmdCode.RPC_REQUEST,
            1,
            codec=11,
            timeout=5000,
            class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header_bytes=header,
            content=b"x" * body,
        )
    values = ("2.7.0", "com.example.EchoService", "1.0.0", "echo", "Ljava/lang/String;", "x" * body, {"group": "g"})
    frame = dubbo.DubboFrame(
        dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, 1, b"".join(hessian2.encode(v) for v in values)
    )
    frame.encode()
    return frame


class Client:
    """One connection speaking ``protocol`` with its class's client codec."""

    def __init__(
        self,
        stream: ByteStream,
        protocol: type[FrameSemantics],
        request: bytes,
        options: dict[str, str] | None = None,
    ) -> None:
        self.stream = stream
        self.codec = protocol.client_codec(protocol.option_values(options or {}, "cluster"), 1 << 24)
        self.request = request
        self.answers = 0
        #: Makes ``n`` requests' bytes (each one sealed anew on an encrypted connection).
        self.requests: Callable[[int], bytes] = self.request.__mul__

    @classmethod
    async def connect(
        cls,
        address: str,
        protocol: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        options: dict[str, str] | None = None,
        body: int = 64,
    ) -> Client:
        """A connection to ``address``; over TLS when ``ssl_context`` is
        given; ``options``: the protocol's client options (ZMTP CURVE keys);
        ``body``: see :func:`sample_request`."""
        semantics = get_protocol(protocol).protocol_class
        assert semantics is not None
        host, _, port = address.rpartition(":")
        stream: ByteStream
        if ssl_context is None:
            stream = await anyio.connect_tcp(host, int(port))
        else:
            stream = await anyio.connect_tcp(
                host, int(port), tls=True, ssl_context=ssl_context, tls_standard_compatible=False
            )
        request = sample_request(protocol, body)
        client = cls(stream, semantics, encoded_bytes(semantics.encode_request(request, 1)), options)
        await stream.send(client.codec.data_to_send())
        with anyio.fail_after(10):
            while not client.codec.ready:
                client.codec.feed(await stream.receive())
                out = client.codec.data_to_send()
                if out:
                    await stream.send(out)
        seal = getattr(client.codec, "output_sealing", None)
        sealing = seal() if seal is not None else None
        if sealing is not None:  # CURVE: every request needs its own nonce
            client.requests = lambda n: sealing(client.request * n)
        return client

    async def _receive(self) -> None:
        self.answers += len(self.codec.feed(await self.stream.receive(1 << 16)))

    async def pipelined(self, count: int, window: int) -> float:
        """Seconds for ``count`` requests, ``window`` in flight at most."""
        self.answers = 0
        sent = 0
        start = time.perf_counter()
        with anyio.fail_after(120):
            while self.answers < count:
                batch = min(window - (sent - self.answers), count - sent)
                if batch > 0:
                    await self.stream.send(self.requests(batch))
                    sent += batch
                await self._receive()
        return time.perf_counter() - start

    async def one_at_a_time(self, count: int) -> list[float]:
        """Round-trip seconds of ``count`` sequential requests."""
        times = []
        with anyio.fail_after(120):
            for _ in range(count):
                self.answers = 0
                start = time.perf_counter()
                await self.stream.send(self.request)
                while not self.answers:
                    await self._receive()
                times.append(time.perf_counter() - start)
        return times


@contextmanager
def processes(protocol: str, backend: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """The backend (the protocol's local echo service) and a proxy to it."""
    common = ["--protocol", protocol, "--listen", "127.0.0.1:0", "--backend", backend]
    with (
        serve_process(common) as upstream,
        serve_process([*common, "--upstream", upstream.address]) as proxy,
    ):
        yield upstream, proxy


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(protocol: str, args: argparse.Namespace) -> dict[str, float]:
    with processes(protocol, args.backend) as (upstream, proxy), relay_process(upstream.address) as relay:
        direct = await Client.connect(upstream.address, protocol, body=args.body)
        relayed = await Client.connect(relay, protocol, body=args.body)
        through = await Client.connect(proxy.address, protocol, body=args.body)
        paths = (("direct", direct), ("relay", relayed), ("proxy", through))
        for _, client in paths:  # warm up every path (and the proxy's upstream connection)
            await client.pipelined(min(args.count, 2000), max(args.windows))
            await client.one_at_a_time(50)
        rates: dict[tuple[str, int], list[float]] = {}
        cpu: dict[int, list[float]] = {}
        #: Each process's CPU per request, by (path, window, process): where
        #: the time goes when the ratio is short of the goal.
        split: dict[tuple[str, int, str], list[float]] = {}
        latencies: dict[str, list[float]] = {path: [] for path, _ in paths}
        for _ in range(args.rounds):
            for window in args.windows:
                for path, client in paths:
                    before = cpu_now(upstream, proxy)
                    rates.setdefault((path, window), []).append(args.count / await client.pipelined(args.count, window))
                    used = [
                        (after - then) / args.count
                        for after, then in zip(cpu_now(upstream, proxy), before, strict=True)
                    ]
                    for process, seconds in zip(("client", "backend", "proxy"), used, strict=True):
                        split.setdefault((path, window, process), []).append(seconds)
                    if path == "proxy":
                        cpu.setdefault(window, []).append(used[2])
            for path, client in paths:
                latencies[path] += await client.one_at_a_time(args.latency_count)
        for _, client in paths:
            await client.stream.aclose()
    result: dict[str, float] = {
        "d50": percentile(latencies["direct"], 0.5) * 1e6,
        "r50": percentile(latencies["relay"], 0.5) * 1e6,
        "p50": percentile(latencies["proxy"], 0.5) * 1e6,
        "d99": percentile(latencies["direct"], 0.99) * 1e6,
        "p99": percentile(latencies["proxy"], 0.99) * 1e6,
    }
    for window in args.windows:
        direct_rate = statistics.median(rates["direct", window])
        proxy_rate = statistics.median(rates["proxy", window])
        relay_rate = statistics.median(rates["relay", window])
        result[f"direct_rate/{window}"] = direct_rate
        result[f"relay_rate/{window}"] = relay_rate
        result[f"proxy_rate/{window}"] = proxy_rate
        result[f"relay_ratio/{window}"] = relay_rate / direct_rate
        result[f"ratio/{window}"] = proxy_rate / direct_rate
        result[f"proxy_cpu_us/{window}"] = statistics.median(cpu[window]) * 1e6
        for path in ("direct", "proxy"):
            for process in ("client", "backend", "proxy"):
                result[f"{process}_us/{path}/{window}"] = statistics.median(split[path, window, process]) * 1e6
    return result


def cpu_now(upstream: ServeProcess, proxy: ServeProcess) -> tuple[float, float, float]:
    """CPU seconds so far of this process (the client), the backend and the proxy."""
    own = os.times()
    return own.user + own.system, sum(proc_cpu(upstream.process.pid)), sum(proc_cpu(proxy.process.pid))


def loop_in_use(backend: str) -> str:
    """The event loop ``python -m sota_dispatch.serve --backend backend`` runs
    on: asyncio runs on uvloop whenever uvloop is installed."""
    if backend != "asyncio":
        return backend
    if importlib.util.find_spec("uvloop") is not None:
        return "asyncio on uvloop (the serve command's default when uvloop is installed)"
    return "asyncio's own loop (uvloop is not installed)"


def panels(results: dict[str, dict[str, float]], windows: list[int]) -> list[Panel]:
    """The figure: throughput direct and via the proxy per protocol and
    window, latency at one in flight, and the proxy's CPU per request."""
    rates: list[Bar] = []
    latency: list[Bar] = []
    cpu: list[Bar] = []
    for name, r in results.items():
        for window in windows:
            group = f"{name}\n{window} in flight"
            rates.append(Bar(group, "direct", r[f"direct_rate/{window}"]))
            rates.append(Bar(group, "via relay", r[f"relay_rate/{window}"], label=f"{r[f'relay_ratio/{window}']:.2f}x"))
            rates.append(Bar(group, "via proxy", r[f"proxy_rate/{window}"], label=f"{r[f'ratio/{window}']:.2f}x"))
            cpu.append(
                Bar(
                    name, f"{window} in flight", r[f"proxy_cpu_us/{window}"], label=f"{r[f'proxy_cpu_us/{window}']:.1f}"
                )
            )
        latency += [
            Bar(name, "direct p50", r["d50"]),
            Bar(name, "via relay p50", r["r50"], label=f"+{r['r50'] - r['d50']:.0f}"),
            Bar(name, "via proxy p50", r["p50"], label=f"+{r['p50'] - r['d50']:.0f}"),
            Bar(name, "direct p99", r["d99"]),
            Bar(name, "via proxy p99", r["p99"], label=f"+{r['p99'] - r['d99']:.0f}"),
        ]
    return [
        Panel(
            "Throughput, one connection pipelined, median (higher is better; label: via relay or proxy / direct)",
            "requests/s",
            rates,
        ),
        Panel("Latency, one request in flight (lower is better; label: µs the proxy adds)", "µs", latency),
        Panel("Proxy process CPU per request, median (lower is better)", "µs/request", cpu),
    ]


def _cores_sentence() -> str:
    """How to read the cores-busy columns, for the cores this run could use
    (``taskset -c 0`` gives one: then every process takes turns on it)."""
    usable = len(os.sched_getaffinity(0))
    if usable == 1:
        return (
            "all three processes ran on one CPU (this run's affinity), so the CPU they used together "
            "bounds throughput: a ratio is then about the processes' CPU per request direct over through the proxy."
        )
    return (
        f"with {usable} cores for three processes, throughput is short of direct by more than the proxy's CPU "
        f"when the three together stay under {usable} cores (waits on one another, not work)."
    )


def report(
    results: dict[str, dict[str, float]], args: argparse.Namespace, command: str, figure: list[str] | None = None
) -> str:
    lines = report_head("Proxy hop cost", "bench/proxy_bench.py", command)
    versions = f"anyio {version('anyio')}, uvloop {version('uvloop')}, backend {args.backend}"
    lines += machine_lines(versions)
    lines += [
        source_line(SOURCE),
        f"- event loop of the backend and the proxy: {loop_in_use(args.backend)}; of the relay: {loop_name()}",
        "",
    ]
    lines += figure or []
    lines += [
        "## Throughput (one connection, pipelined)",
        "",
        f"{args.count} requests per round, median of {args.rounds} rounds; "
        "proxy CPU is the proxy process's CPU time per request (from /proc). "
        f"Request bodies: {args.body} bytes (bolt content with two header entries, "
        "dubbo string argument, ZMTP message). The relay (`bench/relay.py`) is a hop that does no work: "
        "its ratio is what one more process in the path costs on this machine before any proxying; "
        "the proxy's ratio over the relay's is the share of the rest that the proxy's work leaves.",
        "",
        "| protocol | in flight | direct req/s | via relay req/s | via proxy req/s | relay ratio | ratio "
        "| proxy / relay | proxy CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        for window in args.windows:
            lines.append(
                f"| {name} | {window} | {r[f'direct_rate/{window}']:,.0f} | {r[f'relay_rate/{window}']:,.0f} "
                f"| {r[f'proxy_rate/{window}']:,.0f} | {r[f'relay_ratio/{window}']:.2f}x | {r[f'ratio/{window}']:.2f}x "
                f"| {r[f'proxy_rate/{window}'] / r[f'relay_rate/{window}']:.2f}x | {r[f'proxy_cpu_us/{window}']:.1f} |"
            )
    lines += [
        "",
        "## Where the CPU goes",
        "",
        "Each process's CPU time per request in the same rounds (median), direct and through the proxy: "
        + _cores_sentence(),
        "",
        "| protocol | in flight | direct: client + backend µs | via proxy: client + backend + proxy µs "
        "| cores busy direct | cores busy via proxy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        for window in args.windows:
            direct_us = r[f"client_us/direct/{window}"] + r[f"backend_us/direct/{window}"]
            proxied = [r[f"{process}_us/proxy/{window}"] for process in ("client", "backend", "proxy")]
            lines.append(
                f"| {name} | {window} | {r[f'client_us/direct/{window}']:.1f} + {r[f'backend_us/direct/{window}']:.1f} "
                f"| {' + '.join(f'{us:.1f}' for us in proxied)} "
                f"| {direct_us * r[f'direct_rate/{window}'] / 1e6:.2f} "
                f"| {sum(proxied) * r[f'proxy_rate/{window}'] / 1e6:.2f} |"
            )
    lines += [
        "",
        "## Latency (one request in flight)",
        "",
        f"{args.latency_count} sequential requests per round, {args.rounds} rounds, µs.",
        "",
        "| protocol | direct p50 | via relay p50 | added by the relay p50 | via proxy p50 | added p50 "
        "| direct p99 | via proxy p99 | added p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['d50']:.0f} | {r['r50']:.0f} | {r['r50'] - r['d50']:.0f} "
            f"| {r['p50']:.0f} | {r['p50'] - r['d50']:.0f} "
            f"| {r['d99']:.0f} | {r['p99']:.0f} | {r['p99'] - r['d99']:.0f} |"
        )
    lines += ["", "## Goals", ""]
    lines.append(
        f"The goals: simple_line through the proxy at least {GOAL_RATIO:g}x as many requests per second as "
        f"direct, and the hop adding under {GOAL_ADDED_P50_US:g} µs at the median with one request in flight."
    )
    lines.append("")
    if "simple_line" in results:
        r = results["simple_line"]
        for window in args.windows:
            ratio = r[f"ratio/{window}"]
            met = "met" if ratio >= GOAL_RATIO else "NOT met"
            relay = r[f"relay_ratio/{window}"]
            lines.append(f"- simple_line, {window} in flight: {ratio:.2f}x direct -> {met} (the relay: {relay:.2f}x)")
    for name, r in results.items():
        added = r["p50"] - r["d50"]
        met = "met" if added < GOAL_ADDED_P50_US else "NOT met"
        floor = r["r50"] - r["d50"]
        lines.append(f"- {name}: added p50 {added:.0f} µs -> {met} (the relay, doing no work, adds {floor:.0f} µs)")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated (default: all)")
    parser.add_argument("--count", type=positive_int, default=50_000, help="requests per throughput round")
    parser.add_argument(
        "--windows", default="100,1000", help="comma-separated requests in flight for throughput (default 100,1000)"
    )
    parser.add_argument("--latency-count", type=positive_int, default=2_000, help="sequential requests per round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument(
        "--body", type=positive_int, default=64, help="bytes of bolt content, dubbo argument, ZMTP message (default 64)"
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="the servers' backend")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, one round")
    parser.add_argument(
        "--output", help="report file ('-': print only; default bench/PROXY_RESULTS.md, or '-' with --quick)"
    )
    args = parser.parse_args()
    if args.output is None:
        args.output = "-" if args.quick else str(Path(__file__).with_name("PROXY_RESULTS.md"))
    if args.quick:
        args.count, args.latency_count, args.rounds = 500, 50, 1
    try:
        args.windows = [positive_int(w) for w in args.windows.split(",") if w.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--windows: {exc}")
    if not args.windows:
        parser.error("--windows: expected at least one number")
    chosen = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocol {unknown[0]!r} (choose from {', '.join(PROTOCOLS)})")
    started = time.monotonic()
    command = "python bench/proxy_bench.py " + " ".join(sys.argv[1:])

    async def run() -> dict[str, dict[str, float]]:
        return {name: await measure(name, args) for name in chosen}

    results = anyio.run(run)
    figure = figure_lines(args.output, TITLE, panels(results, args.windows), SOURCE)
    publish(report(results, args, command.strip(), figure), args.output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
