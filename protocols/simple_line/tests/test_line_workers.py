"""Worker processes and hot restart, as an operator runs them: real processes on 127.0.0.1.

``python -m sota_dispatch.serve --config F --workers N`` in front of a
simple_line service (another process); clients are anyio connections that
check every reply is the answer to their own request (``receive:{"c":
[client], "n": [number]}``). Each test runs the processes on the backend of
the test (asyncio, trio, uvloop).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from anyio.abc import ByteStream
from simple_line_support import admin_of, curl

from sota_dispatch import BufferedReader, build_info
from sota_dispatch.testing import ServeProcess, connect, serve_process

pytestmark = pytest.mark.anyio


def write_config(directory: Path, upstream: str, *, admin: bool = True) -> str:
    document: dict[str, Any] = {
        "listeners": [
            {"name": "lines", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "up"}]}
        ],
        "clusters": [{"name": "up", "endpoints": [upstream]}],
    }
    if admin:
        document["admin"] = {"address": "127.0.0.1:0"}
    path = directory / "proxy.json"
    path.write_text(json.dumps(document))
    return str(path)


@contextmanager
def upstream_service() -> Iterator[ServeProcess]:
    with serve_process(["--protocol", "simple_line", "--listen", "127.0.0.1:0"]) as process:
        yield process
        process.stop()


def expected(client: int, number: int) -> bytes:
    return f'receive:{{"c":["{client}"],"n":["{number}"]}}'.encode()


@attrs.define
class Tally:
    """What the clients saw."""

    answered: int = 0
    wrong: list[bytes] = attrs.Factory(list)
    refused: int = 0
    #: Connections that ended (EOF or reset) with a request unanswered.
    broken: int = 0
    connects: int = 0
    _progress: anyio.Event = attrs.Factory(anyio.Event)

    def check(self, line: bytes, client: int, number: int) -> None:
        if line == expected(client, number):
            self.answered += 1
            self._progress.set()
        else:
            self.wrong.append(line)

    async def wait_answered(self, count: int, timeout: float = 30.0) -> None:
        with anyio.fail_after(timeout):
            while self.answered < count:
                self._progress = anyio.Event()
                await self._progress.wait()


async def converse(address: str, client: int, count: int, tally: Tally, first: int = 0) -> bool:
    """One connection, ``count`` requests one after the other; False if it broke."""
    try:
        stream = await connect(address)
    except OSError:
        tally.refused += 1
        return False
    tally.connects += 1
    async with stream:
        reader = BufferedReader(stream)
        for number in range(first, first + count):
            if not await call(stream, reader, client, number, tally):
                return False
    return True


async def call(stream: ByteStream, reader: BufferedReader, client: int, number: int, tally: Tally) -> bool:
    """One request and its answer, checked; False if the connection broke."""
    try:
        await stream.send(f"c={client}&n={number}\r\n".encode())
        with anyio.fail_after(10):
            line = await reader.read_until(b"\r\n", max_bytes=4096)
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        tally.broken += 1
        return False
    tally.check(line, client, number)
    return True


async def get_json(admin: str, path: str) -> Any:
    status, body = await curl(admin + path)
    assert status == 200, body
    return json.loads(body)


async def metric(admin: str, name: str) -> float:
    """The sum of a metric's samples in ``/metrics``."""
    status, body = await curl(admin + "/metrics")
    assert status == 200, body
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.MULTILINE))


