"""The simple_line example proxy configs (examples/proxy/simple_line.yaml,
and envoy.yaml in Envoy's own format) run with real backends on 127.0.0.1:
a request takes each route."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sota_dispatch import BufferedReader
from sota_dispatch.config import load_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import connect, running_with_backends
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "proxy"


async def lines(proxy: Proxy, listener: str, *requests: bytes) -> list[bytes]:
    async with await connect(proxy.addresses[listener]) as stream:
        await stream.send(b"".join(r + b"\r\n" for r in requests))
        reader = BufferedReader(stream)
        with anyio.fail_after(10):
            return [await reader.read_until(b"\r\n", max_bytes=65536) for _ in requests]


@pytest.mark.parametrize("name", ["simple_line", "envoy"])
async def test_example(name: str) -> None:
    config = load_config(EXAMPLES / f"{name}.yaml")
    backends = {cluster.name: SimpleLineDispatcher for cluster in config.clusters}
    async with running_with_backends(config, backends) as proxy:
        replies = await lines(proxy, "lines", b"service=orders&user=u1", b"a=1")
    assert replies == [b'receive:{"service":["orders"],"user":["u1"]}', b'receive:{"a":["1"]}']
