"""Reloading the config file of a running ``python -m sota_dispatch.serve``.

The acceptance run: 100 reloads through the admin's ``POST /reload`` under
continuous traffic, cycling through two valid configs (each routes to its
own cluster, so each reload replaces a cluster) and one invalid; no request
lost, and every reply from the cluster of the config in force when its
request was sent and answered. Then SIGHUP, and a supervisor's workers.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from simple_line_support import Client, admin_of, backends

from sota_dispatch import build_info
from sota_dispatch.testing import connect, free_port, serve_process

pytestmark = pytest.mark.anyio


def document(route_to: str, address: str, *, bad: str = "") -> dict[str, Any]:
    """A proxy routing every line to cluster ``route_to`` (whose one endpoint
    is ``address``); ``bad``: what makes it invalid."""
    listener: dict[str, Any] = {
        "name": "lines",
        "address": "127.0.0.1:0",
        "protocol": "simple_line",
        "routes": [{"cluster": route_to}],
    }
    result: dict[str, Any] = {
        "listeners": [listener],
        "clusters": [{"name": route_to, "endpoints": [address]}],
        "admin": {"address": "127.0.0.1:0"},
    }
    if bad == "protocol":  # valid alone, refused as a change: a listener's protocol is its connections'
        listener["protocol"] = "auto"
    elif bad == "typo":
        result["clusters"][0]["endpoint"] = result["clusters"][0].pop("endpoints")
    return result


def write(path: Path, content: dict[str, Any]) -> None:
    """Replace the file whole, as an editor or a config manager does."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, path)


