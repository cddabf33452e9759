"""Idle served connections parked at the doorstep, and served again when they speak.

``Server(park_idle_after=)`` hands a connection idle that long back to
the doorstep as its bare socket with its dispatcher's state (see
sota_dispatch.protocol.parking). These tests hold the promises: the
client notices nothing (same socket, answers in order, never another
client's), the idle timeout runs on while parked, what cannot park
(mid-frame, a class that does not declare it, unsent answers) stays
served, shutdown and hot-restart hand-off take parked connections along,
and peers that close, reset or speak as they are being parked cost only
themselves. On asyncio, uvloop and trio.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import ByteStream

from sota_dispatch import HandOff, ReadTimeouts, Server, ServerTLS
from sota_dispatch.protocol.server import DEFAULT_PARK_IDLE_AFTER, park_idle_after
from sota_dispatch.testing import closed_within, connect
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio

PARK = 0.05


class Unmovable(SimpleLineDispatcher):
    """A subclass that does not say it keeps nothing between requests."""


class Declared(SimpleLineDispatcher):
    movable_between_requests: ClassVar[bool] = True


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for state the server reaches on its own clock (its
    parking sweeps): there is no event to wait on, by design (no per-connection cost)."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await anyio.sleep(0.005)


async def sweeps(server: Server, count: int) -> None:
    """Wait (bounded) until ``server``'s parking has looked over its
    connections ``count`` more times: what could park would have by then."""
    parking = server._parking
    assert parking is not None
    start = parking.sweeps
    await until(lambda: parking.sweeps >= start + count, timeout=max(5.0, count * PARK))


def parked(server: Server, count: int = 1) -> Callable[[], bool]:
    """``count`` connections parked, none served (its old dispatcher gone)."""
    return lambda: server.parked_connections == count and not server.active_connections


async def ask(stream: ByteStream, line: bytes) -> bytes:
    """One request line, its answer line."""
    await stream.send(line)
    answer = b""
    with anyio.fail_after(5):
        while not answer.endswith(b"\n"):
            answer += await stream.receive()
    return answer


def _server(factory: type[SimpleLineDispatcher] = SimpleLineDispatcher, **kwargs: Any) -> Server:
    kwargs.setdefault("park_idle_after", PARK)
    kwargs.setdefault("drain_timeout", 1)
    return Server(factory, "127.0.0.1:0", **kwargs)


async def test_an_idle_connection_parks_and_goes_on_where_it_was() -> None:
    server = _server()
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            first = await ask(client, b"a=1\r\n")
            assert first.startswith(b"receive:")
            await until(parked(server))
            assert server.active_connections == 0
            assert server.waiting_connections == 0
            for n in range(3):  # served again, parked again, each time
                assert await ask(client, b"b=%d\r\n" % n) == b'receive:{"b":["%d"]}\r\n' % n
                await until(parked(server))
            assert server.connections_parked >= 4
            assert server.connections_handed_off == 0  # parking is not a hand-off to another process
            assert server.connections_total == 1
        await until(lambda: not server.parked_connections and not server.active_connections)
        server.shutdown()


async def test_a_parked_connection_keeps_its_id() -> None:
    server = _server(park_idle_after=0.2)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            await ask(client, b"a=1\r\n")
            (before,) = [d.context.connection_id for d in server._dispatchers]
            await until(parked(server))
            await client.send(b"a=2\r\n")  # and now hold the answer back: it is served meanwhile
            await until(lambda: server.active_connections == 1)
            (after,) = [d.context.connection_id for d in server._dispatchers]
            assert after == before
            assert (await client.receive()).startswith(b"receive:")
        server.shutdown()


async def test_the_idle_timeout_runs_on_while_parked() -> None:
    server = _server(timeouts=ReadTimeouts(frame=5, idle=0.4))
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            await ask(client, b"a=1\r\n")
            start = anyio.current_time()
            await until(parked(server))
            await closed_within(client, 5)
            assert 0.3 < anyio.current_time() - start < 2.0
            assert server.parked_idle_timeouts == 1
            assert server.first_byte_timeouts == 0
        async with await connect(address) as other:  # the server goes on
            assert (await ask(other, b"c=3\r\n")).startswith(b"receive:")
        server.shutdown()


async def test_what_cannot_park_stays_served() -> None:
    """Mid-frame (half a line), and a class that does not declare it."""
    plain, strict = _server(), _server(Unmovable)
    declared = _server(Declared)
    async with anyio.create_task_group() as tg:
        addresses = [await tg.start(server.serve) for server in (plain, strict, declared)]
        async with (
            await connect(addresses[0]) as half,
            await connect(addresses[1]) as unmovable,
            await connect(addresses[2]) as movable,
        ):
            await ask(half, b"a=1\r\n")
            await half.send(b"b=")  # a frame begun: never parked mid-frame
            await ask(unmovable, b"a=1\r\n")
            await ask(movable, b"a=1\r\n")
            await until(parked(declared))  # the subclass that says so parks
            await sweeps(plain, 3)
            assert plain.parked_connections == 0
            assert plain.active_connections == 1
            assert strict.parked_connections == 0
            assert strict.active_connections == 1
            assert await ask(half, b"2\r\n") == b'receive:{"b":["2"]}\r\n'
            assert (await ask(unmovable, b"c=1\r\n")).startswith(b"receive:")
        for server in (plain, strict, declared):
            server.shutdown()


async def test_a_client_that_does_not_read_its_answers_is_not_parked_or_cut() -> None:
    """Answers it has not read yet are owed: the connection stays served
    (its reader waits on the writer, not idle), and every answer arrives
    once it reads."""
    server = _server()
    count = 400_000  # ~10 MB of answers: more than the kernel's buffers hold
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            # In a task: once the server stops reading (its writer full), so does this send.
            tg.start_soon(client.send, b"".join(b"n=%d\r\n" % n for n in range(count)))
            await sweeps(server, 40)  # a second: time to answer all it read and stop at the full socket
            assert server.parked_connections == 0
            assert server.active_connections == 1
            got = b""
            with anyio.fail_after(20):
                while got.count(b"\n") < count:
                    got += await client.receive()
            assert got.splitlines()[-1] == b'receive:{"n":["%d"]}' % (count - 1)
        server.shutdown()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_peer_that_leaves_while_parked_costs_only_itself(how: str) -> None:
    server = _server()
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as stays:
            await ask(stays, b"s=1\r\n")
            leaving = await connect(address)
            await ask(leaving, b"l=1\r\n")
            await until(parked(server, 2))
            if how == "reset":
                raw = leaving.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await leaving.aclose()
            await until(parked(server))
            assert await ask(stays, b"s=2\r\n") == b'receive:{"s":["2"]}\r\n'
        server.shutdown()


async def test_shutdown_closes_parked_connections_at_once() -> None:
    server = _server(drain_timeout=30)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            await ask(client, b"a=1\r\n")
            await until(parked(server))
            server.shutdown()
            assert await closed_within(client, 2) < 2


async def test_a_park_asked_for_just_before_shutdown_is_declined_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A sweep can ask an idle connection to park just before the server
    shuts down: its park is declined (a DEBUG line, no "hand-off failed"
    warning) and it closes as the drain closes idle connections."""
    caplog.set_level(logging.DEBUG, logger="sota_dispatch.protocol.handoff")
    server = _server(park_idle_after=60, drain_timeout=30)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await connect(address) as client:
            await ask(client, b"a=1\r\n")
            (served,) = server._dispatchers
            idle = served.reader
            # (uvloop's clock is the loop iteration's: it may read a moment before idle_since.)
            await until(lambda: served.writer.all_sent and (idle.idle_since or math.inf) < anyio.current_time())
            parking = server._parking
            assert parking is not None
            parking._after = 0.0  # this sweep takes it; no other will run before the shutdown
            parking.sweep(server._dispatchers)
            assert served in parking._asked
            server.shutdown()  # before the connection's task gets to the park
            assert await closed_within(client, 2) < 2
    records = [r for r in caplog.records if r.name == "sota_dispatch.protocol.handoff"]
    assert [r for r in records if r.levelno >= logging.WARNING] == []
    assert any(r.message == "not handed off: the server is shutting down" for r in records)
    assert server.parked_connections == 0
    assert server.connections_parked == 0


