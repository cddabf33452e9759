"""ZMTP ROUTER echo benchmark: sota_zmtp's EchoRouter against a pyzmq ROUTER.

The question it answers (the goal it checks): does our pure-Python ROUTER
echo, served by ``sota_dispatch.Server``, use no more server CPU per message
than libzmq driven from Python by a frame-level ``recv``/``send`` loop, and
does it move at least as many messages per second? Every server is driven by
the same client, a pyzmq (libzmq) DEALER keeping a window of messages in
flight, so the only thing that changes between variants is the server.

One run measures every variant at every payload size several times,
interleaved round-robin so that machine noise (other tenants, frequency
changes) spreads over all variants instead of landing on one, and reports
medians and each sota variant's ratio to the pyzmq frame-level loop at the
same size. Ratios from one run are the result; absolute numbers move between
machines and runs.

Processes, so that neither side's CPU time pollutes the other's:

* the parent (this script without ``--serve``/``--client``) orchestrates and
  writes the report;
* a server child per measurement (``--serve VARIANT``), which prints
  ``PORT <n>`` once it listens: the parent waits for that line, never sleeps;
* a client child per measurement (``--client``), a pyzmq DEALER, which
  connects, warms up, prints ``READY``, waits for ``GO`` on stdin, runs the
  timed exchange and prints one JSON line.

Server CPU is the child's utime+stime from ``/proc/<pid>/stat`` (every
thread, so a pyzmq server's libzmq I/O thread counts too), read right before
``GO`` and right after the result line, so start-up, imports, the handshake
and the warm-up are excluded.

``--profile VARIANT`` runs a sota server under a profiler instead (py-spy
if it is installed, else cProfile) and prints where its time goes; it writes
no report.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import importlib.util
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
    wait_exit,
)

if TYPE_CHECKING:
    import zmq

__all__ = ["main"]

SCRIPT = Path(__file__).resolve()
DEFAULT_OUTPUT = SCRIPT.parent / "ZMTP_RESULTS.md"
#: The client's routing id (a DEALER that names itself, as services usually do).
ROUTING_ID = b"zmtp-bench"

#: Variant name -> (kind, flavour). For pyzmq servers the flavour is the echo
#: loop, for sota servers the event loop. The baseline comes first: its
#: medians are the denominators of every ratio.
VARIANTS: dict[str, tuple[str, str]] = {
    "pyzmq-frames": ("pyzmq", "frames"),
    "sota-asyncio": ("sota", "asyncio"),
    "sota-uvloop": ("sota", "uvloop"),
    "sota-trio": ("sota", "trio"),
    "pyzmq-multipart": ("pyzmq", "multipart"),
    "pyzmq-2part": ("pyzmq", "2part"),
}
BASELINE = "pyzmq-frames"
#: The goal: CPU per message at most the baseline's, throughput at least equal.
TARGET_CPU_RATIO = 1.0
TARGET_RATE_RATIO = 1.0

#: Distinct payloads per size, cycled, so a reordered or misrouted reply shows.
PAYLOAD_KINDS = 16
#: Every this-many-th reply is compared with what was sent (a prime, so the
#: checked replies cycle through all payload kinds).
SPOT_CHECK_EVERY = 97


def _available(variant: str) -> bool:
    """uvloop and trio are optional extras; their variants need them installed."""
    kind, flavour = VARIANTS[variant]
    if kind == "sota" and flavour in ("uvloop", "trio"):
        return importlib.util.find_spec(flavour) is not None
    return True


def payloads(size: int) -> list[bytes]:
    """The payloads of one size: distinct from their first byte on, so even
    1-byte messages can be told apart."""
    return [bytes((kind * 7 + j) % 251 for j in range(size)) for kind in range(PAYLOAD_KINDS)]


# -- servers -------------------------------------------------------------------


def serve_pyzmq(flavour: str) -> None:
    """A libzmq ROUTER echoing every message to its sender, until killed.

    ``frames`` is the fastest general echo loop found with pyzmq 27: the
    identity as bytes (a ROUTER's first frame always has MORE), then each body
    frame as a ``zmq.Frame`` (``copy=False``), whose ``more`` attribute is far
    cheaper than ``getsockopt(RCVMORE)`` (about 0.05 against 0.7 us here), sent
    on unchanged. ``multipart`` is the everyday ``recv_multipart`` /
    ``send_multipart``. ``2part`` assumes every message has exactly one body
    frame, which a real echo server cannot (a multipart message would be
    split into several replies): a lower bound for pyzmq, not a fair rival.
    """
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # Room for a whole window in every queue, so nothing is ever dropped at
    # the high-water mark (the client would count the loss and fail).
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(f"tcp://{HOST}:0")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    announce(int(endpoint.rpartition(b":")[2]), pid=True)
    recv, send = sock.recv, sock.send
    more = zmq.SNDMORE
    if flavour == "frames":
        while True:  # until killed (or stdin closes, see exit_when_parent_goes)
            send(recv(), more)
            while True:  # the body frames of one message: ends at the frame without MORE
                frame = recv(copy=False)
                if frame.more:
                    send(frame, more, copy=False)
                else:
                    send(frame, copy=False)
                    break
    elif flavour == "multipart":
        recv_multipart, send_multipart = sock.recv_multipart, sock.send_multipart
        while True:
            send_multipart(recv_multipart(copy=False), copy=False)
    else:
        while True:
            identity = recv()
            body = recv()
            send(identity, more)
            send(body)


async def _serve_sota() -> None:
    import anyio

    from sota_dispatch import Server, parse_address
    from sota_zmtp import EchoRouter

    server = Server(EchoRouter().factory, (HOST, 0))
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        announce(parse_address(address)[1], pid=True)


async def _serve_sota_until_stdin() -> None:
    """For profiling: serve until the parent writes a line (or closes stdin),
    then return normally so the profile can be saved."""
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve_sota)
        await anyio.to_thread.run_sync(sys.stdin.buffer.readline, abandon_on_cancel=True)
        tg.cancel_scope.cancel()


def serve_sota(flavour: str, profile_out: str | None) -> None:
    """``sota_dispatch.Server(EchoRouter().factory)`` on the given event loop.

    With ``profile_out``, under cProfile, with the imports done first so that
    they stay out of the profile.
    """
    import anyio

    main = _serve_sota if profile_out is None else _serve_sota_until_stdin
    backend = "trio" if flavour == "trio" else "asyncio"
    options = {} if backend == "trio" else {"use_uvloop": flavour == "uvloop"}
    if profile_out is None:
        anyio.run(main, backend=backend, backend_options=options)
        return
    for module in ("sota_dispatch", "sota_zmtp", f"anyio._backends._{backend}"):
        importlib.import_module(module)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        anyio.run(main, backend=backend, backend_options=options)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_out)


def run_server(variant: str, profile_out: str | None) -> None:
    """Child entry point for ``--serve``: serve until killed or stdin closes."""
    kind, flavour = VARIANTS[variant]
    if profile_out is None:
        exit_when_parent_goes()
    if kind == "pyzmq":
        serve_pyzmq(flavour)
    else:
        serve_sota(flavour, profile_out)


# -- client --------------------------------------------------------------------


@attrs.frozen
class Workload:
    """How the client talks: the same for every variant of a run."""

    messages: int
    window: int
    warmup: int


class ClientError(RuntimeError):
    """The server lost, corrupted or delayed a reply."""


def _exchange(sock: zmq.Socket[bytes], n: int, window: int, kinds: Sequence[bytes], deadline: float) -> None:
    """Send ``n`` messages keeping up to ``window`` in flight; check the replies.

    Sends while fewer than ``window`` are unanswered, then receives one.
    Replies come back in order on one connection, so reply ``i`` must be
    ``kinds[i % len(kinds)]``: every reply's length is counted and every
    ``SPOT_CHECK_EVERY``-th one compared in full. Each iteration receives one
    reply or raises (the socket's receive timeout), so the loop ends; the
    deadline is also checked every 4096 replies.
    """
    import zmq

    send, recv = sock.send, sock.recv
    count = len(kinds)
    size = len(kinds[0])
    sent = received = received_bytes = 0
    reply = b""
    try:
        while received < n:
            while sent < n and sent - received < window:
                send(kinds[sent % count])
                sent += 1
            reply = recv()  # bytes: cheaper than a zmq.Frame at these sizes
            received_bytes += len(reply)
            if received % SPOT_CHECK_EVERY == 0 and reply != kinds[received % count]:
                raise ClientError(f"reply {received} is {reply[:32]!r}, expected {kinds[received % count][:32]!r}")
            received += 1
            if received & 4095 == 0 and time.monotonic() > deadline:
                raise ClientError(f"{received} of {n} replies before the deadline")
    except zmq.Again:
        raise ClientError(
            f"stuck: no reply (or no room to send) within the socket timeout after {received} of {n}"
        ) from None
    if reply != kinds[(n - 1) % count] or received_bytes != n * size:
        raise ClientError(f"{received_bytes} reply bytes, expected {n * size}, or a wrong last reply")


def run_client(port: int, size: int, work: Workload, timeout: float) -> None:
    """Child entry point for ``--client``: one timed run, one JSON line out."""
    import zmq

    kinds = payloads(size)
    # A client whose parent died would otherwise wait for a vanished server
    # until its socket timeout, reconnecting all the while.
    go = threading.Event()
    exit_when_parent_goes(go)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, ROUTING_ID)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        # No reply (or room to send) for this long means the server is stuck.
        stuck_ms = int(min(timeout, 30.0) * 1000)
        sock.setsockopt(zmq.RCVTIMEO, stuck_ms)
        sock.setsockopt(zmq.SNDTIMEO, stuck_ms)
        sock.connect(f"tcp://{HOST}:{port}")
        if work.warmup:
            # Untimed: the handshake, buffer growth and code paths on both sides.
            _exchange(sock, work.warmup, work.window, kinds, time.monotonic() + timeout)
        print("READY", flush=True)
        if not go.wait(timeout):
            raise ClientError(f"no GO from the parent within {timeout:.0f}s")
        cpu0 = os.times()
        start = time.perf_counter()
        _exchange(sock, work.messages, work.window, kinds, time.monotonic() + timeout)
        wall = time.perf_counter() - start
        cpu1 = os.times()
    finally:
        ctx.destroy(linger=0)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(json.dumps({"wall": wall, "client_cpu": cpu, "messages": work.messages}), flush=True)


# -- orchestration -----------------------------------------------------------------


@attrs.frozen
class Sample(ServerCpu):
    """One measurement of one variant at one payload size."""

    variant: str
    size: int
    rep: int
    wall: float
    cpu_user: float
    cpu_sys: float
    client_cpu: float
    messages: int

    @property
    def client_busy(self) -> float:
        """Client CPU (both its threads) over its wall time: near 1.0 or more means
        the client, not the server, may be setting the pace."""
        return self.client_cpu / self.wall


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """``harness.stop``, but closing the child's stdin first: that also ends a
    server running under py-spy (which the kill reaches only through the
    profiler, its parent)."""
    if proc.stdin is not None:
        proc.stdin.close()
    await stop(proc)


@attrs.frozen
class Profiling:
    """How to profile the server of one measurement: ``tool`` is ``py-spy``
    (the path of its executable in ``command``) or ``cprofile``; the profile
    goes to ``path``."""

    tool: str
    path: str
    command: str = ""


def _server_command(variant: str, profiling: Profiling | None) -> tuple[list[str], list[str]]:
    """(wrapper, arguments) to start a server child."""
    args = ["--serve", variant]
    if profiling is None:
        return [], args
    if profiling.tool == "cprofile":
        return [], [*args, "--profile-out", profiling.path]
    # Blocking sampling (py-spy's default) pauses the server for each sample,
    # so stacks are never torn; 1000 Hz gives thousands of samples per run.
    return [profiling.command, "record", "--rate", "1000", "--format", "raw", "-o", profiling.path, "--"], args


async def _end_profiled(server: asyncio.subprocess.Process, variant: str, profiling: Profiling) -> None:
    """Let a profiled server end on its own so that the profile is written."""
    assert server.stdin is not None
    if profiling.tool == "cprofile":
        server.stdin.write(b"STOP\n")  # the server cancels itself, then saves
        await server.stdin.drain()
    server.stdin.close()  # under py-spy: the server exits, py-spy writes the samples
    if await wait_exit(server) is None:
        raise RuntimeError(f"server {variant}: did not exit to save its profile")


async def measure(
    variant: str, size: int, rep: int, work: Workload, timeout: float, profiling: Profiling | None = None
) -> Sample:
    """Start a server, run one client against it, return the numbers; always kill both.

    With ``profiling`` the server runs under a profiler; once the client is
    done the server is told to stop and given the time to save the profile
    before it is killed.
    """
    wrapper, server_args = _server_command(variant, profiling)
    server = await spawn(SCRIPT, server_args, wrapper)
    client: asyncio.subprocess.Process | None = None
    try:
        line = await read_line(server, START_TIMEOUT, f"server {variant}")
        for _ in range(10):  # py-spy announces itself (and a blank line) on the same stdout first
            if line and not line.startswith("py-spy>"):
                break
            line = await read_line(server, START_TIMEOUT, f"server {variant}")
        word, port, pid = [*line.split(), "", "", ""][:3]
        if word != "PORT" or not port.isdigit() or not pid.isdigit():
            raise RuntimeError(f"server {variant}: unexpected first line {line!r}")
        client = await spawn(
            SCRIPT,
            [
                "--client",
                "--port",
                port,
                "--sizes",
                str(size),
                "--messages",
                str(work.messages),
                "--window",
                str(work.window),
                "--warmup",
                str(work.warmup),
                "--timeout",
                str(timeout),
            ],
        )
        result, cpu_user, cpu_sys = await run_timed(client, int(pid), timeout, f"client of {variant} ({size} B)")
        if server.returncode is not None:
            raise RuntimeError(f"server {variant} died during the run (code {server.returncode})")
        if profiling is not None:
            await _end_profiled(server, variant, profiling)
        return Sample(
            variant,
            size,
            rep,
            float(result["wall"]),
            cpu_user,
            cpu_sys,
            float(result["client_cpu"]),
            work.messages,
        )
    finally:
        if client is not None:
            await _stop(client)
        await _stop(server)


async def run_all(
    variants: Sequence[str], sizes: Sequence[int], reps: int, work: Workload, timeout: float
) -> list[Sample]:
    """Every (variant, size) ``reps`` times, round-robin, rotating the variant
    order each round so that no variant always runs first (or right after the
    same neighbour)."""
    samples: list[Sample] = []
    for rep in range(reps):
        shift = rep % len(variants)
        for size in sizes:
            for variant in [*variants[shift:], *variants[:shift]]:
                sample = await measure(variant, size, rep, work, timeout)
                samples.append(sample)
                print(
                    f"rep {rep + 1}/{reps} {size:5} B {variant:15} {sample.cpu_us_per_msg:6.2f} us/msg server CPU, "
                    f"{sample.msgs_per_s:>9,.0f} msg/s, server busy {sample.busy:4.0%}, "
                    f"client busy {sample.client_busy:4.0%}",
                    file=sys.stderr,
                    flush=True,
                )
    return samples


# -- report --------------------------------------------------------------------------


def _libzmq_version() -> str:
    try:
        import zmq
    except ImportError:
        return "n/a"
    return zmq.zmq_version()


def _ratios(samples: Sequence[Sample], variant: str, size: int) -> list[float]:
    """Per-round CPU ratios: each sample against the baseline's of the same round
    and size, which ran minutes apart at most, so their spread shows how steady
    the ratio is."""
    base = {s.rep: s for s in samples if s.variant == BASELINE and s.size == size}
    return [
        s.cpu_us_per_msg / base[s.rep].cpu_us_per_msg
        for s in samples
        if s.variant == variant and s.size == size and s.rep in base
    ]


def _size_name(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


#: Ratios closer to 1.00 than this are within the run-to-run noise seen here.
NOISE_BAND = 0.10


def _verdict(met: bool, ratio: float) -> str:
    """met / NOT met, flagged when the margin is inside the noise either way."""
    word = "met" if met else "NOT met"
    return f"{word}, but a tie within noise" if abs(ratio - 1.0) < NOISE_BAND else word


def _size_table(samples: Sequence[Sample], variants: Sequence[str], size: int) -> tuple[list[str], list[str]]:
    """One size's table rows and its verdicts against the goal."""
    mine = {v: [s for s in samples if s.variant == v and s.size == size] for v in variants}
    cpu_median = {v: statistics.median(s.cpu_us_per_msg for s in ss) for v, ss in mine.items()}
    rate_median = {v: statistics.median(s.msgs_per_s for s in ss) for v, ss in mine.items()}
    rows = [
        f"### {_size_name(size)} messages",
        "",
        "| variant | server CPU us/msg, median | min - max | user / sys us/msg | msg/s, median | min - max "
        "| server busy | client busy | CPU ratio to pyzmq-frames | per-run CPU ratios | msg/s ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts: list[str] = []
    for v in variants:
        ss = mine[v]
        cpu = [s.cpu_us_per_msg for s in ss]
        rate = [s.msgs_per_s for s in ss]
        user = statistics.median(s.cpu_user / s.messages * 1e6 for s in ss)
        system = statistics.median(s.cpu_sys / s.messages * 1e6 for s in ss)
        busy = statistics.median(s.busy for s in ss)
        client_busy = statistics.median(s.client_busy for s in ss)
        cpu_ratio = per_run = rate_ratio = "-"
        if v != BASELINE and BASELINE in mine:
            r_cpu = cpu_median[v] / cpu_median[BASELINE]
            r_rate = rate_median[v] / rate_median[BASELINE]
            bold = "**" if VARIANTS[v][0] == "sota" else ""
            cpu_ratio = f"{bold}{r_cpu:.2f}x{bold}"
            rate_ratio = f"{bold}{r_rate:.2f}x{bold}"
            per_run = format_range(_ratios(samples, v, size), ".2f")
            if VARIANTS[v][0] == "sota":
                cpu_met = _verdict(r_cpu <= TARGET_CPU_RATIO, r_cpu)
                rate_met = _verdict(r_rate >= TARGET_RATE_RATIO, r_rate)
                verdicts.append(
                    f"- {_size_name(size)}, {v}: CPU/msg {cpu_median[v]:.2f} vs {cpu_median[BASELINE]:.2f} us "
                    f"= {r_cpu:.2f}x (goal <= {TARGET_CPU_RATIO:g}x: {cpu_met}); "
                    f"throughput {rate_median[v]:,.0f} vs {rate_median[BASELINE]:,.0f} msg/s = {r_rate:.2f}x "
                    f"(goal >= {TARGET_RATE_RATIO:g}x: {rate_met})"
                )
        rows.append(
            f"| {v} | {cpu_median[v]:.2f} | {format_range(cpu, '.2f')} | {user:.2f} / {system:.2f} "
            f"| {rate_median[v]:,.0f} | {format_range(rate, ',.0f')} | {busy:.0%} | {client_busy:.0%} "
            f"| {cpu_ratio} | {per_run} | {rate_ratio} |"
        )
    return rows, verdicts


#: The library code this benchmark measures, for the report's source line.
SOURCE = ("sota_dispatch", "protocols/zmtp/sota_zmtp")
TITLE = "ZMTP ROUTER echo: sota_zmtp against pyzmq (libzmq)"


def panels(samples: Sequence[Sample], variants: Sequence[str], sizes: Sequence[int]) -> list[Panel]:
    """The figure: server CPU per message and throughput per payload size,
    every variant, each labelled with its ratio to pyzmq-frames."""
    cpu: list[Bar] = []
    rate: list[Bar] = []
    for size in sizes:
        group = f"{_size_name(size)} messages"
        mine = {v: [s for s in samples if s.variant == v and s.size == size] for v in variants}
        cpu_median = {v: statistics.median(s.cpu_us_per_msg for s in ss) for v, ss in mine.items() if ss}
        rate_median = {v: statistics.median(s.msgs_per_s for s in ss) for v, ss in mine.items() if ss}
        for v, ss in mine.items():
            if not ss:
                continue
            c = [s.cpu_us_per_msg for s in ss]
            r = [s.msgs_per_s for s in ss]
            has_base = v != BASELINE and BASELINE in cpu_median
            cpu_label = f"{cpu_median[v] / cpu_median[BASELINE]:.2f}x" if has_base else ""
            rate_label = f"{rate_median[v] / rate_median[BASELINE]:.2f}x" if has_base else ""
            cpu.append(Bar(group, v, cpu_median[v], min(c), max(c), cpu_label))
            rate.append(Bar(group, v, rate_median[v], min(r), max(r), rate_label))
    return [
        Panel(
            f"Server CPU per message, median and min-max (lower is better; label: ratio to {BASELINE})",
            "µs/msg",
            cpu,
        ),
        Panel(f"Throughput, median and min-max (higher is better; label: ratio to {BASELINE})", "messages/s", rate),
    ]


def report(
    samples: Sequence[Sample],
    variants: Sequence[str],
    sizes: Sequence[int],
    work: Workload,
    reps: int,
    command: str,
    figure: Sequence[str] = (),
) -> str:
    """The markdown written to ZMTP_RESULTS.md and printed; ``figure``: the
    lines that embed its plot."""
    out = [
        *report_head("ZMTP ROUTER echo benchmark", "bench/zmtp_bench.py", command),
        *machine_lines(
            f"pyzmq {version('pyzmq')} (libzmq {_libzmq_version()}), anyio {version('anyio')}, "
            f"trio {version('trio')}, uvloop {version('uvloop')}, sota-dispatch {version('sota-dispatch')}, "
            f"sota-zmtp {version('sota-zmtp')}"
        ),
        source_line(SOURCE),
        "- event loops: each sota variant names its own: `sota-asyncio` is asyncio's own loop (uvloop not used), "
        "`sota-uvloop` asyncio on uvloop, `sota-trio` anyio's trio backend; the pyzmq servers are blocking loops "
        "over libzmq (its own I/O thread)",
        "",
        "## Workload",
        "",
        f"- one pyzmq DEALER (routing id `{ROUTING_ID.decode()}`) in its own process sends {work.messages:,} "
        f"single-frame messages per run, keeping up to {work.window} unanswered (sends while fewer are in "
        f"flight, else receives one); {work.warmup:,} untimed warm-up messages first. It checks the number "
        f"and total size of the replies and compares every {SPOT_CHECK_EVERY}th and the last in full",
        f"- payload sizes: {', '.join(_size_name(s) for s in sizes)}; runs per (variant, size): {reps}, "
        "interleaved round-robin with the variant order rotating each round; a fresh server process per run",
        "- server CPU = utime+stime of the server process, every thread (/proc/<pid>/stat), over the timed "
        "part only; msg/s = messages / client wall time; server busy = server CPU / client wall time; client "
        "busy = the client's own CPU (both its threads) / its wall time",
        resolution_line(samples),
        "- CPU ratio = median server CPU per message over pyzmq-frames' median at the same size; per-run "
        "ratios pair runs of the same round; msg/s ratio = median throughput over pyzmq-frames'",
        "",
        "Variants: `pyzmq-frames` is a libzmq ROUTER with the fastest general frame-level echo loop found "
        "(identity with `recv()`, body frames with `recv(copy=False)` and `Frame.more`, each sent on with "
        "SNDMORE as needed). `sota-*` is `sota_dispatch.Server(sota_zmtp.EchoRouter().factory)` under anyio "
        "on asyncio (no uvloop), uvloop, or trio. `pyzmq-multipart` is the everyday "
        "`send_multipart(recv_multipart(copy=False), copy=False)`. `pyzmq-2part` assumes exactly one body "
        "frame per message (recv, recv, send, send), which a real echo server cannot: a lower bound for "
        "pyzmq, shown for context, not a target. Every pyzmq server also spends CPU in libzmq's I/O thread, "
        "which is counted.",
        "",
        "## Results",
        "",
        *figure,
    ]
    verdicts: list[str] = []
    for size in sizes:
        rows, size_verdicts = _size_table(samples, variants, size)
        out += [*rows, ""]
        verdicts += size_verdicts
    out += [
        "## Goal",
        "",
        "The goal: our ROUTER echo (pure Python, or the compiled build: the machine section's build line "
        "says which ran) uses no more server CPU per message than libzmq driven by "
        "pyzmq's frame-level loop, and moves at least as many messages per second (an early prototype on "
        "raw asyncio reached 2.9 us/msg against pyzmq's 4.2 us on the machine where it was measured, so "
        "this is reachable from Python).",
        "",
        *(verdicts or [f"- no sota variant ran together with {BASELINE}"]),
        "",
        "Noise: on a 2-core machine the client (2 threads: Python and libzmq's I/O thread) and the server "
        "share the cores, and a pyzmq server has 2 threads as well. CPU per message then depends on how "
        "often each side sleeps and is woken (a wake-up costs microseconds), which shifts from run to run; "
        "single runs of one variant can differ by 30% or more. Trust medians and the per-run ratio ranges, "
        f"and treat a ratio within {NOISE_BAND:.0%} of 1.00 as a tie.",
        "",
        "## Every run",
        "",
        "| round | size | variant | server CPU us/msg | msg/s | wall s | server CPU s (user + sys) | client CPU s |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sorted(samples, key=lambda s: (s.rep, sizes.index(s.size), variants.index(s.variant))):
        out.append(
            f"| {s.rep + 1} | {_size_name(s.size)} | {s.variant} | {s.cpu_us_per_msg:.2f} | {s.msgs_per_s:,.0f} "
            f"| {s.wall:.3f} | {s.cpu_user:.2f} + {s.cpu_sys:.2f} | {s.client_cpu:.2f} |"
        )
    return "\n".join(out) + "\n"


# -- profiling -----------------------------------------------------------------------

#: Packages a profiled function may belong to, checked in this order against
#: the directories of its file (py-spy gives short paths such as
#: ``anyio/_backends/_asyncio.py``, cProfile full ones).
LAYERS: tuple[str, ...] = ("sota_zmtp", "sota_dispatch", "anyio", "trio", "uvloop", "asyncio")
#: A py-spy frame: ``function (path:line)``.
_PYSPY_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")


def _layer(path: str) -> str:
    parts = Path(path).parts[:-1]
    for layer in LAYERS:
        if layer in parts:
            return layer
    return "selectors" if Path(path).name == "selectors.py" else "other Python"


def _hot_spot_table(
    title: str,
    rows: dict[str, float],
    total: float,
    us_per_unit: float,
    top: int,
    calls: dict[str, float] | None = None,
) -> list[str]:
    """Rows (name -> own time or samples) sorted, with shares and us/msg."""
    head = f"| {title} | share | us/msg |" + (" calls/msg |" if calls is not None else "")
    out = [head, "| --- | ---: | ---: |" + (" ---: |" if calls is not None else "")]
    for name, value in sorted(rows.items(), key=lambda kv: -kv[1])[:top]:
        line = f"| `{name}` | {value / total:.1%} | {value * us_per_unit:.3f} |"
        if calls is not None:
            line += f" {calls.get(name, 0):.3f} |"
        out.append(line)
    return out


def pyspy_lines(path: str, cpu_us_per_msg: float, top: int = 20) -> list[str]:
    """Hot spots from py-spy's raw (collapsed-stack) output.

    Only the server's main thread while serving counts: stacks under
    ``run_server`` and not inside an import (start-up). py-spy skips idle
    samples, so shares are shares of the CPU the server used; times per
    message are those shares of the run's measured server CPU per message.
    Time in a C function (``bytes.join``, ``socket.send``) is charged to the
    Python line that called it.
    """
    own: dict[str, float] = {}
    own_lines: dict[str, float] = {}
    layers: dict[str, float] = {}
    total = 0.0
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            stack, _, count = raw.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if not count.isdigit() or not any(fr.startswith("run_server ") for fr in frames):
                continue
            if any(fr.startswith("_find_and_load ") for fr in frames):
                continue
            match = _PYSPY_FRAME.match(frames[-1])
            if match is None:
                continue
            n = float(count)
            total += n
            where = f"{Path(match['path']).name} {match['function']}"
            own[where] = own.get(where, 0.0) + n
            at = f"{Path(match['path']).name}:{match['line'] or '?'} {match['function']}"
            own_lines[at] = own_lines.get(at, 0.0) + n
            layer = _layer(match["path"])
            layers[layer] = layers.get(layer, 0.0) + n
    if not total:
        return ["(no samples of the serving server: is py-spy allowed to trace processes here?)"]
    unit = cpu_us_per_msg / total
    return [
        f"py-spy: {total:,.0f} samples of the serving main thread; us/msg = share x the run's "
        f"{cpu_us_per_msg:.2f} us/msg server CPU",
        "",
        *_hot_spot_table("layer (own time)", layers, total, unit, top),
        "",
        *_hot_spot_table("function (own time, C calls included)", own, total, unit, top),
        "",
        *_hot_spot_table("line (own time)", own_lines, total, unit, 15),
    ]


def cprofile_lines(path: str, messages: int, top: int = 20) -> list[str]:
    """Hot spots of a saved cProfile: own time per function and per layer.

    cProfile times with the wall clock, so the event loop's wait in
    ``epoll.poll`` is idle time and left out. Its per-call overhead inflates
    small, often called functions several times over, so read the shares as
    a rough map (py-spy's are better).
    """
    stats = pstats.Stats(path)
    table = stats.stats  # type: ignore[attr-defined]  # filled by pstats, not in the stubs
    own: dict[str, float] = {}
    calls: dict[str, int] = {}
    layers: dict[str, float] = {}
    for (filename, line, name), (_cc, ncalls, tottime, _cumtime, _callers) in table.items():
        if filename == "~" and ("poll" in name or "select" in name):
            continue  # waiting for the client, not work
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        own[where] = float(tottime)
        calls[where] = int(ncalls)
        layer = "C functions" if filename == "~" else _layer(filename)
        layers[layer] = layers.get(layer, 0.0) + float(tottime)
    total = sum(own.values()) or 1.0
    per_msg = {k: v / messages for k, v in calls.items()}
    unit = 1e6 / messages
    return [
        f"cProfile: {total:.2f} s of own time (idle waits left out) over {messages:,} messages "
        f"(timed + warm-up) = {total * unit:.2f} us/msg, inflated by cProfile",
        "",
        *_hot_spot_table("layer (own time)", layers, total, unit, top),
        "",
        "calls/msg: how often a function runs per message",
        "",
        *_hot_spot_table("function (own time)", own, total, unit, top, per_msg),
    ]


async def run_profiles(variant: str, sizes: Sequence[int], work: Workload, timeout: float, tool: str) -> str:
    """One profiled run per size; the hot spots of each, for stdout only."""
    folder = Path(tempfile.mkdtemp(prefix="zmtp-bench-"))
    command = shutil.which("py-spy") or ""
    out = [f"# {'py-spy' if tool == 'py-spy' else 'cProfile'} profile of the {variant} server", ""]
    for size in sizes:
        path = folder / f"{variant}-{size}.{'txt' if tool == 'py-spy' else 'prof'}"
        profiling = Profiling(tool, str(path), command)
        sample = await measure(variant, size, 0, work, timeout, profiling)
        lines = (
            pyspy_lines(str(path), sample.cpu_us_per_msg)
            if tool == "py-spy"
            else cprofile_lines(str(path), work.messages + work.warmup)
        )
        out += [
            f"## {_size_name(size)} messages",
            "",
            f"Profiled run: {sample.cpu_us_per_msg:.2f} us/msg server CPU, {sample.msgs_per_s:,.0f} msg/s "
            f"(cProfile slows the server several times, py-spy a little); raw profile in {path}",
            "",
            *lines,
            "",
        ]
    return "\n".join(out)


# -- command line ------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated byte counts, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return list(dict.fromkeys(sizes))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="ZMTP ROUTER echo throughput and server CPU per message: sota_zmtp's EchoRouter vs a pyzmq "
        "ROUTER, same pyzmq DEALER client (see bench/README.md).",
    )
    p.add_argument(
        "--messages", type=positive_int, help="timed messages per run (default 200000; 1000000 with --profile)"
    )
    p.add_argument("--reps", type=positive_int, help="runs per variant and size (default 5)")
    p.add_argument("--sizes", type=_sizes, help="comma-separated payload sizes in bytes (default 16,1024)")
    p.add_argument(
        "--variants",
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all; uvloop and trio ones if installed)",
    )
    p.add_argument(
        "--output",
        help="markdown report path, '-' for none (default: ZMTP_RESULTS.md next to this script; none with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 20000 messages, 1 run; writes no report")
    p.add_argument("--window", type=positive_int, default=1000, help="messages the client keeps in flight (1000)")
    p.add_argument("--warmup", type=int, default=None, help="untimed messages per run first (default 10000)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per client run (default scales)")
    p.add_argument(
        "--profile",
        metavar="VARIANT",
        help="run one sota variant's server under a profiler, once per size, and print its hot spots (no report)",
    )
    p.add_argument(
        "--profiler",
        choices=["auto", "py-spy", "cprofile"],
        default="auto",
        help="for --profile: py-spy (sampling, accurate; needs py-spy on PATH), cProfile (stdlib, inflates small "
        "functions), or auto: py-spy if found (default)",
    )
    # Child roles, used by the parent only.
    p.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parent or child, by flags; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    # A profile needs more samples than a measurement needs ticks.
    messages = args.messages or (20_000 if args.quick else 1_000_000 if args.profile else 200_000)
    reps = args.reps or (1 if args.quick else 5)
    sizes: list[int] = args.sizes or [16, 1024]
    warmup = (2_000 if args.quick else 10_000) if args.warmup is None else args.warmup
    # Generous: a server ten times slower than pyzmq's multipart loop still finishes.
    timeout = args.timeout or 60.0 + messages / 2000
    if warmup < 0:
        parser.error("--warmup must not be negative")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    work = Workload(messages, args.window, warmup)

    if args.serve:
        run_server(args.serve, args.profile_out)
        return 0
    if args.client:
        try:
            run_client(args.port, sizes[0], work, timeout)
        except ClientError as exc:
            print(f"client: {exc}", file=sys.stderr)
            return 1
        return 0

    if args.profile:
        if args.profile not in VARIANTS or VARIANTS[args.profile][0] != "sota" or not _available(args.profile):
            sota = [v for v in VARIANTS if VARIANTS[v][0] == "sota" and _available(v)]
            parser.error(f"--profile takes one of {', '.join(sota)}")
        tool = args.profiler
        if tool == "auto":
            tool = "py-spy" if shutil.which("py-spy") else "cprofile"
        elif tool == "py-spy" and not shutil.which("py-spy"):
            parser.error("py-spy is not on PATH (pip install py-spy)")
        try:
            text = asyncio.run(run_profiles(args.profile, sizes, work, timeout, tool))
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(text)
        return 0

    if args.variants:
        variants = parse_variants(parser, args.variants, VARIANTS)
        missing = [v for v in variants if not _available(v)]
        if missing:
            parser.error(f"variants {missing} need a package that is not installed (uvloop or trio)")
    else:
        variants = [v for v in VARIANTS if _available(v)]
    if importlib.util.find_spec("zmq") is None:
        parser.error("pyzmq is not installed (the client is a pyzmq DEALER)")

    output = args.output if args.output is not None else ("-" if args.quick else str(DEFAULT_OUTPUT))
    command = "python " + shlex.join(sys.argv if argv is None else ["bench/zmtp_bench.py", *argv])
    started = time.monotonic()
    try:
        samples = asyncio.run(run_all(variants, sizes, reps, work, timeout))
    except (RuntimeError, OSError, ValueError) as exc:
        # A child failed, timed out or answered wrongly; its stderr is above.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figure = figure_lines(output, TITLE, panels(samples, variants, sizes), SOURCE)
    publish(report(samples, variants, sizes, work, reps, command, figure), output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