async def http(url: str, method: str = "GET") -> tuple[int, str]:
    """One request to the admin endpoint (it closes the connection after)."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.rpartition(":")
    with anyio.fail_after(20):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            request = f"{method} /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Length: 0\r\n\r\n"
            await stream.send(request.encode())
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


class Traffic:
    """Clients sending one line at a time each, recording what came back."""

    def __init__(self) -> None:
        #: (sent at, answered at, reply)
        self.answers: list[tuple[float, float, bytes]] = []
        self.stop = False
        self.progress = anyio.Event()

    async def client(self, address: str, number: int) -> None:
        async with await connect(address) as stream:
            client = Client(stream)
            for i in range(1_000_000):
                if self.stop:
                    return
                sent = anyio.current_time()
                (reply,) = await client.call(b"c=%d&i=%d" % (number, i))
                self.answers.append((sent, anyio.current_time(), reply.rstrip(b"\r\n")))
                self.progress.set()

    async def more(self, count: int) -> None:
        """Wait until ``count`` more answers came (traffic runs under every config)."""
        target = len(self.answers) + count
        with anyio.fail_after(20):
            while len(self.answers) < target:
                self.progress = anyio.Event()
                await self.progress.wait()


async def test_a_hundred_reloads_under_traffic_lose_nothing_and_route_by_the_config_in_force(
    tmp_path: Path, backend_args: list[str]
) -> None:
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        path = tmp_path / "proxy.json"
        valid = {"A": document("one", a_address), "B": document("two", b_address)}
        write(path, valid["A"])
        with serve_process(["--config", str(path), *backend_args]) as proc:
            admin = await admin_of(proc)
            traffic = Traffic()
            windows: list[tuple[float, float, bytes, bytes]] = []  # (begun, done, tag before, tag after)
            in_force = b"A"
            applied = refused = 0
            async with anyio.create_task_group() as tg:
                for number in range(6):
                    tg.start_soon(traffic.client, proc.address, number)
                await traffic.more(20)
                for k in range(100):
                    step = k % 3  # B, invalid, A, B, invalid, A, ...
                    if step == 1:
                        write(path, document("two", b_address, bad="protocol" if k % 2 else "typo"))
                        after = in_force
                    else:
                        after = b"B" if step == 0 else b"A"
                        write(path, valid[after.decode()])
                    begun = anyio.current_time()
                    status, body = await http(f"{admin}/reload", "POST")
                    windows.append((begun, anyio.current_time(), in_force, after))
                    if step == 1:
                        assert status == 400, body
                        assert "not reloaded" in body
                        assert "listeners[0].protocol" in body or "endpoint" in body
                        refused += 1
                    else:
                        assert status == 200, body
                        applied += 1
                        report = json.loads(body)
                        assert report["version"] == 1 + applied, report
                    in_force = after
                    await traffic.more(40)  # most answers then fall between reloads: checked strictly
                traffic.stop = True
            status, body = await http(f"{admin}/server_info")
            info = json.loads(body)
            assert (info["build"], info["compiled_modules"]) == (build_info().kind, list(build_info().compiled))
            config = info["config"]
            assert (config["version"], config["reloads"], config["refused"]) == (1 + applied, applied, refused)
            assert (applied, refused) == (67, 33)
            assert proc.process.poll() is None
    # Every request answered (a lost one would have failed its client), by a backend, never an error reply.
    answers = traffic.answers
    assert all(reply[:2] in (b"A:", b"B:") for _, _, reply in answers), [
        r for _, _, r in answers if r[:2] not in (b"A:", b"B:")
    ][:3]
    strict = 0
    for sent, answered, reply in answers:
        tag = reply[:1]
        overlapping = [w for w in windows if sent <= w[1] and answered >= w[0]]
        if overlapping:  # sent or answered during a reload: the config before or after it
            assert tag in {t for w in overlapping for t in w[2:]}, (sent, answered, reply, overlapping)
            continue
        before = [w for w in windows if w[1] < sent]
        expected = before[-1][3] if before else b"A"
        assert tag == expected, (sent, answered, reply)
        strict += 1
    assert strict > len(answers) // 2, (strict, len(answers))


async def test_sighup_reloads_the_file_and_a_bad_file_keeps_the_config(tmp_path: Path, backend_args: list[str]) -> None:
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        path = tmp_path / "proxy.json"
        write(path, document("one", a_address))
        with serve_process(["--config", str(path), *backend_args]) as proc:
            async with await connect(proc.address) as stream:
                client = Client(stream)
                assert (await client.call(b"x=1"))[0].startswith(b"A:")
                write(path, document("two", b_address))
                proc.process.send_signal(signal.SIGHUP)
                await anyio.to_thread.run_sync(proc.wait_for_line, "config version 2 applied", 20)
                assert (await client.call(b"x=2"))[0].startswith(b"B:")
                path.write_text("listeners: [")  # half-written
                proc.process.send_signal(signal.SIGHUP)
                line = await anyio.to_thread.run_sync(proc.wait_for_line, "config not reloaded", 20)
                assert "version 2 stays" in line
                assert "invalid YAML" in line
                assert (await client.call(b"x=3"))[0].startswith(b"B:")  # the same connection, the same config
            assert proc.stop() == 0


async def test_workers_reload_together_and_refuse_a_new_listener(tmp_path: Path, backend_args: list[str]) -> None:
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        path = tmp_path / "proxy.json"
        write(path, document("one", a_address))
        with serve_process(["--config", str(path), "--workers", "2", *backend_args]) as proc:
            admin = await admin_of(proc)
            write(path, document("two", b_address))
            status, body = await http(f"{admin}/reload", "POST")
            assert status == 200, body
            report = json.loads(body)
            assert sorted(w["worker"] for w in report["workers"]) == [0, 1]
            assert report["version"] == 2
            for i in range(6):  # whichever worker accepts, the new config
                async with await connect(proc.address) as stream:
                    assert (await Client(stream).call(b"i=%d" % i))[0].startswith(b"B:")
            more = document("two", b_address)
            more["listeners"].append({**more["listeners"][0], "name": "more"})
            write(path, more)
            status, body = await http(f"{admin}/reload", "POST")
            assert status == 400, body
            assert "hot restart" in body
            status, body = await http(f"{admin}/server_info")
            assert json.loads(body)["config"]["version"] == 2


async def test_watch_config_reloads_a_changed_file_once_it_is_written(tmp_path: Path, backend_args: list[str]) -> None:
    async with backends("A", "B") as ((_, a_address), (_, b_address)):
        path = tmp_path / "proxy.json"
        write(path, document("one", a_address))
        with serve_process(["--config", str(path), "--watch-config", "0.1", *backend_args]) as proc:
            async with await connect(proc.address) as stream:
                client = Client(stream)
                assert (await client.call(b"x=1"))[0].startswith(b"A:")
                write(path, document("two", b_address))
                await anyio.to_thread.run_sync(proc.wait_for_line, "config version 2 applied", 20)
                assert (await client.call(b"x=2"))[0].startswith(b"B:")
                write(path, document("two", b_address, bad="typo"))
                line = await anyio.to_thread.run_sync(proc.wait_for_line, "config not reloaded", 20)
                assert "version 2 stays" in line
                assert (await client.call(b"x=3"))[0].startswith(b"B:")
            assert sum("changed: reloading" in line for line in proc.stderr_lines) == 2  # once per change


async def test_a_file_that_no_longer_suits_the_command_line_is_refused_not_fatal(
    tmp_path: Path, backend_args: list[str]
) -> None:
    """--node-id needs the file's xds: a reload of a file without it is
    refused (logged), and the process goes on serving."""
    pytest.importorskip("grpc")  # the xds extra
    async with backends("A") as ((_, a_address),):
        path = tmp_path / "proxy.json"
        with_xds = document("one", a_address)
        with_xds["xds"] = {"address": f"127.0.0.1:{free_port()}"}  # nobody there: the file's clusters serve
        write(path, with_xds)
        with serve_process(["--config", str(path), "--node-id", "edge-1", *backend_args]) as proc:
            async with await connect(proc.address) as stream:
                client = Client(stream)
                assert (await client.call(b"x=1"))[0].startswith(b"A:")
                write(path, document("one", a_address))
                proc.process.send_signal(signal.SIGHUP)
                line = await anyio.to_thread.run_sync(proc.wait_for_line, "config not reloaded", 20)
                assert "--node-id and --node-cluster need an xds control plane" in line
                assert (await client.call(b"x=2"))[0].startswith(b"A:")
            assert proc.stop() == 0