async def test_clients_that_pause_at_random_get_only_their_own_answers() -> None:
    """Parking races the clients' next requests (a park every few
    milliseconds): every answer still goes to the client that asked, in
    order, and none is lost."""
    server = _server(park_idle_after=0.004)
    rng = random.Random(18)

    async def client(n: int) -> None:
        async with await connect(address) as stream:
            for i in range(25):
                if rng.random() < 0.5:
                    await anyio.sleep(rng.random() * 0.012)
                lines = rng.randint(1, 3)
                await stream.send(b"".join(b"c=%d&i=%d&k=%d\r\n" % (n, i, k) for k in range(lines)))
                got = b""
                with anyio.fail_after(10):
                    while got.count(b"\n") < lines:
                        got += await stream.receive()
                expected = b"".join(b'receive:{"c":["%d"],"i":["%d"],"k":["%d"]}\r\n' % (n, i, k) for k in range(lines))
                assert got == expected

    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with anyio.create_task_group() as clients:
            for n in range(12):
                clients.start_soon(client, n)
        assert server.connections_parked > 12  # they did park, many times
        server.shutdown()


async def test_a_hot_restart_takes_parked_connections_along() -> None:
    old, new = _server(), _server(park_idle_after=None)
    async with anyio.create_task_group() as tg:
        address = await tg.start(old.serve)
        await tg.start(new.serve)

        async def sink(moving: HandOff) -> None:
            sock = socket.socket(fileno=os.dup(moving.fd))
            if not new.adopt(sock, moving.unread, moving.state):
                sock.close()

        async with await connect(address) as client:
            await ask(client, b"a=1\r\n")
            await until(parked(old))
            assert old.hand_off(sink) == 1
            assert old.park_idle_after is None  # no more parking in a process handing its connections over
            await until(lambda: new.active_connections == 1)  # served there from its state
            assert old.parked_connections == 0
            assert old.connections_handed_off == 1
            assert await ask(client, b"a=2\r\n") == b'receive:{"a":["2"]}\r\n'
        old.shutdown()
        new.shutdown()


