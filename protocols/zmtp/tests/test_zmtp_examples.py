"""The ZMTP examples run: the pure-Python ROUTER (examples/zmtp_upper.py)
with a real libzmq REQ, and examples/proxy/zmtp.yaml with real backends and
a real libzmq DEALER."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import zmq

from sota_dispatch import Server
from sota_dispatch.config import load_config
from sota_dispatch.testing import running_with_backends
from sota_zmtp import ZmtpEchoDispatcher

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


async def test_zmtp_router_example_with_a_real_libzmq_req() -> None:
    spec = importlib.util.spec_from_file_location("example_zmtp_upper", EXAMPLES / "zmtp_upper.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    server = Server(example.UpperRouter().factory, "127.0.0.1:0")

    def client(address: str) -> list[bytes]:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.RCVTIMEO, 10_000)
            req.connect(f"tcp://{address}")
            req.send_multipart([b"hello", b"zmtp"])
            return req.recv_multipart()
        finally:
            ctx.destroy(0)

    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        assert await anyio.to_thread.run_sync(lambda: client(address)) == [b"HELLO", b"ZMTP"]
        server.shutdown()


async def test_zmtp_proxy_example() -> None:
    config = load_config(EXAMPLES / "proxy" / "zmtp.yaml")
    backends = {cluster.name: ZmtpEchoDispatcher for cluster in config.clusters}
    async with running_with_backends(config, backends) as proxy:

        def call() -> list[list[bytes]]:
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            try:
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.RCVTIMEO, 10_000)
                sock.connect(f"tcp://{proxy.addresses['zmq']}")
                replies = []
                for message in ([b"report.daily"], [b"work", b"item"]):
                    sock.send_multipart(message)
                    replies.append(sock.recv_multipart())
                return replies
            finally:
                ctx.destroy(0)

        assert await anyio.to_thread.run_sync(call) == [[b"report.daily"], [b"work", b"item"]]
