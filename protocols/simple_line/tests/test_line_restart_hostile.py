"""Hot restart against would-be successors that misbehave: the running proxy keeps serving.

Real processes: a simple_line service behind ``serve --config F --workers 2
--restart-socket S``; the misbehaving successors are raw channel clients
(garbage, a hello that takes the sockets and vanishes, a second one while
the first is still deciding) and a real successor that cannot start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.process.channel import Channel
from sota_dispatch.testing import ServeProcess, connect, serve_process

pytestmark = pytest.mark.anyio


def write_config(directory: Path, upstream: str, extra_listener: str | None = None) -> str:
    listeners = [{"name": "lines", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "up"}]}]
    if extra_listener is not None:
        listeners.append(
            {"name": "more", "address": extra_listener, "protocol": "simple_line", "routes": [{"cluster": "up"}]}
        )
    path = directory / ("proxy.json" if extra_listener is None else "bigger.json")
    path.write_text(json.dumps({"listeners": listeners, "clusters": [{"name": "up", "endpoints": [upstream]}]}))
    return str(path)


async def answered(address: str, count: int = 20) -> int:
    """Requests answered on a new connection (each checked)."""
    stream = await connect(address)
    async with stream:
        reader = BufferedReader(stream)
        for number in range(count):
            await stream.send(f"n={number}\r\n".encode())
            with anyio.fail_after(10):
                line = await reader.read_until(b"\r\n", max_bytes=4096)
            assert line == f'receive:{{"n":["{number}"]}}'.encode()
    return count


@contextmanager
def running(tmp_path: Path, backend_args: list[str]) -> Iterator[tuple[ServeProcess, list[str], str]]:
    with ExitStack() as stack:
        upstream = stack.enter_context(serve_process(["--protocol", "simple_line", "--listen", "127.0.0.1:0"]))
        path = str(tmp_path / "restart.sock")
        command = ["--config", write_config(tmp_path, upstream.address), "--workers", "2", "--restart-socket", path]
        command += backend_args
        proxy = stack.enter_context(serve_process(command, timeout=60))
        yield proxy, command, path


async def test_garbage_and_vanishing_successors_leave_the_proxy_serving(
    tmp_path: Path, backend_args: list[str]
) -> None:
    with running(tmp_path, backend_args) as (proxy, command, path):
        # Garbage on the restart socket.
        for garbage in (b"\x00\x00\x00\x05nope!", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\xff" * 64):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.connect(path)
                raw.sendall(garbage)
            await anyio.to_thread.run_sync(proxy.wait_for_line, "still serving", 10)
            assert await answered(proxy.address) == 20
        # A successor that takes the sockets, then vanishes without asking the old one to retire.
        channel = await Channel.connect(path)
        await channel.send({"type": "hello", "pid": os.getpid()})
        offer, _ = await channel.receive()
        assert offer["type"] == "sockets"
        taken = await channel.receive_sockets(offer)
        assert len(taken) == 2  # one per worker slot
        # While it decides, another would-be successor is refused.
        second = await Channel.connect(path)
        await second.send({"type": "hello", "pid": os.getpid()})
        refusal, _ = await second.receive()
        assert refusal["type"] == "refused"
        await second.aclose()
        for sock in taken:
            sock.close()
        await channel.aclose()
        await anyio.to_thread.run_sync(proxy.wait_for_line, "still serving", 10)
        assert await answered(proxy.address) == 20
        # A real successor still takes over afterwards.
        with serve_process(command, timeout=60) as successor:
            assert successor.address == proxy.address
            assert await anyio.to_thread.run_sync(proxy.process.wait, 30) == 0
            assert await answered(proxy.address) == 20
            assert successor.stop() == 0


async def test_a_successor_that_cannot_start_leaves_the_old_one_serving(
    tmp_path: Path, backend_args: list[str]
) -> None:
    with running(tmp_path, backend_args) as (proxy, command, _):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        bigger = [*command]
        bigger[bigger.index("--config") + 1] = write_config(tmp_path, "127.0.0.1:1", extra_listener=busy)
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "sota_dispatch.serve", *bigger], capture_output=True, text=True, timeout=60
            )
        )
        taken.close()
        assert done.returncode == 2
        assert f"cannot listen on {busy}" in done.stderr
        assert proxy.process.poll() is None
        await anyio.to_thread.run_sync(proxy.wait_for_line, "still serving", 10)
        assert await answered(proxy.address) == 20
        assert proxy.stop() == 0


async def test_a_local_service_runs_in_workers(backend_args: list[str]) -> None:
    command = ["--protocol", "simple_line", "--listen", "127.0.0.1:0", "--workers", "2", *backend_args]
    with serve_process(command) as service:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(answered, service.address, 5)
        assert service.stop() == 0


def test_workers_must_be_a_positive_count() -> None:
    for bad in ("0", "-1", "many"):
        done = subprocess.run(
            [sys.executable, "-m", "sota_dispatch.serve", "--protocol", "simple_line", "--workers", bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert "--workers" in done.stderr
        assert "Traceback" not in done.stderr


async def test_a_hot_restart_adds_a_listener(tmp_path: Path, backend_args: list[str]) -> None:
    """A change that needs a new listening socket goes through a hot restart."""
    with running(tmp_path, backend_args) as (proxy, command, _):
        bigger = [*command]
        bigger[bigger.index("--config") + 1] = write_config(tmp_path, upstream_of(proxy), extra_listener="127.0.0.1:0")
        with serve_process(bigger, timeout=60) as successor:
            line = await anyio.to_thread.run_sync(successor.wait_for_line, "(listener more)", 10)
            added = line.split("listening on ")[1].split()[0]
            assert successor.address == proxy.address
            assert await anyio.to_thread.run_sync(proxy.process.wait, 30) == 0
            assert await answered(proxy.address) == 20
            assert await answered(added) == 20
            assert successor.stop() == 0


def upstream_of(proxy: ServeProcess) -> str:
    """The upstream address in the proxy's config file (its command line names the file)."""
    args = [str(arg) for arg in proxy.process.args]  # type: ignore[union-attr]
    config = Path(args[args.index("--config") + 1])
    return str(json.loads(config.read_text())["clusters"][0]["endpoints"][0])


