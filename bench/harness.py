"""What the benchmark scripts share: child processes, CPU readings, report pieces, flag checks.

``line_bench.py``, ``zmtp_bench.py`` and ``xprotocol_bench.py`` (its echo
part) measure different servers the same way: the parent starts a server
child and a client child of the same script, waits for the server's ``PORT``
line and the client's ``READY`` line, reads the server's CPU time from
``/proc`` around the client's timed part (``GO`` to its JSON result line),
and always kills both. Keeping that machinery here means a fix to how
children are started, read, stopped or measured reaches every benchmark, so
their numbers stay comparable in method.

The scripts are run as ``python bench/<script>.py``, which puts ``bench/`` on
``sys.path``: they import from ``harness`` as a top-level module (mypy, given
the ``bench`` folder, resolves it the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_TIMEOUT",
    "HOST",
    "START_TIMEOUT",
    "ServerCpu",
    "announce",
    "cpu_model",
    "differing_sources",
    "exit_when_parent_goes",
    "format_range",
    "git_commit",
    "machine_lines",
    "parse_variants",
    "positive_int",
    "proc_cpu",
    "publish",
    "read_line",
    "report_head",
    "resolution_line",
    "run_timed",
    "source_line",
    "spawn",
    "stop",
    "version",
    "wait_exit",
    "wakeup_text",
]

#: Loopback only: the benchmarks must never listen on or reach another host.
HOST = "127.0.0.1"
#: Parent-side bounds on each child's start-up and shutdown, seconds, so that
#: a hung child fails the run instead of hanging it.
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


# -- command line ------------------------------------------------------------------


#: The line a ``serve`` child logs once it listens.
_LISTENING = re.compile(r"listening on \S+?:(\d+)\b")
#: The tasks reading the ``serve`` children's logs.
_LOG_READERS: set[asyncio.Future[None]] = set()
#: bench/ (the ``serve`` children's working directory).
_BENCH_DIR = Path(__file__).resolve().parent


def positive_int(text: str) -> int:
    """argparse ``type`` for counts, so that 0 or a negative count is a usage
    error up front rather than a division by zero or an empty run later."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


# argparse names the type function in its "invalid <name> value" error; keep the
# wording the scripts printed when each had its own ``_positive``.
positive_int.__name__ = "_positive"


def parse_variants(parser: argparse.ArgumentParser, text: str, known: Iterable[str]) -> list[str]:
    """The ``--variants`` list: known names only (else a usage error that lists
    them), duplicates dropped in order, so no variant is measured twice a round."""
    names = list(known)
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in names]
    if unknown or not variants:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(names)}")
    return list(dict.fromkeys(variants))


# -- child side ----------------------------------------------------------------------


def announce(port: int, *, pid: bool = False) -> None:
    """Tell the parent we listen (``PORT <n>``); it waits for this line instead
    of sleeping.

    With ``pid``, the line also carries this process's pid (``PORT <n> <pid>``)
    for the CPU readings: when a profiler wraps the server, the parent's child
    is the profiler, not the server.
    """
    sys.stdout.write(f"PORT {port} {os.getpid()}\n" if pid else f"PORT {port}\n")
    sys.stdout.flush()


def exit_when_parent_goes(go: threading.Event | None = None) -> None:
    """Exit when stdin closes, so a child never outlives a killed parent.

    A thread blocked in read() holds no GIL and costs no CPU, and it works the
    same under blocking pyzmq calls, asyncio, uvloop and trio. It reads the
    file descriptor, not ``sys.stdin``, whose lock it would hold while blocked
    and so abort the interpreter's normal exit. If ``go`` is given, it is set
    when the parent's ``GO`` line arrives (a client's start signal), since this
    thread owns stdin.
    """

    def watch() -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(0, 4096):  # ends at EOF; the parent writes one short line
                if go is not None and not go.is_set():
                    seen = (seen + chunk)[:64]
                    if b"\n" in seen and seen.partition(b"\n")[0].strip() == b"GO":
                        go.set()
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# -- parent side: children -----------------------------------------------------------


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc.

    Read from outside, so the server pays nothing for being measured.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces and parentheses; the
    # fields after the last ')' start with field 3, so utime (14) and
    # stime (15) are at 11 and 12.
    fields = stat.rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


