"""A multiplexed client: many concurrent calls share one connection.

The wire format is one line per message, ``ID:TEXT``. ``UpperService``
answers each batch of requests in reverse order, to show that the client
matches answers by id, not by order.
"""

from __future__ import annotations

import anyio

from sota_dispatch import Dispatcher, Server


class UpperService(Dispatcher):
    async def serve(self) -> None:
        while True:
            batch = [await self.reader.read_until(b"\n", max_bytes=4096)]
            while self.reader.buffered:
                batch.append(await self.reader.read_until(b"\n", max_bytes=4096))
            for line in reversed(batch):
                stream_id, _, text = line.partition(b":")
                self.writer.write(stream_id + b":" + text.upper() + b"\n")


class UpperClient(Dispatcher):
    stream_timeout = 10.0  # every call fails with StreamTimeout after this

    async def serve(self) -> None:  # the client's read loop: match answers to calls
        while True:
            stream_id, _, text = (await self.reader.read_until(b"\n", max_bytes=4096)).partition(b":")
            self.streams.complete(int(stream_id), text)

    async def call(self, text: bytes) -> bytes:
        pending = self.streams.open()
        await self.writer.send(b"%d:%s\n" % (pending.stream_id, text))
        answer: bytes = await pending.result()
        return answer


async def main() -> dict[int, bytes]:
    answers: dict[int, bytes] = {}
    server = Server(UpperService, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await UpperClient.connect(address) as client, anyio.create_task_group() as calls:
            for i in range(100):

                async def one(i: int = i) -> None:
                    answers[i] = await client.call(b"hello %d" % i)

                calls.start_soon(one)
        server.shutdown()
    return answers


if __name__ == "__main__":
    print(anyio.run(main))
