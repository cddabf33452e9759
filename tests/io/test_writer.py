from __future__ import annotations

import anyio
import pytest

from sota_dispatch import BufferedWriter, Dispatcher
from sota_dispatch.testing import MemoryByteStream, exchange, memory_stream_pair

pytestmark = pytest.mark.anyio


class CountingStream(MemoryByteStream):
    """A memory stream that counts the sends made on it."""

    sends = 0

    async def send(self, item: bytes) -> None:
        self.sends += 1
        await super().send(item)


def counting_pair(max_chunks: float = 64) -> tuple[MemoryByteStream, CountingStream]:
    a, b = memory_stream_pair(max_chunks)
    return a, CountingStream(b._send, b._receive)


async def test_write_queues_and_flush_sends_one_batch() -> None:
    client, server = counting_pair()
    writer = BufferedWriter(server)
    for i in range(100):
        writer.write(b"%d\n" % i)
    writer.write(b"")
    assert server.sends == 0
    assert writer.pending == sum(len(b"%d\n" % i) for i in range(100))
    await writer.flush()
    assert server.sends == 1
    assert writer.pending == 0
    assert await client.receive() == b"".join(b"%d\n" % i for i in range(100))


async def test_send_without_reader_sends_at_once() -> None:
    client, server = counting_pair()
    writer = BufferedWriter(server)
    await writer.send(b"x")
    assert server.sends == 1
    assert await client.receive() == b"x"


async def test_slow_peer_blocks_send_and_bounds_memory() -> None:
    client, server = counting_pair(max_chunks=2)
    writer = BufferedWriter(server, high_water=4096)
    sent = 0

    async def produce() -> None:
        nonlocal sent
        for _ in range(1000):
            await writer.send(b"y" * 1024)
            sent += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await anyio.wait_all_tasks_blocked()
        # The peer reads nothing: the producer is stuck, memory stays bounded.
        assert sent < 10
        assert writer.pending <= 4096 + 1024
        received = 0
        with anyio.fail_after(10):
            while received < 1000 * 1024:
                received += len(await client.receive())
    assert sent == 1000


class Shout(Dispatcher):
    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\r\n", max_bytes=1024)
            await self.writer.send(line.upper() + b"\r\n")


async def test_send_coalesces_replies_to_one_batch_of_input() -> None:
    sends: list[int] = []

    def factory(stream: anyio.abc.ByteStream, context: object) -> Shout:
        assert isinstance(stream, MemoryByteStream)
        counting = CountingStream(stream._send, stream._receive)
        dispatcher = Shout(counting)
        sends.append(0)
        original = counting.send

        async def send(item: bytes) -> None:
            sends[-1] += 1
            await original(item)

        counting.send = send  # type: ignore[method-assign]
        return dispatcher

    batch = b"".join(b"line %d\r\n" % i for i in range(200))
    result = await exchange(factory, [batch])
    assert result.output == batch.upper()
    assert result.close_reason is None
    assert sends == [1], "200 replies to one chunk of input must leave in one send"


class WaitsBetweenRequests(Dispatcher):
    """Answers the first line, then waits for an event before reading on."""

    proceed: anyio.Event

    async def serve(self) -> None:
        first = await self.reader.read_until(b"\n", max_bytes=100)
        await self.writer.send(first + b"!\n")  # deferred: the second line is buffered
        await self.proceed.wait()  # not a read: the deferred reply must still leave
        second = await self.reader.read_until(b"\n", max_bytes=100)
        await self.writer.send(second + b"!\n")


async def test_deferred_reply_is_sent_while_serve_waits_on_something_else() -> None:
    client, server = memory_stream_pair()
    dispatcher = WaitsBetweenRequests(server)
    dispatcher.proceed = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run)
        await client.send(b"one\ntwo\n")
        with anyio.fail_after(5):
            assert await client.receive() == b"one!\n"
        dispatcher.proceed.set()
        with anyio.fail_after(5):
            assert await client.receive() == b"two!\n"
        await client.send_eof()
    assert dispatcher.close_reason is None


def test_rejects_bad_high_water() -> None:
    _, server = memory_stream_pair()
    with pytest.raises(ValueError, match="high_water"):
        BufferedWriter(server, high_water=0)


async def test_a_transform_applies_to_each_write_once_in_order() -> None:
    client, server = counting_pair()
    writer = BufferedWriter(server)
    writer.write(b"plain ")  # before the transform: as written
    calls: list[bytes] = []

    def seal(data: bytes) -> bytes:
        calls.append(data)
        return data.upper()

    writer.transform = seal
    writer.writelines([b"one ", b"two"])
    writer.write(b"")  # nothing to seal
    await writer.flush()
    assert calls == [b"one ", b"two"]
    assert await client.receive() == b"plain ONE TWO"


async def test_pieces_are_queued_in_order_as_they_are() -> None:
    client, server = counting_pair()
    writer = BufferedWriter(server)
    body = bytes(range(256)) * 4
    writer.write(b"<")
    writer.write([b"head", b"", body])  # an empty piece adds nothing
    writer.write(b">")
    assert writer.pending == 2 + 4 + len(body)
    assert writer._parts[2] is body  # handed on, not copied behind its header
    await writer.flush()
    assert server.sends == 1
    assert await client.receive() == b"<head" + body + b">"


async def test_a_transform_seals_one_writes_pieces_as_one_message() -> None:
    client, server = counting_pair()
    writer = BufferedWriter(server)
    calls: list[bytes] = []

    def seal(data: bytes) -> bytes:
        calls.append(data)
        return b"[" + data + b"]"

    writer.transform = seal
    writer.write([b"head", b"body"])
    writer.write([b"next"])
    await writer.flush()
    assert calls == [b"headbody", b"next"]
    assert await client.receive() == b"[headbody][next]"


def test_the_size_and_bytes_of_what_an_encoder_returns() -> None:
    from sota_dispatch import encoded_bytes, encoded_size

    assert encoded_size(b"abc") == 3
    assert encoded_size([b"ab", b"", b"cde"]) == 5
    assert encoded_size([]) == 0
    data = b"whole"
    assert encoded_bytes(data) is data
    assert encoded_bytes([b"ab", b"cd"]) == b"abcd"


async def test_the_codec_loop_hands_a_codecs_sealing_to_the_writer_after_its_handshake() -> None:
    from sota_dispatch import BufferedReader, CodecLoop

    class Sealing:
        """A codec ready after one byte, whose output is sealed from then on."""

        ready = False
        buffered = 0

        def feed(self, data: bytes) -> list[bytes]:
            if not self.ready:
                self.ready = True
                data = data[1:]
            return [data] if data else []

        def data_to_send(self) -> bytes:
            return b"" if self.ready else b"hello "

        def check(self) -> None:
            pass

        def output_sealing(self) -> object:
            return lambda data: b"[" + data + b"]"

    client, server = memory_stream_pair()
    writer = BufferedWriter(server)
    loop: CodecLoop[bytes] = CodecLoop(BufferedReader(server, writer=writer), writer, Sealing())
    await client.send(b"!frame")
    assert await loop.handshake() == [b"frame"]
    writer.write(b"answer")
    await writer.flush()
    data = b""
    with anyio.fail_after(5):
        while not data.endswith(b"]"):
            data += await client.receive()
    assert data == b"hello [answer]"
