"""The admin endpoint against web pages and idle connections (security fixes).

Any page a browser shows can send requests to 127.0.0.1: a cross-origin
``POST /drain`` with ``Content-Type: text/plain`` needs no CORS preflight,
and DNS rebinding makes a name the attacker controls point at us. Each case
is the request a browser would really send.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream
from simple_line_support import backends, config, proxy_for

from sota_dispatch.admin.server import MAX_WAITING, host_is_allowed
from sota_dispatch.proxy import Proxy

pytestmark = pytest.mark.anyio


async def request(address: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a raw request head (``{address}`` is filled in); (status, body)."""
    host, _, port = address.rpartition(":")
    data = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(head.format(address=address).replace("\n", "\r\n").encode() + b"\r\n" + body)
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@asynccontextmanager
async def admin_proxy() -> AsyncIterator[tuple[Proxy, str]]:
    async with backends("A") as up:
        document = config([up[0][1]])
        document["admin"] = {"address": "127.0.0.1:0"}
        async with proxy_for(document) as proxy:
            assert proxy.admin_address is not None
            yield proxy, proxy.admin_address


CROSS_ORIGIN_DRAIN = """POST /drain HTTP/1.1
Host: {address}
Origin: http://evil.example
Content-Type: text/plain
Content-Length: 0
"""


async def test_a_cross_origin_drain_is_refused_and_the_proxy_keeps_serving() -> None:
    async with admin_proxy() as (proxy, admin):
        assert await request(admin, CROSS_ORIGIN_DRAIN) == (403, b"cross-origin POST (Origin http://evil.example)\n")
        assert not proxy.draining
        assert await request(admin, "GET /ready HTTP/1.1\nHost: {address}\n") == (200, b"ready\n")


@pytest.mark.parametrize("path", ["/quitquitquit", "/drain_listeners", "/healthcheck/fail", "/healthcheck/ok"])
async def test_a_web_page_cannot_stop_drain_or_unready_the_proxy(path: str) -> None:
    async with admin_proxy() as (proxy, admin):
        head = CROSS_ORIGIN_DRAIN.replace("POST /drain ", f"POST {path} ")
        assert await request(admin, head) == (403, b"cross-origin POST (Origin http://evil.example)\n")
        rebinding = f"POST {path} HTTP/1.1\nHost: attacker.test\nContent-Length: 0\n"
        assert (await request(admin, rebinding))[0] == 403
        assert not proxy.draining
        assert not proxy.health_check_failed
        assert await request(admin, "GET /ready HTTP/1.1\nHost: {address}\n") == (200, b"ready\n")
        assert [listener.server.address for listener in proxy.listeners] == list(proxy.addresses.values())


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_cross_origin_log_level_change_is_refused(origin: str) -> None:
    root = logging.getLogger()
    before = root.level
    async with admin_proxy() as (_, admin):
        head = f"POST /logging?level=critical HTTP/1.1\nHost: {{address}}\nOrigin: {origin}\nContent-Length: 0\n"
        status, _ = await request(admin, head)
    assert status == 403
    assert root.level == before


async def test_a_same_origin_post_and_a_post_without_origin_are_obeyed() -> None:
    async with admin_proxy() as (proxy, admin):
        head = "POST /logging?level=info HTTP/1.1\nHost: {address}\nOrigin: http://{address}\nContent-Length: 0\n"
        assert (await request(admin, head))[0] == 200
        assert await request(admin, "POST /drain HTTP/1.1\nHost: {address}\nContent-Length: 0\n") == (
            200,
            b"draining\n",
        )
        assert proxy.draining


@pytest.mark.parametrize(
    "head",
    [
        "GET /config_dump HTTP/1.1\nHost: rebind.evil.example:9901\n",  # DNS rebinding
        "POST /drain HTTP/1.1\nHost: attacker.test\nContent-Length: 0\n",
        "GET http://other.example/config_dump HTTP/1.1\nHost: {address}\n",  # absolute form, another host
        "GET /ready HTTP/1.1\nHost: [::1\n",
    ],
)
async def test_requests_for_another_host_are_refused(head: str) -> None:
    async with admin_proxy() as (proxy, admin):
        status, body = await request(admin, head)
        assert status == 403, body
        assert not proxy.draining


def test_allowed_hosts_are_ip_addresses_and_localhost() -> None:
    for host in ("127.0.0.1", "127.0.0.1:9901", "localhost:9901", "LOCALHOST", "[::1]:9901", "10.0.0.5:80"):
        assert host_is_allowed(host), host
    for host in ("evil.example", "localhost.evil.example:9901", "127.0.0.1.nip.io", "[::1", "127.0.0.1:x", ""):
        assert not host_is_allowed(host), host


async def test_idle_admin_connections_cannot_lock_out_a_readiness_probe() -> None:
    async with admin_proxy() as (proxy, admin), contextlib.AsyncExitStack() as stack:
        host, _, port = admin.rpartition(":")
        idle: list[SocketStream] = []
        for _ in range(3 * MAX_WAITING):  # past the old 64-connection lock-out, too
            idle.append(await stack.enter_async_context(await anyio.connect_tcp(host, int(port))))
        with anyio.fail_after(2):  # well inside the 5 s head timeout of the idle ones
            assert await request(admin, "GET /ready HTTP/1.1\nHost: {address}\n") == (200, b"ready\n")
        assert proxy.admin is not None
        assert proxy.admin.waiting.evicted >= 2 * MAX_WAITING


async def test_an_admin_beyond_loopback_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with backends("A") as up:
        document = config([up[0][1]])
        document["admin"] = {"address": "0.0.0.0:0", "allow_remote": True}
        async with proxy_for(document):
            pass
    assert "beyond this machine" in caplog.text
