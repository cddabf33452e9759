"""Dubbo providers found in a real ZooKeeper, as Dubbo's Java registry writes them.

A ZooKeeper server (Debian's package, :func:`sota_dispatch.testing.zookeeper_server`)
holds the registry. The test writes each provider the way Dubbo's
``ZookeeperRegistry`` does: persistent ``/dubbo/<interface>/providers``, and
under it one ephemeral node per provider, named by its URL encoded with
Java's ``URLEncoder``, holding the provider's address as data (Curator's
default). dubbo-ssl-python's own registry reader reads the same nodes: an
independent check that they are Dubbo's. Providers are tagged dubbo echo
services (each answers ``<tag>:<argument>``); a real dubbo client
(dubbo-ssl-python) calls through the proxy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import anyio
import pytest
from xprotocol_support import DUBBO_CALL_TIMEOUT, close_dubbo_connection, serving

from sota_dispatch import DispatcherFactory
from sota_dispatch.config import parse_config
from sota_dispatch.testing import require_zookeeper, running_proxy, zookeeper_server
from sota_xprotocol import DubboEchoDispatcher, dubbo

pytestmark = pytest.mark.anyio

INTERFACE = "com.example.EchoService"


@pytest.fixture(autouse=True)
def _needs_zookeeper() -> None:
    require_zookeeper()


def tagged(tag: str) -> DispatcherFactory:
    """A dubbo provider answering each call with ``<tag>:<first argument>``."""

    class Tagged(DubboEchoDispatcher):
        def on_request(self, frame: dubbo.DubboFrame) -> bytes | None:
            if frame.is_event or not frame.is_twoway:
                return None
            invocation = frame.invocation()
            value = f"{tag}:{invocation.arguments[0]}"
            return dubbo.value_response(frame, value, dubbo_version=invocation.dubbo_version).encode()

    return Tagged


def java_url_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(text, "UTF-8")``: ``*`` stays, ``~`` does not."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def provider_url(address: str, scheme: str = "dubbo", **params: str) -> str:
    """A provider's URL as Dubbo 2.7 registers it (parameters in key order)."""
    values = {
        "anyhost": "true",
        "application": "echo-provider",
        "deprecated": "false",
        "dubbo": "2.0.2",
        "dynamic": "true",
        "generic": "false",
        "group": "g1",
        "interface": INTERFACE,
        "methods": "echo,echoAll",
        "pid": "4242",
        "release": "2.7.23",
        "revision": "1.0.0",  # dubbo-ssl-python's reader needs it (a KeyError without)
        "side": "provider",
        "timestamp": "1764720000000",
        "version": "1.0.0",
        **params,
    }
    query = "&".join(f"{key}={value}" for key, value in sorted(values.items()) if value)
    return f"{scheme}://{address}/{INTERFACE}?{query}"


class Registry:
    """Writes providers into ZooKeeper as Dubbo's Java registry does (kazoo,
    blocking: call from a worker thread or before the loop needs to run)."""

    def __init__(self, hosts: str) -> None:
        from kazoo.client import KazooClient

        self.client = KazooClient(hosts=hosts)
        self.client.start(timeout=10)
        self.providers = f"/dubbo/{INTERFACE}/providers"
        # Persistent, as Dubbo creates them: the providers' category, and
        # those a provider subscribes to (configurators, routers).
        for category in ("providers", "configurators", "routers"):
            self.client.ensure_path(f"/dubbo/{INTERFACE}/{category}")

    def register(self, url: str) -> str:
        path = f"{self.providers}/{java_url_encode(url)}"
        host = url.split("://", 1)[1].split(":", 1)[0]
        self.client.create(path, host.encode(), ephemeral=True)
        return path

    def unregister(self, path: str) -> None:
        self.client.delete(path)

    def close(self) -> None:
        self.client.stop()
        self.client.close()


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[Any]:
    with zookeeper_server(tmp_path / "zk") as server:
        yield server


def calls_for(address: str, seconds: float, start: int = 0) -> list[tuple[float, str]]:
    """Calls through the proxy, one after another, for ``seconds``:
    ``(time.monotonic() when answered, answer)`` each. dubbo-ssl-python
    keeps its one connection to ``address`` from one call of this to the
    next (its first connect sleeps 0.5 s), until :func:`close_dubbo_connection`."""
    from dubbo_ssl.client import DubboClient

    client = DubboClient(INTERFACE, group="g1", version="1.0.0", host=address)
    answers = []
    deadline = time.monotonic() + seconds
    i = start
    while time.monotonic() < deadline:
        answer = client.call("echo", (f"call-{i}",), timeout=DUBBO_CALL_TIMEOUT)
        answers.append((time.monotonic(), answer))
        i += 1
    return answers


def tags(answers: list[tuple[float, str]]) -> set[str]:
    return {answer.partition(":")[0] for _, answer in answers}


