"""simple_line echo benchmark: sota_dispatch against a raw asyncio Protocol.

The question it answers: what does the dispatcher SDK cost per message over
the leanest server one could write by hand, with the protocol work held
equal? The goal is at most 2x the raw asyncio Protocol's server CPU per
message. Both kinds of server call the same
``sota_simple_line.query`` functions, so the difference is the SDK's reader,
writer, dispatcher and anyio stream layer.

One run measures every variant several times, interleaved round-robin so
that machine noise (other tenants, frequency changes) spreads over all
variants instead of landing on one, and reports medians and the ratio of
each sota variant to the raw baseline on the same event loop. Ratios from
one run are the result; absolute numbers move between machines and runs.

Processes, so that neither side's CPU time pollutes the other's:

* the parent (this script without ``--serve``/``--client``) orchestrates and
  writes the report;
* a server child per measurement (``--serve VARIANT --port 0``), which
  prints ``PORT <n>`` once it listens: the parent waits for that line, never
  sleeps;
* a client child per measurement (``--client``), plain asyncio sockets,
  which connects, warms up, prints ``READY``, waits for ``GO`` on stdin, runs
  the timed pipelined exchange and prints one JSON line.

Server CPU is the child's utime+stime from ``/proc/<pid>/stat``, read right
before ``GO`` and right after the result line, so start-up, imports,
connection set-up and warm-up are excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import attrs
from plots import Bar, Panel, figure_lines

from harness import (
    HOST,
    START_TIMEOUT,
    ServerCpu,
    announce,
    exit_when_parent_goes,
    format_range,
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
    stop,
    version,
)
from sota_simple_line.query import QueryError, parse_query, render_error, render_reply

__all__ = ["main"]

T = TypeVar("T")

#: Same limit as ``sota_simple_line.DEFAULT_MAX_LINE`` (the sota server's default).
MAX_LINE = 65536
SCRIPT = Path(__file__).resolve()
DEFAULT_OUTPUT = SCRIPT.parent / "RESULTS.md"

#: The request mix, cycled per connection. Short and long lines, ``+`` and
#: ``%XX`` decoding and a repeated key, so the parse path is not trivial.
REQUESTS: tuple[bytes, ...] = (
    b"a=1&b=2&a=3\r\n",
    b"name=sota+dispatch&x=%41\r\n",
    b"key=value&k2=v2\r\n",
    b"id=12345&op=get&path=%2Fusers%2F42&trace=abc-def\r\n",
)
#: Written out by hand (it is the README's example), so the client's check
#: does not only compare the library with itself.
FIRST_REPLY = b'receive:{"a":["1","3"],"b":["2"]}\r\n'

#: Variant name -> (event loop, kind). Raw baselines first: their medians are
#: the denominators of the ratios.
VARIANTS: dict[str, tuple[str, str]] = {
    "raw-asyncio": ("asyncio", "raw"),
    "sota-asyncio": ("asyncio", "sota"),
    "sota-trio": ("trio", "sota"),
    "raw-uvloop": ("uvloop", "raw"),
    "sota-uvloop": ("uvloop", "sota"),
}
#: Each sota variant is compared with the raw Protocol on the same loop
#: (trio has no Protocol API, so its baseline is plain asyncio's).
BASELINE: dict[str, str] = {
    "sota-asyncio": "raw-asyncio",
    "sota-trio": "raw-asyncio",
    "sota-uvloop": "raw-uvloop",
}
TARGET_RATIO = 2.0

RECV_SIZE = 256 * 1024


def _uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _new_loop(loop_name: str) -> asyncio.AbstractEventLoop:
    """A fresh loop of the requested kind (no policy games, works on 3.10+)."""
    if loop_name == "uvloop":
        import uvloop

        new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return new_loop()
    return asyncio.new_event_loop()


def _run_on(loop_name: str, coro: Awaitable[T]) -> T:
    loop = _new_loop(loop_name)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# -- servers -------------------------------------------------------------------


class RawLineProtocol(asyncio.Protocol):
    """The hand-written baseline: what a careful asyncio programmer would write.

    Same framing and limits as ``SimpleLineDispatcher`` (split on ``\\n``,
    strip one ``\\r``, 65536-byte lines, ``error:`` reply and close on an
    over-long line) and the same parse/render functions, so only the I/O
    layer differs. One ``transport.write`` per ``data_received``: the same
    batching the SDK's writer does, so the comparison is batch against batch.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        tail = lines.pop()
        replies: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE:
                self._fail(replies)
                return
            try:
                replies.append(render_reply(parse_query(line)))
            except QueryError as exc:
                replies.append(render_error(str(exc)))
        if len(tail) > MAX_LINE + 1:  # +1: room for the '\r' of a '\r\n'
            self._fail(replies)
            return
        self._tail = tail
        if replies:
            transport.write(replies[0] if len(replies) == 1 else b"".join(replies))

    def _fail(self, replies: list[bytes]) -> None:
        assert self._transport is not None
        replies.append(render_error(f"line too long (limit {MAX_LINE} bytes)"))
        self._transport.write(b"".join(replies))
        self._transport.close()

    def eof_received(self) -> bool:
        return False  # close once the replies are written

    def pause_writing(self) -> None:
        # Backpressure, as the SDK has: stop reading while the peer lags.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()