async def test_four_workers_share_the_port_and_survive_a_killed_worker(tmp_path: Path, backend_args: list[str]) -> None:
    with ExitStack() as stack:
        upstream = stack.enter_context(upstream_service())
        config = write_config(tmp_path, upstream.address)
        proxy = stack.enter_context(serve_process(["--config", config, "--workers", "4", *backend_args], timeout=60))
        admin = await admin_of(proxy)

        # 400 connections, 5 requests each: every one answered, to its sender.
        tally = Tally()
        async with anyio.create_task_group() as tg:
            for client in range(400):
                tg.start_soon(converse, proxy.address, client, 5, tally)
        assert (tally.answered, tally.wrong, tally.refused, tally.broken) == (2000, [], 0, 0)
        workers = (await get_json(admin, "/workers"))["workers"]
        shares = [w["connections_total"] for w in workers]
        print(f"connections per worker: {shares}")
        assert len(shares) == 4
        assert sum(shares) == 400
        assert all(share > 0 for share in shares), shares
        assert await metric(admin, "sota_downstream_requests_total") == 2000
        assert await metric(admin, "sota_downstream_connections_total") == 400
        assert await metric(admin, "sota_workers") == 4

        # 100 long-lived connections keep talking while one worker is killed:
        # only the connections that worker held break; every other request
        # is answered, and the supervisor starts a new worker.
        stop = anyio.Event()
        long_lived = Tally()
        ready = [anyio.Event() for _ in range(100)]

        async def talk(client: int) -> None:
            stream = await connect(proxy.address)
            async with stream:
                reader = BufferedReader(stream)
                number = 0
                while not stop.is_set():
                    alive = await call(stream, reader, client, number, long_lived)
                    ready[client].set()
                    if not alive:
                        return
                    number += 1
                    await anyio.sleep(0.01)  # pacing: a steady load, not a flood

        async with anyio.create_task_group() as tg:
            for client in range(100):
                tg.start_soon(talk, client)
            with anyio.fail_after(20):
                for event in ready:
                    await event.wait()
            before = (await get_json(admin, "/workers"))["workers"]
            victim = before[1]
            held = victim["connections_active"]
            assert sum(w["connections_active"] for w in before) == 100
            os.kill(victim["pid"], signal.SIGKILL)

            await anyio.to_thread.run_sync(proxy.wait_for_line, f"worker {victim['slot']} ready again", 30)
            await long_lived.wait_answered(long_lived.answered + 500)
            stop.set()
        print(f"worker {victim['slot']} held {held} of 100 connections when killed")
        assert held > 0
        assert long_lived.broken == held
        assert long_lived.wrong == []
        assert (await get_json(admin, "/workers"))["restarts"] == 1
        assert await metric(admin, "sota_worker_restarts_total") == 1

        # The new worker takes its share of new connections.
        again = Tally()
        async with anyio.create_task_group() as tg:
            for client in range(400):
                tg.start_soon(converse, proxy.address, client, 2, again)
        assert (again.answered, again.wrong, again.refused, again.broken) == (800, [], 0, 0)
        now = (await get_json(admin, "/workers"))["workers"]
        fresh = next(w for w in now if w["slot"] == victim["slot"])
        assert fresh["connections_total"] > 0
        assert proxy.stop() == 0


async def test_hot_restart_twice_under_load_refuses_and_loses_nothing(tmp_path: Path, backend_args: list[str]) -> None:
    """50 clients, a new connection per 10 requests, while the proxy is
    replaced twice by the same command."""
    with ExitStack() as stack:
        upstream = stack.enter_context(upstream_service())
        config = write_config(tmp_path, upstream.address)
        restart = ["--restart-socket", str(tmp_path / "restart.sock")]
        command = ["--config", config, "--workers", "2", *restart, *backend_args]
        first = stack.enter_context(serve_process(command, timeout=60))
        admin = await admin_of(first)
        tally = Tally()
        stop = anyio.Event()

        async def client(number: int) -> None:
            sequence = 0
            while not stop.is_set():
                if not await converse(first.address, number, 10, tally, first=sequence):
                    return
                sequence += 10

        async with anyio.create_task_group() as tg:
            for number in range(50):
                tg.start_soon(client, number)
            await tally.wait_answered(500)
            previous = first
            for epoch in (1, 2):
                before = tally.answered
                successor = stack.enter_context(serve_process(command, timeout=60))
                assert successor.address == first.address
                info = await get_json(admin, "/server_info")
                assert info["restart_epoch"] == epoch
                assert info["build"] == build_info().kind
                assert info["pid"] == successor.process.pid
                # The old process finishes its connections and exits by itself.
                code = await anyio.to_thread.run_sync(previous.process.wait, 60)
                assert code == 0
                await tally.wait_answered(before + 500)
                previous = successor
            stop.set()
        print(f"answered {tally.answered} on {tally.connects} connections across two hot restarts")
        assert (tally.refused, tally.broken, tally.wrong) == (0, 0, [])
        assert tally.connects > 150
        assert previous.stop() == 0