async def spawn(script: Path, args: Sequence[str], wrapper: Sequence[str] = ()) -> asyncio.subprocess.Process:
    """``script`` in a child process with the same interpreter, optionally under
    ``wrapper`` (a profiler). Its stdin is a pipe so that the parent can signal
    it and so that closing it ends the child; its stdout is read line by line."""
    return await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        str(script),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_line(proc: asyncio.subprocess.Process, timeout: float, what: str) -> str:
    """The child's next stdout line, stripped; a timeout or an early exit is a
    ``RuntimeError`` naming ``what``, so a broken child fails the run instead of
    hanging it."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{what}: no answer within {timeout:.0f}s") from None
    if not line:
        code = await wait_exit(proc)
        raise RuntimeError(f"{what}: exited with code {code} (see its stderr above)")
    return line.decode().strip()


async def start_serve(args: Sequence[str], timeout: float, what: str) -> tuple[asyncio.subprocess.Process, int]:
    """``python -m sota_dispatch.serve ARGS`` and the port it logs ("listening
    on HOST:PORT") within ``timeout`` seconds; its log is read on from then
    on, so that a full pipe never blocks it.

    It runs in bench/, not the checkout's root: ``-m`` puts the working
    directory first on sys.path, and a checkout's sources would shadow an
    installed compiled build.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sota_dispatch.serve",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=_BENCH_DIR,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = await asyncio.wait_for(proc.stderr.readline(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            proc.kill()
            raise RuntimeError(f"{what}: not listening within {timeout:.0f}s") from None
        if not line:
            raise RuntimeError(f"{what}: exited before listening")
        found = _LISTENING.search(line.decode(errors="replace"))
        if found:
            _LOG_READERS.add(asyncio.ensure_future(_read_on(proc.stderr)))
            return proc, int(found.group(1))


async def _read_on(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def wait_exit(proc: asyncio.subprocess.Process) -> int | None:
    """The child's exit code, or None if it does not exit within ``EXIT_TIMEOUT``."""
    with contextlib.suppress(asyncio.TimeoutError):
        return await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT)
    return None


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Kill and reap a child; safe to call twice, never raises for a dead one."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await wait_exit(proc)


async def run_timed(
    client: asyncio.subprocess.Process, server_pid: int, timeout: float, what: str
) -> tuple[dict[str, Any], float, float]:
    """The timed part of one measurement: (the client's JSON result, server user
    CPU seconds, server system CPU seconds).

    Waits for the client's ``READY`` (connected and warmed up), reads the
    server's CPU, sends ``GO``, waits for the result line and reads the CPU
    again, so start-up, imports, connection set-up and warm-up stay out of the
    numbers. The client must then exit with code 0.
    """
    ready = await read_line(client, START_TIMEOUT + timeout, what)
    if ready != "READY":
        raise RuntimeError(f"{what}: unexpected line {ready!r}")
    user0, sys0 = proc_cpu(server_pid)
    assert client.stdin is not None
    client.stdin.write(b"GO\n")
    await client.stdin.drain()
    result: dict[str, Any] = json.loads(await read_line(client, timeout + 5.0, what))
    user1, sys1 = proc_cpu(server_pid)
    code = await wait_exit(client)
    if code != 0:
        raise RuntimeError(f"{what}: exit code {code}")
    return result, user1 - user0, sys1 - sys0


class ServerCpu:
    """Mixin for a measurement (an attrs class with these fields): the numbers
    both reports derive from the server's CPU and the client's wall time."""

    __slots__ = ()

    wall: float
    cpu_user: float
    cpu_sys: float
    messages: int

    @property
    def cpu_us_per_msg(self) -> float:
        return (self.cpu_user + self.cpu_sys) / self.messages * 1e6

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.wall

    @property
    def busy(self) -> float:
        """Server CPU over client wall time: near 1.0 means the server is the bottleneck."""
        return (self.cpu_user + self.cpu_sys) / self.wall


# -- report ----------------------------------------------------------------------------


def report_head(title: str, script: str, command: str) -> list[str]:
    """A report's opening markdown, up to the ``## Machine`` heading: what
    wrote it, the warning that only ratios from one run compare, and the exact
    ``command`` that reproduces it (``script`` as run from the repository root)."""
    return [
        f"# {title}",
        "",
        f"Written by `{script}` (do not edit by hand; rerun the command below). "
        "Numbers are noisy and machine-dependent: compare only ratios from the same run, "
        "never absolute numbers across runs or machines.",
        "",
        "## Command",
        "",
        "```sh",
        command,
        "```",
        "",
        "## Machine",
        "",
    ]


def version(dist: str) -> str:
    """An installed distribution's version, or ``not installed`` (optional extras)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it (x86 and ARM spell the key
    differently), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(versions: str) -> list[str]:
    """What the numbers were measured on; ratios only mean something per machine.

    ``versions`` is the last line's text: the packages that matter to the
    calling benchmark and their versions. The build line says whether the
    compiled (mypyc) modules or the pure-Python ones ran.
    """
    from sota_dispatch import build_info

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "n/a"
    return [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- platform: {platform.platform()}",
        f"- CPU: {cpu_model()}",
        f"- cores: {os.cpu_count()} logical, {usable} usable by this process",
        f"- load average at the end: {load}",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- build: {build_info().describe()}",
        f"- wake-ups: {wakeup_text()}",
        f"- {versions}",
    ]


def wakeup_text() -> str:
    """What one wake-up costs here (``bench/wakeup.py``, run as a child: a
    fresh interpreter forks safely); a failed measurement says why instead."""
    try:
        result = subprocess.run(
            [sys.executable, str(_BENCH_DIR / "wakeup.py"), "--json"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=True,
        )
        figures = json.loads(result.stdout)
        across, same = figures["across_us"], figures["same_us"]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return f"not measured ({type(exc).__name__})"
    how = "bench/wakeup.py: two processes bounce a byte"
    if across is None:
        return f"one costs {same:.1f} µs of CPU on one CPU, the one this process may use ({how})"
    return f"one costs {across:.1f} µs of CPU across two CPUs, {same:.1f} µs on one ({how})"


def _source(paths: Sequence[str]) -> tuple[str, list[str]] | None:
    """(HEAD's short commit, the changed files among ``paths``), or None
    outside a git checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--", *paths).splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return head, [line[3:] for line in changed]


#: The library's packages and where their sources are in the checkout.
_PACKAGES: dict[str, str] = {
    "sota_dispatch": "sota_dispatch",
    "sota_simple_line": "protocols/simple_line/sota_simple_line",
    "sota_xprotocol": "protocols/xprotocol/sota_xprotocol",
    "sota_zmtp": "protocols/zmtp/sota_zmtp",
}


def differing_sources(installed: Path, checkout: Path) -> list[str]:
    """The checkout's ``.py`` files (relative to ``checkout``) that
    ``installed`` lacks or holds with other bytes."""
    differ = []
    for source in sorted(checkout.rglob("*.py")):
        relative = source.relative_to(checkout)
        copy = installed / relative
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            differ.append(relative.as_posix())
    return differ


def _installed_elsewhere(paths: Sequence[str]) -> list[str]:
    """Files of the packages under ``paths`` whose installed copy (a compiled
    wheel keeps each module's ``.py`` beside its extension) is not the
    checkout's: the wheel was built from other code than the commit names."""
    root = Path(__file__).resolve().parent.parent
    differ: list[str] = []
    for name, where in _PACKAGES.items():
        if not any(where.startswith(path.rstrip("/")) or path.startswith(where) for path in paths):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        installed = Path(next(iter(spec.submodule_search_locations))).resolve()
        checkout = (root / where).resolve()
        if installed != checkout and checkout.is_dir():
            differ += [f"{name}/{file}" for file in differing_sources(installed, checkout)]
    return differ


def source_line(paths: Sequence[str]) -> str:
    """Which code was measured: the commit, and whether the library ``paths``
    (relative to the repository root) had uncommitted changes, since the
    numbers then belong to no commit; and whether the installed packages
    (the compiled wheels) were built from other sources than these."""
    state = _source(paths)
    if state is None:
        return "- source: not a git checkout"
    head, changed = state
    if not changed:
        line = f"- source: git commit {head}, library files unmodified"
    else:
        line = f"- source: git commit {head} WITH UNCOMMITTED CHANGES to {', '.join(changed)}"
    elsewhere = _installed_elsewhere(paths)
    if elsewhere:
        shown = ", ".join(elsewhere[:5]) + (f" and {len(elsewhere) - 5} more" if len(elsewhere) > 5 else "")
        line += f"; BUT THE INSTALLED BUILD WAS MADE FROM OTHER SOURCES: {shown} differ from this checkout"
    return line


def git_commit(paths: Sequence[str]) -> str:
    """``source_line`` in a few words, for a plot's title."""
    state = _source(paths)
    if state is None:
        return "not a git checkout"
    head, changed = state
    title = f"commit {head}" + (" + uncommitted changes" if changed else "")
    return title + (" (installed build from other sources)" if _installed_elsewhere(paths) else "")


def format_range(values: Sequence[float], fmt: str) -> str:
    """``min - max`` of ``values``, each formatted with ``fmt``: the spread
    shown next to every median."""
    return f"{format(min(values), fmt)} - {format(max(values), fmt)}"


def resolution_line(samples: Iterable[ServerCpu]) -> str:
    """How much one clock tick weighs in the smallest run: the CPU numbers'
    quantisation, which makes --quick runs useless for comparisons."""
    ticks = os.sysconf("SC_CLK_TCK")
    fewest = min(round((s.cpu_user + s.cpu_sys) * ticks) for s in samples)
    share = f"{1 / fewest:.1%}" if fewest else "all"
    return (
        f"- CPU clock resolution: 1 tick = {1000 / ticks:g} ms; the smallest run used {fewest} ticks, "
        f"so one tick is {share} of it"
    )


def publish(text: str, output: str, started: float) -> None:
    """Print the report, how long the run took (since ``started``, a
    ``time.monotonic()`` reading), and unless ``output`` is ``-`` write it there.

    Written to a temporary file and renamed, so an interrupted write never
    leaves a truncated report in place of the last good one.
    """
    elapsed = time.monotonic() - started
    print(text)
    print(f"(took {elapsed:.0f}s)", file=sys.stderr)
    if output != "-":
        path = Path(output)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}", file=sys.stderr)
