"""A ZeroMQ ROUTER service in pure Python: answers every message upper-cased.

Any libzmq DEALER or REQ can talk to it, e.g. with pyzmq:
``s = zmq.Context().socket(zmq.REQ); s.connect("tcp://127.0.0.1:5555")``.
"""

from __future__ import annotations

import anyio

from sota_dispatch import Server
from sota_zmtp import Router


class UpperRouter(Router):
    async def on_message(self, identity: bytes, frames: list[bytes]) -> None:
        self.send([identity, *(frame.upper() for frame in frames)])


async def main(listen: str = "127.0.0.1:5555") -> None:
    server = Server(UpperRouter().factory, listen)
    async with anyio.create_task_group() as tg:
        print("listening on", await tg.start(server.serve), flush=True)


if __name__ == "__main__":
    anyio.run(main)
