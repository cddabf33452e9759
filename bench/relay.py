"""A hop that does no work: bytes relayed between a client and a backend.

The baseline of ``proxy_bench.py``: what one more process between client and
backend costs on this machine before any proxy does any work (two more
socket hops, two more wake-ups, the scheduler sharing the cores with a third
process). Each accepted connection gets one connection to the target, and
the event loop hands whatever one side sends to the other (asyncio
protocols, uvloop when installed: no Python per byte, no parsing, no
batching of its own). Reading from one side pauses while the other side's
send buffer is full, so a slow reader bounds what it holds.

Run: ``python bench/relay.py HOST:PORT`` prints the address it listens on
(127.0.0.1, a free port) and relays until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast


class _Side(asyncio.Protocol):
    """One connection of a relayed pair: what it reads goes to ``peer``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # read before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def pause_writing(self) -> None:  # our peer sends faster than our socket takes
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    """An accepted connection: it connects its upstream when made."""

    def __init__(self, host: str, port: int, tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self.host, self.port, self.tasks = host, port, tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._connect())
        self.tasks.add(task)  # a task only weakly held by the loop could vanish
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(_Side, self.host, self.port)
        except OSError:
            self.transport.close()
            return
        assert upstream.transport is not None
        if self.transport.is_closing():  # the client left while we connected
            upstream.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        for data in self.early:
            upstream.transport.write(data)
        # What the upstream sent before we got here (a ZMTP peer greets at
        # once): lost, it left the client waiting for a greeting for good.
        for data in upstream.early:
            self.transport.write(data)
        self.early.clear()
        upstream.early.clear()
        self.transport.resume_reading()


async def serve(target: str) -> None:
    host, _, port = target.rpartition(":")
    tasks: set[asyncio.Task[None]] = set()
    server = await asyncio.get_running_loop().create_server(lambda: _Client(host, int(port), tasks), "127.0.0.1", 0)
    print(f"relaying on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def loop_name() -> str:
    """The event loop the relay runs on."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


@contextlib.contextmanager
def relay_process(target: str, timeout: float = 30.0) -> Iterator[str]:
    """Run a relay to ``target`` in a child process; yield its address."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)  # nothing buffered yet: select sees it
        line = process.stdout.readline() if ready else ""
        if not line.startswith("relaying on "):
            raise RuntimeError(f"the relay did not start (exit {process.poll()})")
        yield line.split()[-1]
    finally:
        process.kill()
        process.wait(timeout)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: relay.py HOST:PORT")
    if loop_name() == "uvloop":
        import uvloop

        uvloop.run(serve(sys.argv[1]))
    else:
        asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