async def test_park_idle_after_needs_a_server_that_waits_for_first_bytes() -> None:
    with pytest.raises(ValueError, match="park_idle_after"):
        Server(SimpleLineDispatcher, wait_for_first_bytes=False, park_idle_after=1.0)
    with pytest.raises(ValueError, match="park_idle_after"):
        Server(SimpleLineDispatcher, park_idle_after=0)


async def test_a_tls_connection_is_never_parked(tls_files: Any) -> None:
    """A TLS session cannot leave its stream: it stays served, idle or not."""
    tls = ServerTLS([(tls_files.cert_chain, tls_files.private_key, ())])
    server = _server(tls=tls)
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        host, _, port = address.rpartition(":")
        stream = await anyio.connect_tcp(
            host, int(port), tls=True, ssl_context=tls_files.client_context(), tls_hostname="localhost"
        )
        async with stream:
            assert (await ask(stream, b"a=1\r\n")).startswith(b"receive:")
            await sweeps(server, 4)
            assert server.parked_connections == 0
            assert server.active_connections == 1
            assert (await ask(stream, b"a=2\r\n")).startswith(b"receive:")
        server.shutdown()


@pytest.mark.parametrize(
    ("value", "can_park", "expected"),
    [
        (None, True, DEFAULT_PARK_IDLE_AFTER),  # unset: the default
        (0.0, True, None),  # 0: never
        (5.0, True, 5.0),
        (None, False, None),  # a server that speaks first never parks
        (5.0, False, None),  # (the caller refuses or warns about the value)
    ],
)
def test_a_configured_park_time_comes_to_the_default_never_or_itself(
    value: float | None, can_park: bool, expected: float | None
) -> None:
    assert park_idle_after(value, can_park) == expected
