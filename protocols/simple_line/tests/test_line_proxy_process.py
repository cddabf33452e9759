"""Breaker, ejection and thresholds with the proxy as its own process.

The same scenarios as test_line_proxy_health.py, with the proxy started by
``python -m sota_dispatch.serve --config``: the client sees the replies,
and the admin endpoint's /clusters shows the breaker and ejection states.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from simple_line_support import Backend, Client, admin_of, backends, config, curl

from sota_dispatch.testing import serve_process, without_ref

pytestmark = pytest.mark.anyio

NO_ENDPOINT = b"error:no healthy upstream"


@asynccontextmanager
async def proxy_process(document: dict[str, Any], tmp_path: Path) -> AsyncIterator[tuple[Client, str]]:
    """A proxy process for ``document``: a connected client and the admin URL."""
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(document))
    with serve_process(["--config", str(path), "--admin", "127.0.0.1:0"]) as proc:
        admin = await admin_of(proc)
        async with await anyio.connect_tcp(proc.host, proc.port) as stream:
            yield Client(stream), admin
        assert proc.stop() == 0, "".join(proc.stderr_lines)


async def endpoints(admin: str) -> list[dict[str, Any]]:
    status, text = await curl(f"{admin}/clusters")
    assert status == 200
    result: list[dict[str, Any]] = json.loads(text)["backends"]["endpoints"]
    return result


async def test_breaker_states_in_a_proxy_process(tmp_path: Path) -> None:
    breaker = {"consecutive_failures": 2, "min_requests": 100, "open_timeout": "300ms"}
    async with (
        backends("A") as up,
        proxy_process(config([up[0][1]], endpoint_breaker=breaker), tmp_path) as (c, admin),
    ):
        assert await c.call(b"n=1") == [b"A:n=1"]
        assert (await endpoints(admin))[0]["breaker"] == "closed"
        for _ in range(3):
            assert (await c.call(b"close=1"))[0].startswith(b"error:upstream reset")
        assert (await endpoints(admin))[0]["breaker"] == "open"
        assert [without_ref(r) for r in await c.call(b"n=2")] == [NO_ENDPOINT]
        await anyio.sleep(0.35)  # the open timeout passes
        assert await c.call(b"n=3") == [b"A:n=3"]  # the half-open probe closes it
        assert (await endpoints(admin))[0]["breaker"] == "closed"
        for _ in range(3):
            await c.call(b"close=1")
        await anyio.sleep(0.35)
        assert (await c.call(b"close=1"))[0].startswith(b"error:upstream reset")  # the probe fails
        assert (await endpoints(admin))[0]["breaker"] == "open"
        assert [without_ref(r) for r in await c.call(b"n=4")] == [NO_ENDPOINT]
        _, metrics = await curl(f"{admin}/metrics")
        assert f'sota_breaker_trips_total{{cluster="backends",endpoint="{up[0][1]}"}} 3.0' in metrics


async def test_ejection_and_return_in_a_proxy_process(tmp_path: Path) -> None:
    outlier = {"consecutive_failures": 3, "base_ejection_time": "500ms", "max_ejection_percent": 50}
    retry = {"attempts": 2, "retry_on": ["reset"], "idempotent": True}
    async with backends("A", "B") as up:
        b: Backend = up[1][0]
        document = config([a for _, a in up], outlier_detection=outlier, route={"retry": retry})
        async with proxy_process(document, tmp_path) as (c, admin):
            b.failing = True
            replies = [r for i in range(20) for r in await c.call(b"n=%d" % i)]
            assert [r[:2] for r in replies] == [b"A:"] * 20
            assert len(b.seen) == 3
            assert [e["health"] for e in await endpoints(admin)] == ["healthy", "ejected"]
            b.failing = False
            await anyio.sleep(0.55)  # the ejection time passes
            assert [e["health"] for e in await endpoints(admin)] == ["healthy", "healthy"]
            replies = [r for i in range(4) for r in await c.call(b"m=%d" % i)]
            assert {r[:2] for r in replies} == {b"A:", b"B:"}


async def test_max_requests_holds_a_client_back_in_a_proxy_process(tmp_path: Path) -> None:
    async with backends("A") as up:
        a = up[0][0]
        document = config([up[0][1]], circuit_breakers={"max_requests": 1})
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(document))
        with serve_process(["--config", str(path)]) as proc:
            async with (
                await anyio.connect_tcp(proc.host, proc.port) as s1,
                await anyio.connect_tcp(proc.host, proc.port) as s2,
            ):
                c1, c2 = Client(s1), Client(s2)
                await c1.send(b"hold=1")
                await a.wait_seen(1)
                await c2.send(b"n=2")  # no room: waits, unread, for its turn
                with anyio.move_on_after(0.3):
                    await c2.replies(1)
                    pytest.fail("answered before there was room")
                a.release.set()
                assert await c1.replies(1) == [b"A:hold=1"]
                assert await c2.replies(1) == [b"A:n=2"]
            assert proc.stop() == 0
