"""Idle connections: what each costs a local service and the proxy, in RSS.

A proxy in front of long-lived bolt or ZMTP clients holds many connections
that send nothing for minutes; each should cost little more than the
kernel's socket. This opens ``--connections`` TCP connections (10,000 by
default) to ``python -m sota_dispatch.serve --protocol P`` (a local
service) and, separately, to a proxy in front of one, waits until the
server holds them all (its open descriptors), and reports the server's RSS
growth divided by the connection count. The goal (issue 18): at most 10
KiB per connection, pure-Python build. The header's build line says which
build ran.

Two scenarios: ``silent`` connections never send (a pool's spare
connections, or a flood meant to exhaust memory: the listener holds them
as bare sockets until their first bytes); ``spoke`` connections each send
one request and read its answer first, then go idle (what long-lived
clients look like between requests: each has its task, stream and
dispatcher; run with ``--park-idle-after 0``). ``parked``: as ``spoke``,
with ``--park-idle-after 0.2`` on the measured server: measured once they
have been idle long enough to park (the listener gives each back its
task, stream and buffers), each batch parking before the next speaks
(long-lived clients whose calls are spread out). ``burst``: as ``parked``,
but all speak at once, then park together: what is left of a burst of
that many served at once (RSS keeps what the allocator does not give
back). By default the serve command and the proxy park a connection idle
for 30 s (``DEFAULT_PARK_IDLE_AFTER``): an idle connection costs what
``spoke`` shows until then, what ``parked`` or ``burst`` shows after.

Protocols without a handshake only (simple_line, bolt, dubbo): a ZMTP
connection that never greets is closed by the handshake timeout, as it
should be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import time
from pathlib import Path

from proxy_bench import sample_request

from harness import machine_lines, positive_int, publish, report_head, source_line, start_serve, version
from sota_dispatch.protocol.server import DEFAULT_PARK_IDLE_AFTER

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SOURCE = ("sota_dispatch", "protocols")
GOAL_KIB = 10.0
#: Connections opened at once (the listen backlog is a few thousand).
BATCH = 200
#: Seconds idle before a connection parks in the "parked" scenario.
PARK_AFTER = 0.2
#: Seconds from the last connection to the measure, in the "parked" scenario.
PARKED_WAIT = 17.0


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def connect_idle(port: int, count: int, request: bytes | None = None, pause: float = 0.0) -> list[socket.socket]:
    """``count`` connected sockets that will send nothing (after
    ``request``, when given: each batch speaks as soon as it is connected,
    well within the server's first-byte timeout); ``pause`` seconds after
    each batch (time for it to park before the next speaks)."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    for start_at in range(0, count, BATCH):
        batch = []
        for _ in range(min(BATCH, count - start_at)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            batch.append(sock)
        await asyncio.gather(*(loop.sock_connect(sock, (HOST, port)) for sock in batch))
        if request is not None:
            await speak_once(batch, request)
        socks += batch
        if pause:
            await asyncio.sleep(pause)
    return socks


async def wait_held(pid: int, at_least: int, timeout: float) -> None:
    """Until the server holds ``at_least`` descriptors (bounded)."""
    deadline = time.monotonic() + timeout
    while open_fds(pid) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {pid} holds {open_fds(pid)} descriptors, expected {at_least}")
        await asyncio.sleep(0.05)


def request_bytes(protocol: str) -> bytes:
    """One request of ``protocol``, encoded as a client sends it."""
    from sota_dispatch import encoded_bytes, get_protocol

    semantics = get_protocol(protocol).protocol_class
    assert semantics is not None
    return encoded_bytes(semantics.encode_request(sample_request(protocol), 1))


async def speak_once(socks: list[socket.socket], request: bytes) -> None:
    """Each socket sends ``request`` and reads (the start of) its answer."""
    loop = asyncio.get_running_loop()

    async def one(sock: socket.socket) -> None:
        await loop.sock_sendall(sock, request)
        if not await asyncio.wait_for(loop.sock_recv(sock, 65536), 30):
            raise RuntimeError("the server closed a connection instead of answering")

    await asyncio.gather(*(one(sock) for sock in socks))


async def measure(protocol: str, target: str, scenario: str, count: int) -> tuple[int, int]:
    """(RSS before, RSS after) of the measured server, KiB."""
    common = ["--protocol", protocol, "--listen", f"{HOST}:0", "--max-connections", "0"]
    # Not parked, whatever the default: "spoke" is what a served connection costs.
    parking = scenario in ("parked", "burst")
    parks = ["--park-idle-after", f"{PARK_AFTER}" if parking else "0"]
    procs = []
    try:
        backend, backend_port = await start_serve(
            [*common, *(parks if target == "service" else [])], 60, f"{protocol} service"
        )
        procs.append(backend)
        measured, port = backend, backend_port
        if target == "proxy":
            measured, port = await start_serve(
                [*common, *parks, "--upstream", f"{HOST}:{backend_port}"], 60, f"{protocol} proxy"
            )
            procs.append(measured)
        request = request_bytes(protocol)
        spoken = request if scenario != "silent" else None
        warm = await connect_idle(port, 100, spoken)  # the first connections' one-time costs
        await wait_held(measured.pid, 100, 30)
        await asyncio.sleep(0.5)
        before = rss_kib(measured.pid)
        fds = open_fds(measured.pid)
        # parked: each batch parks before the next speaks (clients whose
        # activity is spread out, as long-lived ones' is: few served at once).
        socks = await connect_idle(port, count, spoken, 3 * PARK_AFTER if scenario == "parked" else 0.0)
        await wait_held(measured.pid, fds + count, 120)
        await asyncio.sleep(1.0)  # let the last connections' tasks reach their first read
        if parking:
            # Parked after PARK_AFTER idle (sweeps every PARK_AFTER / 2 s); and
            # the proxy's timer heap drops its finished requests (each holds
            # its client connection's objects) only at their deadline: the
            # route timeout, 15 s by default. Steady state is after both.
            await asyncio.sleep(PARKED_WAIT)
        after = rss_kib(measured.pid)
        for sock in [*warm, *socks]:
            sock.close()
        return before, after
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def run(args: argparse.Namespace) -> list[tuple[str, str, str, int, int]]:
    rows = []
    for scenario in args.scenarios.split(","):
        for protocol in args.protocols.split(","):
            for target in ("service", "proxy"):
                before, after = await measure(protocol, target, scenario, args.connections)
                per = (after - before) / args.connections
                print(f"{scenario:6} {protocol:12} {target:8}: {per:.1f} KiB per idle connection", file=sys.stderr)
                rows.append((scenario, protocol, target, before, after))
    return rows


def report(rows: list[tuple[str, str, str, int, int]], args: argparse.Namespace) -> str:
    out = [
        *report_head("Idle connection memory", "bench/idle_bench.py", "python " + " ".join(sys.argv)),
        *machine_lines(
            f"anyio {version('anyio')}, uvloop {version('uvloop')}, sota-dispatch {version('sota-dispatch')}"
        ),
        source_line(SOURCE),
        "",
        "## Workload",
        "",
        f"- {args.connections:,} TCP connections, opened {BATCH} at a time after 100 warm-up "
        "ones, to `python -m sota_dispatch.serve --protocol P` (service) or to a proxy in front of one "
        "(proxy), both on the serve command's default loop",
        "- silent: the connections send nothing (so the proxy opens no upstream connection); "
        "spoke: each sends one small request (proxy_bench's) and reads its answer, then all sit idle "
        "(the proxy's simple_line clients then hold an upstream connection each: "
        "pipelined pools are per client; bolt and dubbo share a multiplexed one), both servers run "
        "with --park-idle-after 0 (what a connection costs while it is served); "
        f"parked: as spoke, the measured server run with --park-idle-after {PARK_AFTER:g}, "
        f"each batch left {3 * PARK_AFTER:g} s to park before the next speaks (few served at once, "
        f"as with long-lived clients whose calls are spread out), measured {PARKED_WAIT:g} s after the "
        "last (the proxy's finished requests then past their 15 s route timeout, when its timer heap "
        "lets go of them); burst: as parked, but all speak at once and park together",
        "- RSS = VmRSS of the measured server, read before the connections and once it holds them all "
        "(its descriptors) and a second has passed",
        f"- by default the serve command and the proxy's listeners park a connection idle for "
        f"{DEFAULT_PARK_IDLE_AFTER:g} s: an idle connection costs what `parked` shows once that long idle, "
        "what `spoke` shows before",
        "",
        "## Results",
        "",
        "| scenario | protocol | server | RSS before MiB | RSS after MiB | KiB per idle connection |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for scenario, protocol, target, before, after in rows:
        per = (after - before) / args.connections
        out.append(f"| {scenario} | {protocol} | {target} | {before / 1024:.1f} | {after / 1024:.1f} | {per:.1f} |")
    out += ["", "## Goal", "", f"At most {GOAL_KIB:.0f} KiB per idle connection (pure-Python build):", ""]
    for scenario, protocol, target, before, after in rows:
        per = (after - before) / args.connections
        out.append(f"- {scenario}, {protocol} {target}: {per:.1f} KiB: {'met' if per <= GOAL_KIB else 'NOT met'}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="simple_line,bolt,dubbo", help="comma-separated (no ZMTP)")
    parser.add_argument(
        "--scenarios", default="silent,spoke,parked,burst", help="comma-separated: silent, spoke, parked, burst"
    )
    parser.add_argument("--connections", type=positive_int, default=10_000, help="idle connections (10,000)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 500 connections; no report")
    parser.add_argument("--output", default=str(HERE / "IDLE_RESULTS.md"), help="report path, '-' for none")
    args = parser.parse_args()
    unknown = set(args.scenarios.split(",")) - {"silent", "spoke", "parked", "burst"}
    if unknown:
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    if args.quick:
        args.connections, args.output = 500, "-"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 1000
    if hard != resource.RLIM_INFINITY and hard < need:
        parser.error(f"needs {need} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))  # the servers inherit it
    started = time.monotonic()
    rows = asyncio.run(run(args))
    publish(report(rows, args), args.output, started)


if __name__ == "__main__":
    main()
