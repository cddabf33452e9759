"""``python -m sota_dispatch.serve`` as a child process, for tests against a real server."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

import attrs

__all__ = ["ServeProcess", "serve_process"]

T = TypeVar("T")


_LISTENING = re.compile(r"listening on (\S+)")


@attrs.define
class ServeProcess:
    """A ``python -m sota_dispatch.serve`` child process, bound and listening."""

    process: subprocess.Popen[str]
    #: The bound ``HOST:PORT`` from the "listening on" line.
    address: str
    #: Every stderr line so far (kept up to date by a reader thread).
    stderr_lines: list[str]
    _arrived: queue.Queue[str | None] = attrs.field(factory=queue.Queue, repr=False)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> str:
        """Block until a stderr line containing ``text`` arrives (one not seen
        by an earlier call) and return it; :class:`TimeoutError` otherwise.
        Blocking: from async code, run it with :func:`anyio.to_thread.run_sync`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no stderr line with {text!r} within {timeout}s") from None
            if line is None:
                raise TimeoutError(f"the process exited before a line with {text!r}")
            if text in line:
                return line

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def serve_process(
    args: Sequence[str],
    *,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """Run ``python -m sota_dispatch.serve ARGS`` until it logs "listening on".

    Pass ``--listen 127.0.0.1:0`` in ``args`` for a free port. The process is
    stopped (SIGTERM, then SIGKILL) when the block ends. Raises
    :class:`RuntimeError` with its stderr if it exits or stays silent instead.
    """
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sota_dispatch.serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    assert process.stderr is not None
    lines: list[str] = []
    # One thread reads stderr from the start and hands lines over a queue:
    # select() on a text pipe misses lines already in Python's buffer.
    arrived: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=collect_lines, args=(process.stderr, lines, arrived), daemon=True)
    reader.start()
    try:
        found = first_line(process, lines, arrived, _LISTENING.search, timeout, "serve", "a 'listening on' line")
        yield ServeProcess(process, found.group(1), lines, arrived)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)  # the pipe is at EOF once the process is gone
        process.stderr.close()


def first_line(
    process: subprocess.Popen[str],
    lines: list[str],
    arrived: queue.Queue[str | None],
    match: Callable[[str], T | None],
    timeout: float,
    what: str,
    wanted: str,
) -> T:
    """What ``match`` finds in the first line of ``process``'s output (as
    :func:`collect_lines` hands them over) that it finds anything in;
    :class:`RuntimeError` with the output if the process exits or stays
    silent for ``timeout`` seconds instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"{what}: no {wanted} within {timeout}s: {''.join(lines[-40:])}") from None
        if line is None:
            raise RuntimeError(f"{what} exited with {process.wait()}: {''.join(lines[-40:])}")
        found = match(line)
        if found is not None:
            return found


def collect_lines(stream: Iterable[str], lines: list[str], arrived: queue.Queue[str | None]) -> None:
    """Read a child's output to its end (in a thread of its own): each line
    into ``lines`` and onto ``arrived``, then None there."""
    for line in stream:
        lines.append(line)
        arrived.put(line)
    arrived.put(None)
