"""Connection hand-off against clients that do not pause: a pipelining flood, and one that never reads.

Real processes: a simple_line service behind ``serve --config F --workers 1
--restart-socket S``, replaced by the same command. A client that keeps
hundreds of requests in flight has bytes the old process read and did not
decode (and, on asyncio, bytes its transport read ahead) at the moment of
the hand-off: every one must reach the new process, in order. A client
that never reads its answers cannot be moved (its answers are not out): it
stays with the old process, which closes it at the restart drain time and
exits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.testing import ServeProcess, connect, serve_process

pytestmark = pytest.mark.anyio


@contextmanager
def restartable(tmp_path: Path, backend_args: list[str], drain_time: str) -> Iterator[tuple[ServeProcess, list[str]]]:
    with ExitStack() as stack:
        upstream = stack.enter_context(serve_process(["--protocol", "simple_line", "--listen", "127.0.0.1:0"]))
        listener = {"name": "lines", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "up"}]}
        clusters = [{"name": "up", "endpoints": [upstream.address]}]
        document = {"listeners": [listener], "clusters": clusters, "drain_timeout": "1s"}
        config = tmp_path / "proxy.json"
        config.write_text(json.dumps(document))
        restart = ["--restart-socket", str(tmp_path / "restart.sock"), "--restart-drain-time", drain_time]
        command = ["--config", str(config), "--workers", "1", *restart, *backend_args]
        yield stack.enter_context(serve_process(command, timeout=60)), command


async def test_a_pipelining_client_loses_nothing_across_a_hand_off(tmp_path: Path, backend_args: list[str]) -> None:
    total, window = 20_000, 500
    with restartable(tmp_path, backend_args, "60") as (old, command):
        stream = await connect(old.address)
        async with stream:
            reader = BufferedReader(stream)
            sent = answered = 0
            halfway = anyio.Event()
            room = anyio.Event()

            async def send() -> None:
                nonlocal sent, room
                while sent < total:
                    batch = min(window - (sent - answered), total - sent, 50)
                    if batch <= 0:
                        room = anyio.Event()
                        await room.wait()  # the window is full: wait for answers
                        continue
                    await stream.send(b"".join(f"n={n}\r\n".encode() for n in range(sent, sent + batch)))
                    sent += batch

            async def receive() -> None:
                nonlocal answered
                with anyio.fail_after(60):
                    while answered < total:
                        line = await reader.read_until(b"\r\n", max_bytes=4096)
                        assert line == f'receive:{{"n":["{answered}"]}}'.encode()
                        answered += 1
                        room.set()
                        if answered == total // 4:
                            halfway.set()

            with ExitStack() as successors:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send)
                    tg.start_soon(receive)
                    await halfway.wait()
                    new = successors.enter_context(serve_process(command, timeout=60))
                    line = await anyio.to_thread.run_sync(new.wait_for_line, "taken over from epoch", 30)
                assert "1 connection taken over" in line
                assert answered == total
                # The old process moved its only connection and exited at once.
                assert await anyio.to_thread.run_sync(old.process.wait, 10) == 0
                assert new.stop() == 0


async def test_a_client_that_never_reads_stays_behind_and_is_closed_at_the_drain_time(
    tmp_path: Path, backend_args: list[str]
) -> None:
    with restartable(tmp_path, backend_args, "2") as (old, command):
        deaf = await connect(old.address)
        polite = await connect(old.address)
        async with deaf, polite:
            # Enough requests that their answers fill the socket buffers both ways.
            with anyio.move_on_after(1):  # the buffers are full well before
                for start in range(0, 200_000, 1000):
                    await deaf.send(b"".join(f"n={n}&pad={'x' * 64}\r\n".encode() for n in range(start, start + 1000)))
            reader = BufferedReader(polite)
            await polite.send(b"n=1\r\n")
            with anyio.fail_after(10):
                assert await reader.read_until(b"\r\n", max_bytes=4096) == b'receive:{"n":["1"]}'
            with serve_process(command, timeout=60) as new:
                # The polite client moves; the deaf one cannot (its answers are not out) and is
                # closed at the drain time, after which the old process exits.
                assert await anyio.to_thread.run_sync(old.process.wait, 30) == 0
                await polite.send(b"n=2\r\n")
                with anyio.fail_after(10):
                    assert await reader.read_until(b"\r\n", max_bytes=4096) == b'receive:{"n":["2"]}'
                assert new.stop() == 0