async def _serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawLineProtocol, HOST, port, backlog=128)
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()


async def _serve_sota(port: int) -> None:
    import anyio

    from sota_dispatch import Server, parse_address
    from sota_simple_line import SimpleLineDispatcher

    server = Server(SimpleLineDispatcher, (HOST, port), protocol="simple_line")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        announce(parse_address(address)[1])


def run_server(variant: str, port: int) -> None:
    """Child entry point for ``--serve``: serve until killed or stdin closes."""
    loop_name, kind = VARIANTS[variant]
    exit_when_parent_goes()
    if kind == "raw":
        _run_on(loop_name, _serve_raw(port))
        return
    import anyio

    if loop_name == "trio":
        anyio.run(_serve_sota, port, backend="trio")
    else:
        anyio.run(_serve_sota, port, backend="asyncio", backend_options={"use_uvloop": loop_name == "uvloop"})


# -- client --------------------------------------------------------------------


@attrs.frozen
class Workload:
    """How the client talks: the same for every variant of a run."""

    messages: int
    connections: int
    batch: int
    outstanding: int
    warmup: int


class _Expected:
    """The reply stream a correct server sends for ``n`` requests.

    Checked by total length, newline count and the exact first and last
    replies: cheap enough not to slow the client, strict enough to catch a
    lost, duplicated or corrupted reply.
    """

    def __init__(self, n: int) -> None:
        if n <= 0:
            raise ValueError("a connection needs at least one request")
        replies = [render_reply(parse_query(r.removesuffix(b"\r\n"))) for r in REQUESTS]
        if replies[0] != FIRST_REPLY:
            raise AssertionError(f"reply to {REQUESTS[0]!r} is {replies[0]!r}, expected {FIRST_REPLY!r}")
        k = len(REQUESTS)
        per_cycle = sum(len(r) for r in replies)
        self.total_bytes = (n // k) * per_cycle + sum(len(r) for r in replies[: n % k])
        edge = min(n, 8)
        self.head = b"".join(replies[i % k] for i in range(edge))
        self.tail = b"".join(replies[i % k] for i in range(n - edge, n))


def _block(start: int, count: int, cache: dict[tuple[int, int], bytes]) -> bytes:
    """``count`` requests starting at message ``start`` of the cycle, joined (cached)."""
    key = (start % len(REQUESTS), count)
    data = cache.get(key)
    if data is None:
        data = b"".join(REQUESTS[(start + i) % len(REQUESTS)] for i in range(count))
        cache[key] = data
    return data


async def _exchange(sock: socket.socket, n: int, work: Workload, cache: dict[tuple[int, int], bytes]) -> None:
    """Pipeline ``n`` requests on one connection and verify the replies.

    Writes ``batch`` requests at a time while at most ``outstanding`` are
    unanswered, so the server sees realistic multi-request reads but the
    socket buffers (and the server's write queue) stay bounded. Every
    iteration sends a batch (at most n/batch times) or receives bytes
    (progress, or EOF which raises), so the loop ends; the caller bounds it
    in time.
    """
    loop = asyncio.get_running_loop()
    expected = _Expected(n)
    sent = replies = received = 0
    head = bytearray()
    tail = b""
    while replies < n:
        if sent < n and sent - replies + work.batch <= work.outstanding:
            count = min(work.batch, n - sent)
            await loop.sock_sendall(sock, _block(sent, count, cache))
            sent += count
            continue
        data = await loop.sock_recv(sock, RECV_SIZE)
        if not data:
            raise ConnectionError(f"server closed after {replies} of {n} replies")
        replies += data.count(b"\n")
        received += len(data)
        if len(head) < len(expected.head):
            head += data[: len(expected.head) - len(head)]
        # Keep only the last len(expected.tail) bytes, copying little per receive.
        keep = len(expected.tail)
        tail = data[-keep:] if len(data) >= keep else (tail + data)[-keep:]
    if replies != n or received != expected.total_bytes:
        raise AssertionError(f"{replies} replies / {received} bytes, expected {n} / {expected.total_bytes}")
    if bytes(head) != expected.head or tail != expected.tail:
        raise AssertionError(f"unexpected reply content: head {bytes(head)[:80]!r}, tail {tail[-80:]!r}")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _client(port: int, work: Workload, timeout: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    cache: dict[tuple[int, int], bytes] = {}
    try:
        for _ in range(work.connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
        if work.warmup:
            # Untimed: grows the buffers and warms the code paths on both sides.
            await asyncio.wait_for(asyncio.gather(*(_exchange(s, work.warmup, work, cache) for s in socks)), timeout)
        print("READY", flush=True)
        go = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
        if go.strip() != "GO":
            raise RuntimeError(f"expected GO from the parent, got {go!r}")
        shares = _split(work.messages, work.connections)
        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(_exchange(s, n, work, cache) for s, n in zip(socks, shares, strict=True) if n)),
            timeout,
        )
        wall = time.perf_counter() - start
    finally:
        for sock in socks:
            sock.close()
    return {"wall": wall, "messages": float(work.messages)}


def run_client(port: int, work: Workload, timeout: float) -> None:
    """Child entry point for ``--client``: one timed run, one JSON line out."""
    result = _run_on("asyncio", _client(port, work, timeout))
    print(json.dumps(result), flush=True)


# -- orchestration -----------------------------------------------------------------


@attrs.frozen
class Sample(ServerCpu):
    """One measurement of one variant."""

    variant: str
    rep: int
    wall: float
    cpu_user: float
    cpu_sys: float
    messages: int


async def measure(variant: str, rep: int, work: Workload, timeout: float) -> Sample:
    """Start a server, run one client against it, return the numbers; always kill both."""
    server = await spawn(SCRIPT, ["--serve", variant, "--port", "0"])
    client: asyncio.subprocess.Process | None = None
    try:
        line = await read_line(server, START_TIMEOUT, f"server {variant}")
        word, _, port = line.partition(" ")
        if word != "PORT" or not port.isdigit():
            raise RuntimeError(f"server {variant}: unexpected first line {line!r}")
        client = await spawn(
            SCRIPT,
            [
                "--client",
                "--port",
                port,
                "--messages",
                str(work.messages),
                "--connections",
                str(work.connections),
                "--batch",
                str(work.batch),
                "--outstanding",
                str(work.outstanding),
                "--warmup",
                str(work.warmup),
                "--timeout",
                str(timeout),
            ],
        )
        result, cpu_user, cpu_sys = await run_timed(client, server.pid, timeout, f"client of {variant}")
        if server.returncode is not None:
            raise RuntimeError(f"server {variant} died during the run (code {server.returncode})")
        return Sample(variant, rep, float(result["wall"]), cpu_user, cpu_sys, work.messages)
    finally:
        if client is not None:
            await stop(client)
        await stop(server)


async def run_all(variants: Sequence[str], reps: int, work: Workload, timeout: float) -> list[Sample]:
    """Every variant ``reps`` times, round-robin, rotating the order each round
    so that no variant always runs first (or right after the same neighbour)."""
    samples: list[Sample] = []
    for rep in range(reps):
        shift = rep % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            sample = await measure(variant, rep, work, timeout)
            samples.append(sample)
            print(
                f"rep {rep + 1}/{reps} {variant:13} {sample.cpu_us_per_msg:7.2f} us/msg server CPU, "
                f"{sample.msgs_per_s:>9,.0f} msg/s, server busy {sample.busy:4.0%}",
                file=sys.stderr,
                flush=True,
            )
    return samples


# -- report --------------------------------------------------------------------------


def _ratios(samples: Sequence[Sample], variant: str, base: str) -> list[float]:
    """Per-round ratios: each sota sample against the baseline of the same round,
    which ran minutes apart at most, so their spread shows how steady the ratio is."""
    by_rep = {s.rep: s for s in samples if s.variant == base}
    return [
        s.cpu_us_per_msg / by_rep[s.rep].cpu_us_per_msg for s in samples if s.variant == variant and s.rep in by_rep
    ]


def protocol_cost_us() -> float:
    """parse_query + render_reply alone, per message, best of 5 in this process.

    The floor under every variant: what is left of the raw baseline above it
    is event-loop and socket work, and sota minus raw is the SDK's own cost.
    Shows whether a ratio is small because the SDK is cheap or because the
    protocol work dominates.
    """
    lines = [r.removesuffix(b"\r\n") for r in REQUESTS] * 2500
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for line in lines:
            render_reply(parse_query(line))
        best = min(best, time.perf_counter() - start)
    return best / len(lines) * 1e6


#: The library code this benchmark measures, for the report's source line.
SOURCE = ("sota_dispatch", "protocols/simple_line/sota_simple_line")
TITLE = "simple_line echo: sota_dispatch against a raw asyncio Protocol"


def _loop_of(variant: str) -> str:
    return VARIANTS[variant][0]


def panels(samples: Sequence[Sample], variants: Sequence[str]) -> list[Panel]:
    """The figure: server CPU per message and throughput, raw against sota on
    each event loop, each sota bar labelled with its ratio to its baseline."""
    medians = {v: statistics.median(s.cpu_us_per_msg for s in samples if s.variant == v) for v in variants}
    cpu: list[Bar] = []
    rate: list[Bar] = []
    for v in variants:
        mine = [s.cpu_us_per_msg for s in samples if s.variant == v]
        per_s = [s.msgs_per_s for s in samples if s.variant == v]
        loop, kind = VARIANTS[v]
        base = BASELINE.get(v)
        label = f"{medians[v] / medians[base]:.2f}x {base}" if base in medians else ""
        series = "raw asyncio Protocol" if kind == "raw" else "sota_dispatch"
        group = loop if base is None or _loop_of(base) == loop else f"{loop} (vs {base})"
        if base in medians and _loop_of(base) != loop:  # trio: show its baseline beside it
            base_cpu = [s.cpu_us_per_msg for s in samples if s.variant == base]
            base_rate = [s.msgs_per_s for s in samples if s.variant == base]
            raw = "raw asyncio Protocol"
            cpu.append(Bar(group, raw, medians[base], min(base_cpu), max(base_cpu)))
            rate.append(Bar(group, raw, statistics.median(base_rate), min(base_rate), max(base_rate)))
        cpu.append(Bar(group, series, medians[v], min(mine), max(mine), label))
        rate.append(Bar(group, series, statistics.median(per_s), min(per_s), max(per_s)))
    return [
        Panel("Server CPU per message, median and min-max (lower is better; label: ratio to raw)", "µs/msg", cpu),
        Panel("Throughput, median and min-max (higher is better)", "messages/s", rate),
    ]


def report(
    samples: Sequence[Sample],
    variants: Sequence[str],
    work: Workload,
    reps: int,
    command: str,
    floor_us: float,
    figure: Sequence[str] = (),
) -> str:
    """The markdown written to RESULTS.md and printed; ``figure``: the lines
    that embed its plot."""
    medians = {v: statistics.median(s.cpu_us_per_msg for s in samples if s.variant == v) for v in variants}
    out = [
        *report_head("simple_line echo benchmark", "bench/line_bench.py", command),
        *machine_lines(
            f"anyio {version('anyio')}, trio {version('trio')}, uvloop {version('uvloop')}, "
            f"sota-dispatch {version('sota-dispatch')}, sota-simple-line {version('sota-simple-line')}"
        ),
        source_line(SOURCE),
        "- event loops: each variant names its own: `asyncio` is asyncio's own loop (uvloop not used), "
        "`uvloop` is asyncio on uvloop, `trio` is anyio's trio backend",
        "",
        "## Workload",
        "",
        f"- {work.messages:,} request lines per run over {work.connections} connections, "
        f"pipelined {work.batch} per write with at most {work.outstanding} unanswered per connection; "
        f"{work.warmup:,} untimed warm-up requests per connection first",
        f"- runs per variant: {reps}, interleaved round-robin; a fresh server process per run; "
        "client in its own process (plain asyncio sockets)",
        "- server CPU = utime+stime of the server process (/proc/<pid>/stat) over the timed part only; "
        "msg/s = messages / client wall time; server busy = server CPU / client wall time (can pass 100% "
        "by a tick)",
        resolution_line(samples),
        "- ratio = median server CPU per message over the median of the raw asyncio Protocol on the same "
        "event loop (sota-trio against raw-asyncio); per-run ratios pair runs of the same round",
        f"- protocol work alone (parse_query + render_reply over the same request mix, in one process, "
        f"no I/O): {floor_us:.2f} us/msg; every variant pays this, so the ratios are diluted by it",
        "",
        "## Results",
        "",
        *figure,
        "| variant | server CPU us/msg, median | min - max | user / sys us/msg | msg/s, median | min - max "
        "| server busy | ratio to raw | per-run ratios |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts: list[str] = []
    for v in variants:
        mine = [s for s in samples if s.variant == v]
        cpu = [s.cpu_us_per_msg for s in mine]
        rate = [s.msgs_per_s for s in mine]
        user = statistics.median(s.cpu_user / s.messages * 1e6 for s in mine)
        system = statistics.median(s.cpu_sys / s.messages * 1e6 for s in mine)
        busy = statistics.median(s.busy for s in mine)
        base = BASELINE.get(v)
        ratio = per_run = "-"
        if base is not None and base in medians:
            r = medians[v] / medians[base]
            ratio = f"**{r:.2f}x** vs {base}"
            per_run = format_range(_ratios(samples, v, base), ".2f")
            met = "met" if r <= TARGET_RATIO else "NOT met"
            verdicts.append(f"- {v}: {r:.2f}x {base} -> goal {met}")
        elif base is not None:
            ratio = f"n/a ({base} not run)"
        out.append(
            f"| {v} | {statistics.median(cpu):.2f} | {format_range(cpu, '.2f')} | {user:.2f} / {system:.2f} "
            f"| {statistics.median(rate):,.0f} | {format_range(rate, ',.0f')} | {busy:.0%} | {ratio} | {per_run} |"
        )
    out += [
        "",
        f"The goal: sota_dispatch's server CPU per message at most {TARGET_RATIO:g}x the raw asyncio Protocol's "
        "on the same loop, that is, the SDK's reader, writer, dispatcher and anyio streams may at most double "
        "what the leanest hand-written server spends per message.",
        "",
        *(verdicts or ["- no sota variant ran together with its baseline"]),
        "",
        "## Every run",
        "",
        "| round | variant | server CPU us/msg | msg/s | wall s | server CPU s (user + sys) |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for s in sorted(samples, key=lambda s: (s.rep, variants.index(s.variant))):
        out.append(
            f"| {s.rep + 1} | {s.variant} | {s.cpu_us_per_msg:.2f} | {s.msgs_per_s:,.0f} | {s.wall:.3f} "
            f"| {s.cpu_user:.2f} + {s.cpu_sys:.2f} |"
        )
    return "\n".join(out) + "\n"


# -- command line ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="simple_line echo throughput and server CPU per message: sota_dispatch vs a raw asyncio "
        "Protocol (see bench/README.md).",
    )
    p.add_argument("--messages", type=positive_int, help="requests per run, over all connections (default 200000)")
    p.add_argument("--connections", type=positive_int, help="client connections (default 8)")
    p.add_argument("--reps", type=positive_int, help="runs per variant (default 5)")
    p.add_argument(
        "--variants",
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all; uvloop ones if uvloop is installed)",
    )
    p.add_argument(
        "--output",
        help="markdown report path, '-' for none (default: RESULTS.md next to this script; none with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 20000 messages, 1 run; writes no report")
    p.add_argument("--batch", type=positive_int, default=500, help="requests per client write (default 500)")
    p.add_argument("--outstanding", type=positive_int, default=2000, help="unanswered requests per connection (2000)")
    p.add_argument("--warmup", type=int, default=None, help="untimed requests per connection first (default 2000)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per client run (default scales)")
    # Child roles, used by the parent only.
    p.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parent or child, by flags; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    messages = args.messages or (20_000 if args.quick else 200_000)
    connections = args.connections or 8
    reps = args.reps or (1 if args.quick else 5)
    warmup = 2000 if args.warmup is None else args.warmup
    # Generous: a server ten times slower than expected still finishes.
    timeout = args.timeout or 60.0 + messages / 2000
    if args.outstanding < args.batch:
        parser.error("--outstanding must be at least --batch (else no batch could ever be sent)")
    if warmup < 0:
        parser.error("--warmup must not be negative")
    work = Workload(messages, connections, args.batch, args.outstanding, warmup)

    if args.serve:
        run_server(args.serve, args.port)
        return 0
    if args.client:
        run_client(args.port, work, timeout)
        return 0

    if args.variants:
        variants = parse_variants(parser, args.variants, VARIANTS)
    else:
        variants = [v for v, (loop, _) in VARIANTS.items() if loop != "uvloop" or _uvloop_available()]
    if any(VARIANTS[v][0] == "uvloop" for v in variants) and not _uvloop_available():
        parser.error("uvloop variants requested but uvloop is not installed")

    output = args.output if args.output is not None else ("-" if args.quick else str(DEFAULT_OUTPUT))
    command = "python " + shlex.join(sys.argv if argv is None else ["bench/line_bench.py", *argv])
    started = time.monotonic()
    try:
        samples = asyncio.run(run_all(variants, reps, work, timeout))
    except (RuntimeError, OSError, ValueError) as exc:
        # A child failed, timed out or answered wrongly; its stderr is above.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figure = figure_lines(output, TITLE, panels(samples, variants), SOURCE)
    publish(report(samples, variants, work, reps, command, protocol_cost_us(), figure), output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
