"""simple_line's local service, run as `python -m sota_dispatch.serve`, over TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import pytest
from anyio.abc import SocketStream

from sota_dispatch.testing import ServeProcess, serve_process

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(backend_args: list[str]) -> Iterator[ServeProcess]:
    args = ["--protocol", "simple_line", "--listen", "127.0.0.1:0", *backend_args, "-o", "max_line=1024"]
    with serve_process(args) as proc:
        yield proc
        assert proc.stop() == 0, "".join(proc.stderr_lines)
        assert "Traceback" not in "".join(proc.stderr_lines)


async def connect(server: ServeProcess) -> SocketStream:
    return await anyio.connect_tcp(server.host, server.port)


async def read_lines(stream: SocketStream, count: int, timeout: float = 20) -> list[bytes]:
    data = b""
    with anyio.fail_after(timeout):
        while data.count(b"\r\n") < count:
            data += await stream.receive()
    lines = data.split(b"\r\n")
    assert lines[-1] == b"", "more than the expected replies arrived"
    return lines[:-1]


async def read_to_eof(stream: SocketStream, timeout: float = 20) -> bytes:
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def test_replies_of_the_issue(server: ServeProcess) -> None:
    async with await connect(server) as stream:
        await stream.send(b"a=1&b=2&a=3\r\nkey=value&key1=value1\n")
        assert await read_lines(stream, 2) == [
            b'receive:{"a":["1","3"],"b":["2"]}',
            b'receive:{"key":["value"],"key1":["value1"]}',
        ]
        await stream.send(b"a=%zz\r\n")
        assert await read_lines(stream, 1) == [b"error:bad percent escape at offset 2: '%zz'"]
        await stream.send(b"still=open\r\n")  # a malformed query keeps the connection
        assert await read_lines(stream, 1) == [b'receive:{"still":["open"]}']


async def test_10000_pipelined_requests_come_back_complete_and_in_order(server: ServeProcess) -> None:
    count = 10_000
    requests = b"".join(b"seq=%d&pad=%s\r\n" % (i, b"x" * (i % 50)) for i in range(count))
    async with await connect(server) as stream, anyio.create_task_group() as tg:
        tg.start_soon(stream.send, requests)
        lines = await read_lines(stream, count, timeout=60)
    assert len(lines) == count
    for i, line in enumerate(lines):
        assert line == b'receive:{"seq":["%d"],"pad":["%s"]}' % (i, b"x" * (i % 50))


async def test_200_concurrent_connections_each_get_their_own_answers(server: ServeProcess) -> None:
    results: dict[int, list[bytes]] = {}

    async def client(n: int) -> None:
        async with await connect(server) as stream:
            for round_ in range(3):
                await stream.send(b"client=%d&round=%d\r\n" % (n, round_))
                [line] = await read_lines(stream, 1, timeout=60)
                results.setdefault(n, []).append(line)

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(client, n)
    assert len(results) == 200
    for n, lines in results.items():
        assert [json.loads(line[len(b"receive:") :]) for line in lines] == [
            {"client": [str(n)], "round": [str(r)]} for r in range(3)
        ]


async def test_bad_clients_never_disturb_the_others(server: ServeProcess) -> None:
    async with await connect(server) as healthy:
        await healthy.send(b"before=1\r\n")
        assert await read_lines(healthy, 1) == [b'receive:{"before":["1"]}']

        # Binary garbage: an error line per line, connection stays up.
        async with await connect(server) as garbage:
            await garbage.send(b"\x00\xff\xfe=\x01\r\n\x80\x81\n")
            replies = await read_lines(garbage, 2)
            assert all(r.startswith(b"error:") for r in replies)
            await garbage.send(b"ok=1\n")
            assert await read_lines(garbage, 1) == [b'receive:{"ok":["1"]}']

        # An over-long line: one error line, then the server closes.
        async with await connect(server) as long_line:
            await long_line.send(b"k=" + b"v" * 5000)
            assert await read_to_eof(long_line) == b"error:line too long (limit 1024 bytes)\r\n"

        # A client that disconnects mid-line.
        async with await connect(server) as quitter:
            await quitter.send(b"half=a-requ")
        # A client that resets mid-line.
        rude = await connect(server)
        await rude.send(b"half=")
        await anyio.aclose_forcefully(rude)

        await healthy.send(b"after=1\r\n")
        assert await read_lines(healthy, 1) == [b'receive:{"after":["1"]}']
    async with await connect(server) as fresh:
        await fresh.send(b"fresh=1\n")
        assert await read_lines(fresh, 1) == [b'receive:{"fresh":["1"]}']
