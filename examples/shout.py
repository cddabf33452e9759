"""The smallest protocol: upper-case every line. Run it and try `nc 127.0.0.1 7071`."""

from __future__ import annotations

import anyio

from sota_dispatch import Dispatcher, Server


class Shout(Dispatcher):
    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\r\n", max_bytes=65536)
            await self.writer.send(line.upper() + b"\r\n")


async def main(listen: str = "127.0.0.1:7071") -> None:
    server = Server(Shout, listen)
    async with anyio.create_task_group() as tg:
        print("listening on", await tg.start(server.serve), flush=True)


if __name__ == "__main__":
    anyio.run(main)