async def test_tls_connections_stay_with_the_old_process_until_its_drain_time(
    tmp_path: Path, backend_args: list[str], tls_files: Any
) -> None:
    """A TLS session cannot move: its connection is served by the old
    process after the restart (not closed early), and ends when its client
    closes it; the old process then exits."""
    with ExitStack() as stack:
        upstream = stack.enter_context(serve_process(["--protocol", "simple_line", "--listen", "127.0.0.1:0"]))
        tls = {"certificates": [{"cert_chain": tls_files.cert_chain, "private_key": tls_files.private_key}]}
        listener = {"name": "lines", "address": "127.0.0.1:0", "protocol": "simple_line", "routes": [{"cluster": "up"}]}
        document = {
            "listeners": [{**listener, "tls": tls}],
            "clusters": [{"name": "up", "endpoints": [upstream.address]}],
        }
        config = tmp_path / "tls.json"
        config.write_text(json.dumps(document))
        restart = ["--restart-socket", str(tmp_path / "restart.sock"), "--restart-drain-time", "60"]
        command = ["--config", str(config), "--workers", "1", *restart, *backend_args]
        old = stack.enter_context(serve_process(command, timeout=60))
        host, _, port = old.address.rpartition(":")
        stream = await anyio.connect_tcp(host, int(port), tls=True, ssl_context=tls_files.client_context())
        async with stream:
            reader = BufferedReader(stream)

            async def call(number: int) -> bytes:
                await stream.send(f"n={number}\r\n".encode())
                with anyio.fail_after(10):
                    return await reader.read_until(b"\r\n", max_bytes=4096)

            assert await call(1) == b'receive:{"n":["1"]}'
            new = stack.enter_context(serve_process(command, timeout=60))
            await anyio.to_thread.run_sync(old.wait_for_line, "moving 0 connections", 20)
            for number in range(2, 12):  # the old process still serves it
                assert await call(number) == f'receive:{{"n":["{number}"]}}'.encode()
            assert old.process.poll() is None
        # Its client closed it: the old process has nothing left and exits.
        assert await anyio.to_thread.run_sync(old.process.wait, 30) == 0
        assert new.stop() == 0


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(backend_args: list[str]) -> None:
    command = ["--protocol", "simple_line", "--listen", "127.0.0.1:0", "--workers", "2", *backend_args]
    with serve_process(command) as service:
        assert await answered(service.address) == 20
        service.process.kill()
        line = await anyio.to_thread.run_sync(service.wait_for_line, "supervisor gone", 20)
        assert "draining" in line
        # The workers share the supervisor's stderr: its end comes when the last of them has exited.
        with pytest.raises(TimeoutError, match="exited before"):
            await anyio.to_thread.run_sync(service.wait_for_line, "no such line", 30)
