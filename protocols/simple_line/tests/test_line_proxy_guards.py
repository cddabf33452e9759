"""Listener limits on real sockets: connection caps, slowloris and idle
clients, and a client that never reads (the proxy's memory stays bounded)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from anyio.abc import SocketStream
from simple_line_support import Client, backends, client, config, proxy_for

from sota_dispatch.testing import closed_within, connect, serve_process

pytestmark = pytest.mark.anyio


def limited(address: str, **limits: Any) -> dict[str, Any]:
    document = config([address])
    document["listeners"][0]["limits"] = limits
    return document


async def test_a_client_that_sends_nothing_is_closed_after_the_frame_timeout() -> None:
    async with (
        backends("A") as up,
        proxy_for(limited(up[0][1], frame_timeout="500ms")) as proxy,
        await connect(proxy.addresses["lines"]) as silent,
    ):
        assert 0.4 < await closed_within(silent, 5) < 2
        # It waited as a bare socket (no dispatcher), and the listener says so.
        listener = proxy.listeners[0]
        assert listener.server.first_byte_timeouts == 1
        described = listener.describe("accepting")
        assert (described["connections_waiting"], described["first_byte_timeouts"]) == (0, 1)


async def test_a_slowloris_client_is_closed_after_the_frame_timeout() -> None:
    async with backends("A") as up, proxy_for(limited(up[0][1], frame_timeout="500ms")) as proxy:
        async with await connect(proxy.addresses["lines"]) as slow, anyio.create_task_group() as tg:

            async def dribble() -> None:
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    for _ in range(50):  # bounded: 5 s at most
                        await slow.send(b"a")
                        await anyio.sleep(0.1)

            tg.start_soon(dribble)
            assert await closed_within(slow, 5) < 2
            tg.cancel_scope.cancel()
        assert up[0][0].seen == []  # nothing of it went upstream


async def test_an_idle_client_is_closed_and_a_busy_one_is_not() -> None:
    async with (
        backends("A") as up,
        proxy_for(limited(up[0][1], idle_timeout="300ms", frame_timeout="300ms")) as proxy,
        client(proxy) as idle,
        client(proxy) as busy,
    ):
        assert await idle.call(b"n=1") == [b"A:n=1"]
        for i in range(8):  # 0.8 s of traffic, each request well within the timeouts
            assert await busy.call(b"m=%d" % i) == [b"A:m=%d" % i]
            await anyio.sleep(0.1)  # pacing the busy client
        assert isinstance(idle.stream, SocketStream)
        assert await closed_within(idle.stream, 5) < 1  # it was closed meanwhile
        assert await busy.call(b"m=9") == [b"A:m=9"]


async def test_over_the_connection_limit_1000_connections_are_refused_and_served_clients_go_on() -> None:
    async with backends("A") as up:
        document = limited(up[0][1], max_connections=20, idle_timeout=None, frame_timeout=None)
        async with proxy_for(document) as proxy, client(proxy) as served:
            assert await served.call(b"n=0") == [b"A:n=0"]
            address = proxy.addresses["lines"]
            streams = [await connect(address) for _ in range(1019)]
            try:
                for i in range(1, 4):
                    assert await served.call(b"n=%d" % i) == [b"A:n=%d" % i]
                refused = 0
                with anyio.fail_after(30):
                    for stream in streams[19:]:  # 19 fit under the limit, with the served client
                        await closed_within(stream, 5)
                        refused += 1
                assert refused == 1000
                assert proxy.listeners[0].server.connections_refused == 1000
                assert await served.call(b"n=9") == [b"A:n=9"]
            finally:
                for stream in streams:
                    await stream.aclose()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_client_that_never_reads_does_not_grow_the_proxys_memory(tmp_path: Path) -> None:
    async with backends("A") as up:
        path = tmp_path / "proxy.yaml"
        # The cluster's request threshold (1024 by default, like one client's
        # max_in_flight) is not what this test is about: raise it.
        document = config([up[0][1]], circuit_breakers={"max_requests": 100_000})
        document["listeners"][0]["address"] = "127.0.0.1:0"
        path.write_text(yaml.safe_dump(document))
        with serve_process(["--config", str(path)]) as proc:
            baseline = rss_kib(proc.process.pid)
            async with await connect(proc.address) as greedy, await connect(proc.address) as polite:
                request = b"n=" + b"x" * 200 + b"\r\n"
                sent = 0
                with anyio.move_on_after(3):  # it sends until the proxy stops reading it
                    while sent < 200 << 20:
                        await greedy.send(request * 1000)
                        sent += len(request) * 1000
                peak = rss_kib(proc.process.pid)
                c = Client(polite)  # another client streams meanwhile
                for i in range(20):
                    replies = await c.call(*(b"k=%d&i=%d" % (i, j) for j in range(500)))
                    assert replies == [b"A:k=%d&i=%d" % (i, j) for j in range(500)], replies[:2]
                peak = max(peak, rss_kib(proc.process.pid))
            print(f"proxy RSS {baseline} KiB at rest, {peak} KiB with a client that sent {sent >> 20} MiB unread")
            assert sent >= 1 << 20  # it did send more than the buffers hold
            assert peak - baseline < 64 << 10, (baseline, peak)
            assert proc.stop() == 0, "".join(proc.stderr_lines[-30:])


async def test_the_frame_clock_stops_while_the_proxy_itself_holds_reading_back() -> None:
    async with backends("A") as up:
        document = limited(up[0][1], frame_timeout="300ms", max_in_flight=1)
        async with proxy_for(document) as proxy, client(proxy) as c:
            await c.send(b"hold=1", b"n=2")
            await c.stream.send(b"n=")  # a partial third line, sent at once
            await up[0][0].wait_seen(1)
            await anyio.sleep(0.6)  # the proxy holds back (max_in_flight), well past the frame timeout
            await c.stream.send(b"3\r\n")
            up[0][0].release.set()
            assert await c.replies(3) == [b"A:hold=1", b"A:n=2", b"A:n=3"]


async def test_an_idle_client_with_a_partial_line_and_no_frame_timeout_is_closed_as_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with backends("A") as up:
        document = limited(up[0][1], frame_timeout=None, idle_timeout="300ms")
        async with proxy_for(document) as proxy, await connect(proxy.addresses["lines"]) as stream:
            await stream.send(b"n=")
            assert await closed_within(stream, 5) < 2
            assert proxy.listeners[0].stats.decode_errors == 0  # an idle close, not an error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
