"""libzmq 4.3.4 (pyzmq 25.1.2) keeps its connections to us for 35 s.

libzmq 4.3.3 and 4.3.4 drop a ZMTP 2.0 connection every HANDSHAKE_IVL (30 s
by default; libzmq#4106). We negotiate 3.x with them, so neither their
DEALER connected to our ROUTER nor our DEALER connected to their ROUTER may
see a disconnect within 35 s at the default interval. Our server runs on
asyncio, trio and uvloop at once, one thread each. pyzmq 25.1.2 cannot
share a virtual environment with the test suite's pyzmq, so the peer runs
in a venv of its own, built on first use.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import venv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream

from sota_dispatch import Server
from sota_zmtp import Dealer, EchoRouter

pytestmark = pytest.mark.anyio

PEER = Path(__file__).parent / "peers" / "old_libzmq_peer.py"
DURATION = 35.0


@pytest.fixture(scope="session")
def old_pyzmq_python() -> str:
    """An interpreter with pyzmq 25.1.2 (libzmq 4.3.4), cached between runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sota-dispatch"
    env_dir = cache / f"pyzmq-25.1.2-py{sys.version_info.major}{sys.version_info.minor}"
    python = env_dir / "bin" / "python"
    marker = env_dir / "ready"
    if not marker.exists():
        venv.create(env_dir, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "pyzmq==25.1.2"],
            check=True,
            timeout=600,
        )
        marker.touch()
    version = subprocess.run(
        [str(python), "-c", "import zmq; print(zmq.zmq_version())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version == "4.3.4"
    return str(python)


async def stay_up_for_35_seconds(old_pyzmq_python: str) -> None:
    router = EchoRouter()
    server = Server(router.factory, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        address = await tg.start(server.serve)
        async with await anyio.open_process([old_pyzmq_python, str(PEER), address, str(DURATION)], stderr=None) as peer:
            assert peer.stdout is not None
            lines = _lines(peer.stdout)
            hello = json.loads(await lines.__anext__())
            assert hello["libzmq"] == "4.3.4"
            ours = Dealer(f"127.0.0.1:{hello['port']}", identity=b"our-dealer")
            async with ours:
                rounds = 0

                async def our_traffic() -> None:
                    nonlocal rounds
                    while True:
                        await ours.send([b"ours %d" % rounds])
                        with anyio.fail_after(10):
                            assert await ours.receive() == [b"ours %d" % rounds]
                        rounds += 1
                        await anyio.sleep(0.25)  # pacing, as the peer does

                async with anyio.create_task_group() as traffic:
                    traffic.start_soon(our_traffic)
                    with anyio.fail_after(DURATION + 30):
                        report = json.loads(await lines.__anext__())
                    traffic.cancel_scope.cancel()
            assert await peer.wait() == 0
        server.shutdown()

    assert report["rounds"] > 50
    assert report["served"] > 50
    assert rounds > 50
    # One connection each way, for the whole 35 s.
    assert server.connections_total == 1
    assert ours.connects == 1
    assert report["dealer"].get("DISCONNECTED", 0) == 0
    assert report["router"].get("DISCONNECTED", 0) == 0
    assert report["router"].get("ACCEPTED", 0) == 1
    # libzmq reports HANDSHAKE_SUCCEEDED only for ZMTP 3.x peers: proof that
    # we negotiated 3.x, the version 4.3.4 does not time out.
    assert report["dealer"].get("HANDSHAKE_SUCCEEDED", 0) == 1
    assert report["router"].get("HANDSHAKE_SUCCEEDED", 0) == 1


#: The backends the server runs on, each in a thread of its own at once:
#: one 35-second window for all three instead of three in a row.
BACKENDS: list[tuple[str, dict[str, Any]]] = [("asyncio", {}), ("trio", {}), ("asyncio", {"use_uvloop": True})]


def test_libzmq_4_3_4_connections_stay_up_for_35_seconds_on_every_backend(old_pyzmq_python: str) -> None:
    pytest.importorskip("uvloop")

    def run(backend: tuple[str, dict[str, Any]]) -> None:
        name, options = backend
        anyio.run(stay_up_for_35_seconds, old_pyzmq_python, backend=name, backend_options=options)

    with concurrent.futures.ThreadPoolExecutor(len(BACKENDS)) as pool:
        for future in [pool.submit(run, backend) for backend in BACKENDS]:
            future.result(timeout=DURATION + 60)


async def _lines(stream: ByteReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()
