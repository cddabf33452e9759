"""xprotocol benchmark: bolt and dubbo decode throughput, and echo over one connection.

The questions it answers: how many frames per second each codec decodes,
and how many echo requests per second one connection with 100 in flight
carries:

* **Decode:** how many frames per second each sans-I/O decoder gets out of
  a byte stream, in this process with no I/O: the ceiling a server built on
  it can never pass, and the share of an echo request's CPU that is
  decoding. The stream is a large buffer of concatenated captured frames
  fed in 64 KiB chunks, the size ``sota_dispatch``'s reader hands to
  ``chunks()``, so frames straddle chunk ends as they do in a server.
* **Echo:** how many requests per second ``sota_dispatch.Server`` with
  ``BoltEchoDispatcher`` or ``DubboEchoDispatcher`` answers on ONE
  connection with 100 requests in flight, and the server CPU each costs,
  on asyncio, uvloop and trio.

The echo part follows ``line_bench.py`` and ``zmtp_bench.py``, with the
machinery shared in ``harness.py``:

* the parent (this script without ``--serve``/``--client``) measures the
  decoders, then orchestrates the echo runs and writes the report;
* a server child per run (``--serve VARIANT``) prints ``PORT <n>`` once it
  listens: the parent waits for that line, never sleeps;
* a client child per run (``--client VARIANT``), plain asyncio sockets and
  ``struct`` (not our library, so its checks do not compare the library
  with itself), connects, warms up, prints ``READY``, waits for ``GO``, runs
  the timed exchange and prints one JSON line.

Server CPU is the child's utime+stime from ``/proc/<pid>/stat``, read right
before ``GO`` and right after the result line, so start-up, imports,
connection set-up and warm-up are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import math
import os
import shlex
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
from sota_dispatch import SotaError
from sota_xprotocol import bolt, dubbo, hessian2

__all__ = ["main"]

SCRIPT = Path(__file__).resolve()
DEFAULT_OUTPUT = SCRIPT.parent / "XPROTOCOL_RESULTS.md"
#: Golden frames captured from real peers (anthunder, dubbo-ssl-python).
VECTORS = SCRIPT.parent.parent / "protocols" / "xprotocol" / "tests" / "vectors"

#: What ``sota_dispatch``'s reader hands a codec per read (its DEFAULT_READ_SIZE).
CHUNK = 65536
#: Size of the decode buffer (frames of one kind, concatenated): many
#: chunks, so chunk-boundary joins count as often as they do in a server.
DECODE_BUFFER = 2 * 1024 * 1024
#: Upper bound on decode passes per repetition, whatever the calibration says.
MAX_PASSES = 10_000

#: Echo variant -> (protocol, event loop).
VARIANTS: dict[str, tuple[str, str]] = {
    "bolt-asyncio": ("bolt", "asyncio"),
    "bolt-uvloop": ("bolt", "uvloop"),
    "bolt-trio": ("bolt", "trio"),
    "dubbo-asyncio": ("dubbo", "asyncio"),
    "dubbo-uvloop": ("dubbo", "uvloop"),
    "dubbo-trio": ("dubbo", "trio"),
}
#: Every this-many-th reply (by request id) is compared in full with the
#: expected bytes; a prime, so it is not in step with the window.
SPOT_CHECK_EVERY = 97
RECV_SIZE = 256 * 1024


def _available(variant: str) -> bool:
    """uvloop and trio are optional extras; their variants need them installed."""
    loop = VARIANTS[variant][1]
    return loop == "asyncio" or importlib.util.find_spec(loop) is not None


# -- golden frames -----------------------------------------------------------------


def _rows(name: str) -> list[dict[str, str]]:
    with open(VECTORS / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def bolt_request() -> bytes:
    """anthunder's first captured request: bolt v1, SofaRequest class, a
    275-byte header map (service, method, trace context) and a 10-byte body."""
    raw = bytes.fromhex(next(r["hex"] for r in _rows("bolt_anthunder.jsonl") if r["dir"] == "c2s"))
    if raw[0] != 1 or raw[1] != 1:
        raise ValueError("the first anthunder frame is not a bolt v1 request")
    return raw


def dubbo_pair() -> tuple[bytes, bytes]:
    """dubbo-ssl-python's first captured call (``echo("hello")``, dubbo
    2.4.10, group and interface attachments) and the provider's reply to it,
    matched by request id."""
    rows = _rows("dubbo_ssl_python.jsonl")
    request = bytes.fromhex(next(r["hex"] for r in rows if r["kind"] == "client->server"))
    reply = bytes.fromhex(
        next(r["hex"] for r in rows if r["kind"] == "server->client" and r["hex"][8:24] == request[4:12].hex())
    )
    return request, reply


def small_bolt_request() -> bytes:
    """A synthetic minimal call, written by hand from the bolt v1 layout: a
    16-byte class name, no header map, a 16-byte body (54 bytes in all)."""
    class_name, content = b"com.example.Echo", b"0123456789abcdef"
    head = struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, 0, 1, 3000, len(class_name), 0, len(content))
    return head + class_name + content


# -- decode throughput (in-process) ------------------------------------------------


def _stream(template: bytes, id_offset: int, id_format: str, count: int) -> bytes:
    """``count`` copies of ``template`` with request ids 0..count-1, concatenated."""
    pack = struct.Struct(id_format).pack
    head, tail = template[:id_offset], template[id_offset + struct.calcsize(id_format) :]
    return b"".join(head + pack(i) + tail for i in range(count))


def _chunks(data: bytes) -> list[bytes]:
    """``data`` cut into reader-sized chunks, ahead of time, so that the slicing
    is not timed (the reader's own copy is part of the echo numbers)."""
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _bolt_pass(chunks: Sequence[bytes], headers: bool) -> int:
    """One decoder over the whole stream; the frames decoded (with ``headers``:
    those whose header map names a service, as a router would ask)."""
    decoder = bolt.BoltDecoder()
    count = 0
    for chunk in chunks:
        if headers:
            count += sum(1 for frame in decoder.feed(chunk) if "service" in frame.header)
        else:
            count += len(decoder.feed(chunk))
    decoder.check()
    return count if decoder.buffered == 0 else -1


def _dubbo_pass(chunks: Sequence[bytes], body: str) -> int:
    """One decoder over the whole stream; the frames decoded. ``body``:
    "call" counts those whose :meth:`call` is the ``echo`` call, its
    arguments' bytes taken as the echo takes them; "invocation" those whose
    :meth:`invocation` is (the arguments built too); "" decodes no body."""
    decoder = dubbo.DubboDecoder()
    count = 0
    for chunk in chunks:
        frames = decoder.feed(chunk)
        if body == "call":
            count += sum(1 for frame in frames if frame.call().method == "echo" and frame.argument_bytes())
        elif body == "invocation":
            count += sum(1 for frame in frames if frame.invocation().method == "echo")
        else:
            count += len(frames)
    decoder.check()
    return count if decoder.buffered == 0 else -1


def _hessian_pass(body: bytes, count: int) -> int:
    """``count`` decodes of one request body; those that gave its 7 values."""
    decode_all = hessian2.decode_all
    return sum(1 for _ in range(count) if len(decode_all(body)) == 7)


@attrs.frozen
class CodecCase:
    """One decode measurement: ``run`` makes one pass over ``frames`` frames of
    ``frame_size`` bytes and returns how many it decoded (checked)."""

    name: str
    what: str
    frame_size: int
    frames: int
    run: Callable[[], int]


def codec_cases(buffer_bytes: int) -> dict[str, CodecCase]:
    """Every decode case, each over about ``buffer_bytes`` of frames."""
    anthunder = bolt_request()
    small = small_bolt_request()
    call, _ = dubbo_pair()
    body = call[16:]

    def frames_of(frame: bytes) -> int:
        return max(1, buffer_bytes // len(frame))

    def bolt_chunks(frame: bytes) -> list[bytes]:
        return _chunks(_stream(frame, 5, ">I", frames_of(frame)))

    dubbo_chunks = _chunks(_stream(call, 4, ">q", frames_of(call)))
    cases = [
        CodecCase(
            "bolt-anthunder",
            "`BoltDecoder.feed`, anthunder's captured request (header map left undecoded, as the echo does)",
            len(anthunder),
            frames_of(anthunder),
            functools.partial(_bolt_pass, bolt_chunks(anthunder), False),
        ),
        CodecCase(
            "bolt-anthunder+header",
            "the same, plus `frame.header` (the header map, where SOFA-RPC puts the routing key)",
            len(anthunder),
            frames_of(anthunder),
            functools.partial(_bolt_pass, bolt_chunks(anthunder), True),
        ),
        CodecCase(
            "bolt-small",
            "`BoltDecoder.feed`, a synthetic minimal request (16 B class name, no header map, 16 B body)",
            len(small),
            frames_of(small),
            functools.partial(_bolt_pass, bolt_chunks(small), False),
        ),
        CodecCase(
            "dubbo-header",
            '`DubboDecoder.feed`, dubbo-ssl-python\'s captured `echo("hello")` call: the 16-byte header only',
            len(call),
            frames_of(call),
            functools.partial(_dubbo_pass, dubbo_chunks, ""),
        ),
        CodecCase(
            "dubbo-call",
            "the same, plus `frame.call()` and `frame.argument_bytes()`, as the echo does (the header "
            "values and attachments decoded, the arguments walked over)",
            len(call),
            frames_of(call),
            functools.partial(_dubbo_pass, dubbo_chunks, "call"),
        ),
        CodecCase(
            "dubbo-invocation",
            "the same, plus `frame.invocation()` instead (the hessian2 body: version, path, method, "
            "arguments, attachments, all built), as a service that reads its arguments does",
            len(call),
            frames_of(call),
            functools.partial(_dubbo_pass, dubbo_chunks, "invocation"),
        ),
        CodecCase(
            "hessian2-body",
            "`hessian2.decode_all` of that call's body alone (no framing; one body counts as one frame)",
            len(body),
            frames_of(call),
            functools.partial(_hessian_pass, body, frames_of(call)),
        ),
    ]
    return {case.name: case for case in cases}


@attrs.frozen
class DecodeSample:
    """One repetition of one decode case: ``passes`` passes over its buffer."""

    case: str
    rep: int
    frames: int
    wall: float
    cpu: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall

    @property
    def us_per_frame(self) -> float:
        return self.wall / self.frames * 1e6

    @property
    def cpu_us_per_frame(self) -> float:
        return self.cpu / self.frames * 1e6


def _check_pass(case: CodecCase, got: int) -> None:
    if got != case.frames:
        raise RuntimeError(f"decode {case.name}: {got} frames checked out of {case.frames}")


def calibrate(case: CodecCase, target: float) -> int:
    """Passes per repetition so that one lasts about ``target`` seconds, from
    one untimed (and checked) pass, which also warms the caches."""
    start = time.perf_counter()
    _check_pass(case, case.run())
    once = time.perf_counter() - start
    return max(1, min(MAX_PASSES, math.ceil(target / max(once, 1e-6))))


def measure_decode(case: CodecCase, rep: int, passes: int) -> DecodeSample:
    """``passes`` passes, timed by the wall clock and by this process's CPU;
    the garbage collector stays on, as it is in a server."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        _check_pass(case, case.run())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return DecodeSample(case.name, rep, case.frames * passes, wall, cpu)


def run_decode(cases: Sequence[CodecCase], reps: int, target: float) -> list[DecodeSample]:
    """Every case ``reps`` times, round-robin with the order rotating each
    round, so that a slow spell of the machine spreads over all cases."""
    passes = {case.name: calibrate(case, target) for case in cases}
    samples: list[DecodeSample] = []
    for rep in range(reps):
        shift = rep % len(cases)
        for case in [*cases[shift:], *cases[:shift]]:
            sample = measure_decode(case, rep, passes[case.name])
            samples.append(sample)
            print(
                f"rep {rep + 1}/{reps} decode {case.name:22} {sample.frames_per_s:>11,.0f} frames/s, "
                f"{sample.us_per_frame:6.2f} us/frame",
                file=sys.stderr,
                flush=True,
            )
    return samples


# -- echo server -------------------------------------------------------------------


async def _serve(protocol: str) -> None:
    import anyio

    from sota_dispatch import DispatcherFactory, Server, parse_address
    from sota_xprotocol import BoltEchoDispatcher, DubboEchoDispatcher

    factory: DispatcherFactory = BoltEchoDispatcher if protocol == "bolt" else DubboEchoDispatcher
    server = Server(factory, (HOST, 0))
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        announce(parse_address(address)[1])


def run_server(variant: str) -> None:
    """Child entry point for ``--serve``: serve until killed or stdin closes."""
    import anyio

    protocol, loop = VARIANTS[variant]
    exit_when_parent_goes()
    if loop == "trio":
        anyio.run(_serve, protocol, backend="trio")
    else:
        anyio.run(_serve, protocol, backend="asyncio", backend_options={"use_uvloop": loop == "uvloop"})


# -- echo client -------------------------------------------------------------------


class ClientError(RuntimeError):
    """The server lost, corrupted or reordered a reply."""


class Wire:
    """What the client knows of one protocol, written with ``struct`` from
    the wire layout rather than with ``sota_xprotocol``: request ``i`` is the
    golden request with id ``i``, and the reply to it must carry id ``i``.

    ``scan`` walks the complete replies in a buffer by their headers. It
    checks every reply's id and status (ids are in order: one connection,
    answered in order) and every ``SPOT_CHECK_EVERY``-th and the last in full.
    """

    header_size = 0

    def __init__(self, template: bytes, id_offset: int, id_format: str) -> None:
        self._pack_id = struct.Struct(id_format).pack
        self._head = template[:id_offset]
        self._tail = template[id_offset + struct.calcsize(id_format) :]

    def requests(self, first_id: int, count: int) -> bytes:
        """Requests ``first_id`` .. ``first_id + count - 1``, concatenated."""
        head, tail, pack = self._head, self._tail, self._pack_id
        return b"".join([head + pack(i) + tail for i in range(first_id, first_id + count)])

    def expected(self, request_id: int) -> bytes:
        """The exact reply to request ``request_id``."""
        raise NotImplementedError

    def reply_at(self, buf: bytes, pos: int) -> tuple[int, int]:
        """(request id, total size) of the reply at ``pos``; the header must be
        there. Raises ClientError if the header is not an OK reply."""
        raise NotImplementedError

    def scan(self, buf: bytes, next_id: int, last_id: int) -> tuple[int, int]:
        """(bytes used, replies) for the complete replies at the start of
        ``buf``, the first of which must answer ``next_id``. Each iteration
        consumes at least a header, so the loop ends."""
        pos, end, count, header = 0, len(buf), 0, self.header_size
        while end - pos >= header:
            request_id, size = self.reply_at(buf, pos)
            if end - pos < size:
                break
            expect = next_id + count
            if request_id != expect:
                raise ClientError(f"reply for id {request_id}, expected {expect}")
            if (expect % SPOT_CHECK_EVERY == 0 or expect == last_id) and buf[pos : pos + size] != self.expected(expect):
                raise ClientError(f"reply {expect} is {buf[pos : pos + size][:64].hex()}, expected otherwise")
            pos += size
            count += 1
        return pos, count


class BoltWire(Wire):
    """Bolt v1: the echo answers RPC_RESPONSE, SUCCESS, with the request's
    class name and content and no header map."""

    header_size = 20
    _REQUEST = struct.Struct(">BBHBIBiHHI")  # 22 bytes
    _REPLY = struct.Struct(">BBHBIBHHHI")  # 20 bytes

    def __init__(self, template: bytes) -> None:
        super().__init__(template, 5, ">I")
        _, _, _, self._ver2, _, self._codec, _, class_len, header_len, content_len = self._REQUEST.unpack_from(template)
        body = 22 + class_len
        self._class_name = template[22:body]
        self._content = template[body + header_len : body + header_len + content_len]

    def expected(self, request_id: int) -> bytes:
        head = self._REPLY.pack(
            1, 0, 2, self._ver2, request_id, self._codec, 0, len(self._class_name), 0, len(self._content)
        )
        return head + self._class_name + self._content

    def reply_at(self, buf: bytes, pos: int) -> tuple[int, int]:
        proto, kind, cmdcode, _, request_id, _, status, class_len, header_len, content_len = self._REPLY.unpack_from(
            buf, pos
        )
        if proto != 1 or kind != 0 or cmdcode != 2 or status != 0:
            raise ClientError(f"not a bolt v1 SUCCESS response: {buf[pos : pos + 20].hex()}")
        return request_id, 20 + class_len + header_len + content_len


class DubboWire(Wire):
    """Dubbo: the echo must answer exactly what the real provider answered in
    the capture (status OK, the value ``"hello"``), with the request's id."""

    header_size = 16
    _HEADER = struct.Struct(">2sBBqi")

    def __init__(self, template: bytes, reply: bytes) -> None:
        super().__init__(template, 4, ">q")
        self._reply_head, self._reply_tail = reply[:4], reply[12:]

    def expected(self, request_id: int) -> bytes:
        return self._reply_head + struct.pack(">q", request_id) + self._reply_tail

    def reply_at(self, buf: bytes, pos: int) -> tuple[int, int]:
        magic, flag, status, request_id, body_len = self._HEADER.unpack_from(buf, pos)
        if magic != b"\xda\xbb" or flag & 0xE0 or status != 20 or body_len < 0:
            raise ClientError(f"not a dubbo OK response: {buf[pos : pos + 16].hex()}")
        return request_id, 16 + body_len


def wire_for(protocol: str) -> Wire:
    if protocol == "bolt":
        return BoltWire(bolt_request())
    request, reply = dubbo_pair()
    return DubboWire(request, reply)


@attrs.frozen
class Workload:
    """How the client talks: the same for every variant of a run."""

    messages: int
    window: int
    warmup: int


async def _exchange(sock: socket.socket, wire: Wire, first_id: int, n: int, window: int) -> None:
    """Requests ``first_id`` .. ``first_id + n - 1`` keeping up to ``window``
    unanswered: whenever fewer are, send enough to fill it again in one write,
    else receive and count the replies by their headers.

    Every iteration sends (at most ``n`` times in all) or receives bytes
    (EOF raises), so the loop ends; the caller bounds it in time.
    """
    loop = asyncio.get_running_loop()
    sent = received = 0
    last_id = first_id + n - 1
    rest = b""
    while received < n:
        if sent < n and sent - received < window:
            count = min(window - (sent - received), n - sent)
            await loop.sock_sendall(sock, wire.requests(first_id + sent, count))
            sent += count
            continue
        data = await loop.sock_recv(sock, RECV_SIZE)
        if not data:
            raise ClientError(f"server closed after {received} of {n} replies")
        buf = rest + data if rest else data
        used, count = wire.scan(buf, first_id + received, last_id)
        received += count
        if received > sent:
            raise ClientError(f"{received} replies to {sent} requests")
        rest = buf[used:]
    if rest:
        raise ClientError(f"{len(rest)} bytes after the last reply")


async def _client(port: int, protocol: str, work: Workload, timeout: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    wire = wire_for(protocol)
    # A client whose parent died would otherwise wait for GO forever.
    go = threading.Event()
    exit_when_parent_goes(go)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
        if work.warmup:
            # Untimed: buffer growth and code paths on both sides. Ids go on
            # from here, so a stale warm-up reply would fail the check.
            await asyncio.wait_for(_exchange(sock, wire, 1, work.warmup, work.window), timeout)
        print("READY", flush=True)
        if not await loop.run_in_executor(None, go.wait, timeout):
            raise ClientError(f"no GO from the parent within {timeout:.0f}s")
        cpu0 = os.times()
        start = time.perf_counter()
        await asyncio.wait_for(_exchange(sock, wire, 1 + work.warmup, work.messages, work.window), timeout)
        wall = time.perf_counter() - start
        cpu1 = os.times()
    finally:
        sock.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"wall": wall, "client_cpu": cpu, "messages": float(work.messages)}


def run_client(variant: str, port: int, work: Workload, timeout: float) -> None:
    """Child entry point for ``--client``: one timed run, one JSON line out."""
    result = asyncio.run(_client(port, VARIANTS[variant][0], work, timeout))
    print(json.dumps(result), flush=True)


# -- echo orchestration ------------------------------------------------------------


@attrs.frozen
class Sample(ServerCpu):
    """One echo run of one variant."""

    variant: str
    rep: int
    wall: float
    cpu_user: float
    cpu_sys: float
    client_cpu: float
    messages: int

    @property
    def client_busy(self) -> float:
        """Client CPU over its wall time: near 1.0 means the client, not the
        server, may be setting the pace."""
        return self.client_cpu / self.wall


async def measure(variant: str, rep: int, work: Workload, timeout: float) -> Sample:
    """Start a server, run one client against it, return the numbers; always kill both."""
    server = await spawn(SCRIPT, ["--serve", variant])
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
                variant,
                "--port",
                port,
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
        result, cpu_user, cpu_sys = await run_timed(client, server.pid, timeout, f"client of {variant}")
        if server.returncode is not None:
            raise RuntimeError(f"server {variant} died during the run (code {server.returncode})")
        return Sample(
            variant, rep, float(result["wall"]), cpu_user, cpu_sys, float(result["client_cpu"]), work.messages
        )
    finally:
        if client is not None:
            await stop(client)
        await stop(server)


async def run_echo(variants: Sequence[str], reps: int, work: Workload, timeout: float) -> list[Sample]:
    """Every variant ``reps`` times, round-robin, rotating the order each round
    so that no variant always runs first (or right after the same neighbour)."""
    samples: list[Sample] = []
    for rep in range(reps):
        shift = rep % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            sample = await measure(variant, rep, work, timeout)
            samples.append(sample)
            print(
                f"rep {rep + 1}/{reps} echo {variant:13} {sample.msgs_per_s:>9,.0f} req/s, "
                f"{sample.cpu_us_per_msg:6.2f} us/req server CPU, server busy {sample.busy:4.0%}, "
                f"client busy {sample.client_busy:4.0%}",
                file=sys.stderr,
                flush=True,
            )
    return samples


# -- report --------------------------------------------------------------------------


def _decode_rows(samples: Sequence[DecodeSample], cases: Sequence[CodecCase]) -> list[str]:
    rows = [
        "| case | frame bytes | frames per buffer | frames/s, median | min - max | us/frame | CPU us/frame | MB/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in cases:
        mine = [s for s in samples if s.case == case.name]
        rate = [s.frames_per_s for s in mine]
        median = statistics.median(rate)
        rows.append(
            f"| {case.name} | {case.frame_size} | {case.frames:,} | {median:,.0f} | {format_range(rate, ',.0f')} "
            f"| {1e6 / median:.2f} | {statistics.median(s.cpu_us_per_frame for s in mine):.2f} "
            f"| {median * case.frame_size / 1e6:,.0f} |"
        )
    return rows


def _echo_rows(samples: Sequence[Sample], variants: Sequence[str]) -> list[str]:
    rows = [
        "| variant | requests/s, median | min - max | server CPU us/req, median | min - max | user / sys us/req "
        "| server busy | client busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        mine = [s for s in samples if s.variant == v]
        rate = [s.msgs_per_s for s in mine]
        cpu = [s.cpu_us_per_msg for s in mine]
        user = statistics.median(s.cpu_user / s.messages * 1e6 for s in mine)
        system = statistics.median(s.cpu_sys / s.messages * 1e6 for s in mine)
        rows.append(
            f"| {v} | {statistics.median(rate):,.0f} | {format_range(rate, ',.0f')} | {statistics.median(cpu):.2f} "
            f"| {format_range(cpu, '.2f')} | {user:.2f} / {system:.2f} | {statistics.median(s.busy for s in mine):.0%} "
            f"| {statistics.median(s.client_busy for s in mine):.0%} |"
        )
    return rows


def _decode_shares(decode: Sequence[DecodeSample], echo: Sequence[Sample], variants: Sequence[str]) -> list[str]:
    """How much of an echo request's server CPU the decoding alone would take:
    whether the codec or the I/O layer is the place to look for speed."""
    lines: list[str] = []
    for v in variants:
        case = DECODE_CASE[VARIANTS[v][0]]
        per_frame = [s.cpu_us_per_frame for s in decode if s.case == case]
        per_req = [s.cpu_us_per_msg for s in echo if s.variant == v]
        if per_frame and per_req:
            a, b = statistics.median(per_frame), statistics.median(per_req)
            if b > 0:
                lines.append(f"- {v}: decoding (`{case}`) {a:.2f} of {b:.2f} us/req = {a / b:.0%}")
            else:  # a run shorter than one CPU tick (--quick on a fast server)
                lines.append(f"- {v}: decoding (`{case}`) {a:.2f} us/req; the echo's CPU was too short to count")
    return lines


#: The library code this benchmark measures, for the report's source line.
SOURCE = ("sota_dispatch", "protocols/xprotocol/sota_xprotocol")
TITLE = "bolt and dubbo (sota_xprotocol): decode throughput and echo over one connection"
#: The decode case whose cost an echo request of each protocol pays.
DECODE_CASE = {"bolt": "bolt-anthunder", "dubbo": "dubbo-call"}


def panels(
    decode: Sequence[DecodeSample], cases: Sequence[CodecCase], echo: Sequence[Sample], variants: Sequence[str]
) -> list[Panel]:
    """The figure: frames decoded per second per case; echo requests per
    second and server CPU per request per protocol and event loop."""
    frames: list[Bar] = []
    for case in cases:
        rate = [d.frames_per_s for d in decode if d.case == case.name]
        median = statistics.median(rate)
        frames.append(
            Bar(case.name.replace("+", "\n+"), "decode", median, min(rate), max(rate), f"{1e6 / median:.2f} µs/frame")
        )
    rates: list[Bar] = []
    cpus: list[Bar] = []
    for v in variants:
        protocol, loop = VARIANTS[v]
        mine = [s for s in echo if s.variant == v]
        rate = [s.msgs_per_s for s in mine]
        cpu = [s.cpu_us_per_msg for s in mine]
        per_frame = [d.cpu_us_per_frame for d in decode if d.case == DECODE_CASE[protocol]]
        spent = statistics.median(cpu)  # 0: fewer than one CPU tick (--quick)
        share = f"decode {statistics.median(per_frame) / spent:.0%}" if per_frame and spent > 0 else ""
        rates.append(Bar(protocol, loop, statistics.median(rate), min(rate), max(rate)))
        cpus.append(Bar(protocol, loop, statistics.median(cpu), min(cpu), max(cpu), share))
    return [
        Panel(
            "Decode throughput, one process, no I/O: median and min-max (label: wall time per frame)",
            "frames/s",
            frames,
        ),
        Panel("Echo over one connection: requests/s, median and min-max (higher is better)", "requests/s", rates),
        Panel(
            "Echo: server CPU per request, median and min-max (lower is better; label: decoding's share of it)",
            "µs/request",
            cpus,
        ),
    ]


def report(
    decode: Sequence[DecodeSample],
    cases: Sequence[CodecCase],
    echo: Sequence[Sample],
    variants: Sequence[str],
    work: Workload,
    reps: int,
    target: float,
    buffer_bytes: int,
    command: str,
    figure: Sequence[str] = (),
) -> str:
    """The markdown written to XPROTOCOL_RESULTS.md and printed; ``figure``:
    the lines that embed its plot."""
    out = [
        *report_head("xprotocol benchmark: bolt and dubbo", "bench/xprotocol_bench.py", command),
        *machine_lines(
            f"anyio {version('anyio')}, trio {version('trio')}, uvloop {version('uvloop')}, "
            f"sota-dispatch {version('sota-dispatch')}, sota-xprotocol {version('sota-xprotocol')}"
        ),
        source_line(SOURCE),
        "- event loops: each echo variant names its own: `*-asyncio` is asyncio's own loop (uvloop not used), "
        "`*-uvloop` asyncio on uvloop, `*-trio` anyio's trio backend",
        "",
        "## Workload",
        "",
    ]
    if cases:
        out += [
            f"- decode: per case, one buffer of about {buffer_bytes // 1024:,} KiB of identical frames "
            f"(request ids 0, 1, 2, ...) cut into {CHUNK // 1024} KiB chunks ahead of time, fed to a fresh "
            "decoder per pass in this process, no I/O; every pass must decode every frame. Repetitions per "
            f"case: {reps}, of about {target:g} s each (passes fixed by an untimed first pass), round-robin over "
            "the cases; frames/s = frames / wall time (perf_counter), CPU us/frame from process_time; "
            "garbage collection on, as in a server",
        ]
    if variants:
        out += [
            f"- echo: one TCP connection on 127.0.0.1; the client (its own process, plain asyncio sockets) "
            f"keeps {work.window} requests in flight (whenever fewer are unanswered it sends enough to fill "
            f"the window again in one write) and counts the replies by parsing their headers; "
            f"{work.messages:,} timed requests per run after {work.warmup:,} untimed ones. Every reply's id "
            f"(in order) and status is checked, every {SPOT_CHECK_EVERY}th and the last compared in full",
            f"- requests: bolt, anthunder's captured request ({len(bolt_request())} B; reply "
            f"{len(wire_for('bolt').expected(0))} B: SUCCESS with its class name and body); dubbo, "
            f'dubbo-ssl-python\'s captured `echo("hello")` call ({len(dubbo_pair()[0])} B; the reply must be '
            f"the real provider's captured bytes, {len(dubbo_pair()[1])} B); ids rewritten per request",
            f"- servers: `sota_dispatch.Server(BoltEchoDispatcher)` / `(DubboEchoDispatcher)` under anyio on "
            f"asyncio (no uvloop), uvloop or trio; a fresh server process per run; runs per variant: {reps}, "
            "round-robin with the order rotating each round",
            "- server CPU = utime+stime of the server process (/proc/<pid>/stat) over the timed part only; "
            "requests/s = requests / client wall time; server busy = server CPU / client wall time; client "
            "busy = the client's own CPU / its wall time",
            resolution_line(echo),
        ]
    out += ["", "## Results", "", *figure]
    if cases:
        out += [
            "### Decode throughput (frames/s, one process, no I/O)",
            "",
            *_decode_rows(decode, cases),
            "",
            *(f"- `{case.name}`: {case.what}" for case in cases),
            "",
        ]
    if variants:
        out += [
            f"### Echo over one connection, {work.window} in flight",
            "",
            *_echo_rows(echo, variants),
            "",
        ]
        shares = _decode_shares(decode, echo, variants)
        if shares:
            out += [
                "Decoding alone, as a share of the server CPU per echo request (medians; the rest is the "
                "reply's encoding, the dispatcher, anyio and the sockets):",
                "",
                *shares,
                "",
            ]
    out += [
        "Read with care: one run's numbers compare with each other, not with another machine's. On a 2-core "
        "machine the client and the server each take a core; server busy near 100% means the server set the "
        "pace. CPU time is counted in 10 ms ticks, so `--quick` runs are useless for comparisons.",
        "",
        "## Every run",
        "",
    ]
    if cases:
        out += [
            "| round | decode case | frames | wall s | CPU s | frames/s |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        names = [c.name for c in cases]
        for d in sorted(decode, key=lambda d: (d.rep, names.index(d.case))):
            out.append(
                f"| {d.rep + 1} | {d.case} | {d.frames:,} | {d.wall:.3f} | {d.cpu:.3f} | {d.frames_per_s:,.0f} |"
            )
        out.append("")
    if variants:
        out += [
            "| round | echo variant | requests/s | server CPU us/req | wall s | server CPU s (user + sys) "
            "| client CPU s |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in sorted(echo, key=lambda s: (s.rep, variants.index(s.variant))):
            out.append(
                f"| {s.rep + 1} | {s.variant} | {s.msgs_per_s:,.0f} | {s.cpu_us_per_msg:.2f} | {s.wall:.3f} "
                f"| {s.cpu_user:.2f} + {s.cpu_sys:.2f} | {s.client_cpu:.2f} |"
            )
    return "\n".join(out) + "\n"


# -- command line ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="bolt and dubbo: frames decoded per second per codec, and echo requests per second over one "
        "connection with a window in flight (see bench/README.md).",
    )
    p.add_argument("--messages", type=positive_int, help="timed echo requests per run (default 100000)")
    p.add_argument("--reps", type=positive_int, help="repetitions per decode case and echo variant (default 5)")
    p.add_argument(
        "--variants",
        help=f"echo variants: comma-separated subset of {', '.join(VARIANTS)}, or 'none' (default: all; uvloop "
        "and trio ones if installed)",
    )
    p.add_argument("--codecs", help="decode cases: comma-separated subset, or 'none' (default: all)")
    p.add_argument(
        "--output",
        help="markdown report path, '-' for none (default: XPROTOCOL_RESULTS.md next to this script; none with "
        "--quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 20000 requests, short decodes, 1 rep; no report")
    p.add_argument("--window", type=positive_int, default=100, help="echo requests kept in flight (default 100)")
    p.add_argument("--warmup", type=int, default=None, help="untimed echo requests first (default 5000)")
    p.add_argument("--decode-time", type=float, default=None, help="seconds per decode repetition (default 0.5)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per client run (default scales)")
    # Child roles, used by the parent only.
    p.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--client", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _selection(parser: argparse.ArgumentParser, text: str | None, known: Sequence[str]) -> list[str]:
    """A ``--variants``/``--codecs`` value: all of ``known`` if absent, none for 'none'."""
    if text is None:
        return list(known)
    if text.strip() == "none":
        return []
    return parse_variants(parser, text, known)


def main(argv: Sequence[str] | None = None) -> int:
    """Parent or child, by flags; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    messages = args.messages or (20_000 if args.quick else 100_000)
    reps = args.reps or (1 if args.quick else 5)
    warmup = (500 if args.quick else 5_000) if args.warmup is None else args.warmup
    target = args.decode_time or (0.05 if args.quick else 0.5)
    # Generous: a server ten times slower than expected still finishes.
    timeout = args.timeout or 60.0 + messages / 2000
    if warmup < 0:
        parser.error("--warmup must not be negative")
    if target <= 0 or target > 10:
        parser.error("--decode-time must be in (0, 10] seconds")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    work = Workload(messages, args.window, warmup)

    if args.serve:
        run_server(args.serve)
        return 0
    if args.client:
        try:
            run_client(args.client, args.port, work, timeout)
        except ClientError as exc:
            print(f"client: {exc}", file=sys.stderr)
            return 1
        return 0

    buffer_bytes = DECODE_BUFFER // 8 if args.quick else DECODE_BUFFER
    all_cases = codec_cases(buffer_bytes)
    cases = [all_cases[name] for name in _selection(parser, args.codecs, list(all_cases))]
    if args.variants is None:
        variants = [v for v in VARIANTS if _available(v)]
    else:
        variants = _selection(parser, args.variants, list(VARIANTS))
        missing = [v for v in variants if not _available(v)]
        if missing:
            parser.error(f"variants {missing} need a package that is not installed (uvloop or trio)")
    if not cases and not variants:
        parser.error("nothing to measure: --codecs none and --variants none")

    output = args.output if args.output is not None else ("-" if args.quick else str(DEFAULT_OUTPUT))
    command = "python " + shlex.join(sys.argv if argv is None else ["bench/xprotocol_bench.py", *argv])
    started = time.monotonic()
    try:
        decode = run_decode(cases, reps, target) if cases else []
        echo = asyncio.run(run_echo(variants, reps, work, timeout)) if variants else []
    except (RuntimeError, OSError, ValueError, SotaError) as exc:
        # A decode pass came out wrong, or a child failed, timed out or answered wrongly (its stderr is above).
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figure = figure_lines(output, TITLE, panels(decode, cases, echo, variants), SOURCE)
    publish(report(decode, cases, echo, variants, work, reps, target, buffer_bytes, command, figure), output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
