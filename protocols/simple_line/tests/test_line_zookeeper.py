"""A simple_line cluster whose endpoints are the ``HOST:PORT`` children of a ZooKeeper node.

Any protocol can take its endpoints from plain ZooKeeper nodes (Dubbo's
registry layout has its own test, with the dubbo plugin). The watch must
outlive the ZooKeeper server: stopped and started again on the same data,
the registry's changes still reach the proxy.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for, tags

from sota_dispatch.testing import require_zookeeper, zookeeper_server

pytestmark = pytest.mark.anyio

PATH = "/services/lines"


@pytest.fixture(autouse=True)
def _needs_zookeeper() -> None:
    require_zookeeper()


class Nodes:
    """The registry side (kazoo, blocking: from a worker thread)."""

    def __init__(self, hosts: str) -> None:
        from kazoo.client import KazooClient

        self.client = KazooClient(hosts=hosts)
        self.client.start(timeout=10)

    def add(self, name: str) -> None:
        """Persistent: the registry's own session may expire while the
        server restarts (kazoo's retry then makes a new one); the test is
        about the proxy's watch, not the registry's session."""
        self.client.retry(self.client.create, f"{PATH}/{name}", b"", makepath=True)

    def remove(self, *names: str) -> None:
        """Delete ``names`` in one transaction (one change for a watcher)."""
        transaction = self.client.transaction()
        for name in names:
            transaction.delete(f"{PATH}/{name}")
        results = self.client.retry(transaction.commit)
        assert not any(isinstance(result, Exception) for result in results), results

    def close(self) -> None:
        self.client.stop()
        self.client.close()


async def until_tag(c: Any, tag: bytes, limit: float = 10.0) -> None:
    """Call until ``tag`` answers (each answer is the observation: no sleeps)."""
    with anyio.fail_after(limit):
        while tag not in tags(await c.call(b"probe=1", b"probe=2")):
            pass


async def test_plain_children_are_the_endpoints_and_the_watch_outlives_a_zookeeper_restart(
    tmp_path: Path,
) -> None:
    async with backends("A", "B", "C") as ((_, a_address), (_, b_address), (_, c_address)):
        zookeeper_dir = tmp_path / "zk"
        with zookeeper_server(zookeeper_dir) as zookeeper:
            port = zookeeper.port
            nodes = await anyio.to_thread.run_sync(Nodes, zookeeper.hosts)
            try:
                await anyio.to_thread.run_sync(nodes.add, a_address)
                await anyio.to_thread.run_sync(nodes.add, "not-an-address")  # ignored (and logged once)
                document = config([], zookeeper={"hosts": zookeeper.hosts, "path": PATH, "session_timeout": 4})
                async with proxy_for(document) as proxy, client(proxy) as c:
                    await until_tag(c, b"A")
                    await anyio.to_thread.run_sync(nodes.add, b_address)
                    await until_tag(c, b"B")
                    await anyio.to_thread.run_sync(nodes.remove, a_address)
                    # Once A's removal is in, only B answers (A's connection closes idle).
                    with anyio.fail_after(10):
                        while tags(await c.call(*[b"x=%d" % i for i in range(4)])) != [b"B"] * 4:
                            pass
                    zookeeper.stop()
                    assert tags(await c.call(b"down=1", b"down=2")) == [b"B", b"B"]
                    # The same server again, on the same port and data: the
                    # registry's session survives, and the proxy's watch too.
                    with zookeeper_server(zookeeper_dir, port=port):
                        await anyio.to_thread.run_sync(nodes.add, c_address)
                        await until_tag(c, b"C", limit=20)
                        discovery = proxy.clusters["backends"].discovery
                        assert discovery.state == "connected"
                        cluster = proxy.clusters["backends"]
                        assert [e.address for e in cluster.endpoints] == sorted([b_address, c_address])
                        # Every node gone: empty protection keeps the last endpoints (and says so).
                        await anyio.to_thread.run_sync(nodes.remove, b_address, c_address)
                        with anyio.fail_after(10):
                            while not discovery.protecting:
                                assert sorted(tags(await c.call(b"y=1", b"y=2"))) == [b"B", b"C"]
                        assert cluster.describe()["discovery"]["empty_protection"] is True
                        assert sorted(tags(await c.call(b"z=1", b"z=2"))) == [b"B", b"C"]
            finally:
                await anyio.to_thread.run_sync(nodes.close)


async def test_a_zookeeper_that_never_answers_leaves_the_config_endpoints_serving() -> None:
    """A peer that takes the connection and says nothing (a hung server, a
    black-holing firewall): the config's endpoints serve meanwhile, and the
    proxy still shuts down promptly."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # never accepted, never answered
        host, port = hole.getsockname()
        hosts = f"{host}:{port}"
        async with backends("A") as ((_, a_address),):
            document = config([a_address], zookeeper={"hosts": hosts, "path": PATH, "session_timeout": 2})
            async with proxy_for(document) as proxy, client(proxy) as c:
                assert tags(await c.call(b"x=1", b"x=2")) == [b"A", b"A"]
                discovery = proxy.clusters["backends"].discovery
                assert discovery.state == "connecting"
                assert discovery.endpoints is None
                assert discovery.describe()["stale"] is True
                closing = anyio.current_time()
            assert anyio.current_time() - closing < 8  # the ZooKeeper client stops within its bound


async def test_a_registry_full_of_garbage_is_read_and_logged_briefly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sota_dispatch.discovery")
    async with backends("A") as ((_, a_address),):
        with zookeeper_server(tmp_path / "zk") as zookeeper:
            nodes = await anyio.to_thread.run_sync(Nodes, zookeeper.hosts)
            try:

                def fill() -> None:
                    nodes.client.ensure_path(PATH)
                    transaction = nodes.client.transaction()
                    for i in range(500):
                        transaction.create(f"{PATH}/garbage-{i}:{'x' * i}", b"")
                    transaction.create(f"{PATH}/{a_address}", b"")
                    nodes.client.retry(transaction.commit)

                await anyio.to_thread.run_sync(fill)
                document = config([], zookeeper={"hosts": zookeeper.hosts, "path": PATH})
                async with proxy_for(document) as proxy, client(proxy) as c:
                    await until_tag(c, b"A")
                    assert [e.address for e in proxy.clusters["backends"].endpoints] == [a_address]
            finally:
                await anyio.to_thread.run_sync(nodes.close)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "ignoring ZooKeeper node" in w]) == 5
    assert any("ignoring 495 more unreadable ZooKeeper nodes" in w for w in warnings)