def proxy_config(hosts: str) -> dict[str, Any]:
    return {
        "listeners": [{"name": "rpc", "address": "127.0.0.1:0", "protocol": "dubbo", "routes": [{"cluster": "echo"}]}],
        "clusters": [
            {
                "name": "echo",
                "endpoints": [],
                "zookeeper": {"hosts": hosts, "interface": INTERFACE, "group": "g1", "version": "1.0.0"},
            }
        ],
    }


async def test_providers_come_and_go_with_zookeeper_and_outlive_it(
    zookeeper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.discovery")
    registry = await anyio.to_thread.run_sync(Registry, zookeeper.hosts)
    try:
        async with serving(tagged("P1")) as p1, serving(tagged("P2")) as p2, serving(tagged("P3")) as p3:
            p1_address, p2_address, p3_address = (f"{h}:{p}" for h, p in (p1, p2, p3))
            first = await anyio.to_thread.run_sync(registry.register, provider_url(p1_address))
            await anyio.to_thread.run_sync(registry.register, provider_url(p2_address))
            # Not for this cluster: disabled, another group, another version, another protocol, garbage.
            for url in (
                provider_url(p3_address, enabled="false"),
                provider_url(p3_address, group="g2"),
                provider_url(p3_address, version="2.0.0"),
                provider_url(p3_address, scheme="tri"),
            ):
                await anyio.to_thread.run_sync(registry.register, url)
            await anyio.to_thread.run_sync(registry.client.create, f"{registry.providers}/not%3Aa%3Aurl", b"")

            # dubbo-ssl-python reads the same nodes as Dubbo providers (it does not honour enabled=false).
            def their_view() -> list[str]:
                from dubbo_ssl.client import ZkRegister

                reader = ZkRegister(zookeeper.hosts)
                try:
                    reader.get_provider_host(INTERFACE, "1.0.0", "g1")
                    return sorted(reader.hosts[(INTERFACE, "1.0.0", "g1")])
                finally:
                    reader.zk.stop()
                    reader.zk.close()

            assert await anyio.to_thread.run_sync(their_view) == sorted([p1_address, p2_address, p3_address])

            async with running_proxy(parse_config(proxy_config(zookeeper.hosts))) as proxy:
                cluster = proxy.clusters["echo"]
                address = proxy.addresses["rpc"]
                await _phases(cluster, address, registry, zookeeper, first, p2_address, p3_address, caplog)
                await anyio.to_thread.run_sync(close_dubbo_connection, address)
    finally:
        await anyio.to_thread.run_sync(registry.close)


async def _phases(
    cluster: Any,
    address: str,
    registry: Registry,
    zookeeper: Any,
    first: str,
    p2_address: str,
    p3_address: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Providers leave and join while a client calls; then ZooKeeper stops."""
    answers = await anyio.to_thread.run_sync(calls_for, address, 0.8)
    assert tags(answers) == {"P1", "P2"}, answers[:5]
    assert len(cluster.endpoints) == 2
    assert cluster.describe()["discovery"]["state"] == "connected"

    # P1 leaves the registry: within a second it gets nothing more.
    removed = time.monotonic()
    await anyio.to_thread.run_sync(registry.unregister, first)
    answers = await anyio.to_thread.run_sync(calls_for, address, 1.2, 1000)
    late = [at - removed for at, answer in answers if answer.startswith("P1:")]
    assert not late or max(late) < 1.0, late
    assert {answer[:2] for at, answer in answers if at - removed > 1.0} == {"P2"}

    # P3 registers: within a second it gets traffic.
    added = time.monotonic()
    await anyio.to_thread.run_sync(registry.register, provider_url(p3_address, weight="200"))
    answers = await anyio.to_thread.run_sync(calls_for, address, 1.2, 2000)
    first_p3 = min(at - added for at, answer in answers if answer.startswith("P3:"))
    assert first_p3 < 1.0, first_p3
    assert tags([a for a in answers if a[0] - added > 1.0]) == {"P2", "P3"}
    assert {e.address: e.weight for e in cluster.endpoints} == {p2_address: 100, p3_address: 200}

    # ZooKeeper stops: traffic goes on to the last endpoints, and the proxy says so.
    zookeeper.stop()
    answers = await anyio.to_thread.run_sync(calls_for, address, 1.0, 3000)
    assert tags(answers) == {"P2", "P3"}
    assert len(answers) > 50
    described = cluster.describe()["discovery"]
    assert described["state"] in ("suspended", "lost"), described
    assert described["stale"] is True
    assert any("keeping the last 2 endpoints" in r.getMessage() for r in caplog.records)
    assert {e.address for e in cluster.endpoints} == {p2_address, p3_address}
    ignored = [r.getMessage() for r in caplog.records if "ignoring ZooKeeper node" in r.getMessage()]
    assert len(ignored) == 1, ignored  # the garbage node, once; the others are simply not ours
