"""No answer ever reaches a client other than the one that asked (security fix).

A query line has no id: answers on a pipelined upstream connection are
matched to requests by their order. A backend that sends one answer too
many shifted every answer after it, and since clients shared upstream
connections, clients received each other's answers. Pipelined and
exclusive pools are now per client by default, and an answer nobody asked
for closes its upstream connection.
"""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import ByteStream
from simple_line_support import backends, client, config, proxy_for

from sota_dispatch import ConnectionContext, Dispatcher
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import serving, without_ref

pytestmark = pytest.mark.anyio


class Surplus(Dispatcher):
    """Echoes each line; a line with ``surplus=1`` gets its answer twice."""

    async def serve(self) -> None:
        while True:
            line = (await self.reader.read_until(b"\n", max_bytes=65536)).rstrip(b"\r")
            answer = b"echo:" + line + b"\r\n"
            self.writer.write(answer * (2 if b"surplus=1" in line else 1))
            self.flush_soon()


def surplus_factory(stream: ByteStream, context: ConnectionContext) -> Surplus:
    return Surplus(stream, context)


async def run_clients(proxy: Proxy, clients: int, requests: int, answers: dict[int, list[bytes]]) -> None:
    async def one(k: int) -> None:
        async with client(proxy) as c:
            # Client 0's requests 7, 57, 107, ... each get two answers.
            surplus = [b"&surplus=1" if k == 0 and i % 50 == 7 else b"" for i in range(requests)]
            lines = [f"c={k}&n={i}".encode() + surplus[i] for i in range(requests)]
            await c.send(*lines)
            answers[k] = await c.replies(requests, timeout=20)

    async with anyio.create_task_group() as tg:
        for k in range(clients):
            tg.start_soon(one, k)


@pytest.mark.parametrize("mode", ["pipeline", "exclusive"])
async def test_a_surplus_answer_never_reaches_another_client(mode: str) -> None:
    async with serving(surplus_factory) as backend:
        assert backend.address is not None
        document = config([backend.address], pool={"mode": mode})
        async with proxy_for(document) as proxy:
            answers: dict[int, list[bytes]] = {}
            await run_clients(proxy, 8, 120, answers)
    for k, replies in answers.items():
        mine = [reply for reply in replies if reply.startswith(f"echo:c={k}&".encode())]
        strangers = [reply for reply in replies if reply.startswith(b"echo:c=") and reply not in mine]
        assert not strangers, f"client {k} got other clients' answers: {strangers[:3]}"
        if k != 0:  # the clients whose requests were well answered got exactly their answers
            assert replies == [f"echo:c={k}&n={i}".encode() for i in range(120)]


async def test_an_answer_nobody_asked_for_closes_that_upstream_connection(caplog: pytest.LogCaptureFixture) -> None:
    closed = anyio.Event()

    class Watched(Surplus):
        async def on_close(self, reason: BaseException | None) -> None:
            closed.set()

    async with serving(Watched) as backend:
        assert backend.address is not None
        async with proxy_for(config([backend.address])) as proxy, client(proxy) as c:
            assert await c.call(b"a=1&surplus=1") == [b"echo:a=1&surplus=1"]
            with anyio.fail_after(10):
                await closed.wait()  # the proxy closed the connection that said too much
            assert await c.call(b"b=2") == [b"echo:b=2"]  # a fresh one, and its own answer
            assert backend.connections_total == 2
            assert proxy.clusters["backends"].connection_count() == 1
    assert "sent an answer to no request" in caplog.text


async def test_clients_share_pipelined_connections_only_when_configured_to() -> None:
    async with serving(surplus_factory) as backend:
        assert backend.address is not None
        shared = config([backend.address], pool={"shared": True, "connections": 1})
        async with proxy_for(shared) as proxy, client(proxy) as a, client(proxy) as b:
            assert await a.call(b"a=1") == [b"echo:a=1"]
            assert await b.call(b"b=1") == [b"echo:b=1"]
            assert backend.connections_total == 1
        async with proxy_for(config([backend.address])) as proxy, client(proxy) as a, client(proxy) as b:
            assert await a.call(b"a=1") == [b"echo:a=1"]
            assert await b.call(b"b=1") == [b"echo:b=1"]
            assert backend.connections_total == 3  # one more per client
            assert len(proxy.clusters["backends"].pools) == 2
        assert proxy.clusters["backends"].pools == []  # closed with their clients
        assert proxy.clusters["backends"].connection_count() == 0


async def test_an_idle_client_yields_its_upstream_connection_to_a_new_one() -> None:
    # 1,024 idle clients once pinned every connection of a cluster.
    async with serving(surplus_factory) as backend:
        assert backend.address is not None
        document = config([backend.address], circuit_breakers={"max_connections": 1})
        async with proxy_for(document) as proxy, client(proxy) as a, client(proxy) as b:
            assert await a.call(b"a=1") == [b"echo:a=1"]  # a holds the one connection, idle now
            assert await b.call(b"b=1") == [b"echo:b=1"]  # b takes its place
            assert await a.call(b"a=2") == [b"echo:a=2"]  # and a takes it back
            assert proxy.clusters["backends"].overflows == 0


async def test_a_client_pool_overflows_at_once_when_every_connection_is_busy() -> None:
    async with backends("A") as up:
        document = config([up[0][1]], circuit_breakers={"max_connections": 1})
        async with proxy_for(document) as proxy, client(proxy) as a, client(proxy) as b:
            await a.send(b"hold=1")
            await up[0][0].wait_seen(1)  # a's connection is busy
            with anyio.fail_after(2):  # at once, not after a wait for a connection that never frees
                [reply] = await b.call(b"b=1")
                assert without_ref(reply) == b"error:overflow"
            assert proxy.clusters["backends"].overflows == 1
            up[0][0].release.set()
            assert await a.replies(1) == [b"A:hold=1"]
