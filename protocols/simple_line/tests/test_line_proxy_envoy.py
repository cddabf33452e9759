"""The same routing from an Envoy bootstrap and from the native config.

examples/proxy/envoy.yaml states examples/proxy/simple_line.yaml's routes
in Envoy's terms; both run against the same tagged backends (one per
configured endpoint, tagged with that endpoint's port) and must send every
request to the same endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import yaml
from simple_line_support import Backend, Client

from sota_dispatch import ConfigError
from sota_dispatch.config import ProxyConfig, load_config
from sota_dispatch.config.envoy import from_envoy
from sota_dispatch.testing import running_proxy, serving

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "proxy"


@asynccontextmanager
async def tagged(config: ProxyConfig, servers: dict[str, str]) -> AsyncIterator[str]:
    """Run ``config`` with each endpoint replaced by its tagged backend."""
    clusters = tuple(
        attrs.evolve(
            cluster,
            endpoints=tuple(attrs.evolve(e, address=servers[e.address]) for e in cluster.endpoints),
            health_check=None,  # the checks would add probe lines to the backends
        )
        for cluster in config.clusters
    )
    listeners = tuple(attrs.evolve(listener, address="127.0.0.1:0") for listener in config.listeners)
    config = attrs.evolve(config, listeners=listeners, clusters=clusters, admin=None)
    async with running_proxy(config) as proxy:
        yield proxy.addresses["lines"]


async def replies_through(address: str, requests: list[bytes]) -> list[bytes]:
    host, _, port = address.rpartition(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        return await Client(stream).call(*requests)


async def test_the_envoy_file_routes_like_the_native_one() -> None:
    native = load_config(EXAMPLES / "simple_line.yaml")
    envoy = load_config(EXAMPLES / "envoy.yaml")
    addresses = sorted({e.address for c in native.clusters for e in c.endpoints})
    assert addresses == sorted({e.address for c in envoy.clusters for e in c.endpoints})
    requests = [b"service=orders&user=u%d" % i for i in range(60)] + [b"n=%d" % i for i in range(60)]
    async with AsyncExitStack() as stack:
        servers = {}
        for address in addresses:
            server = await stack.enter_async_context(serving(Backend(address.rpartition(":")[2]).factory))
            assert server.address is not None
            servers[address] = server.address
        results = []
        for config in (native, envoy):
            async with tagged(config, servers) as listen:
                results.append(await replies_through(listen, requests))
    by_native, by_envoy = results
    assert by_native == by_envoy
    used = {reply.partition(b":")[0] for reply in by_native}
    assert used == {b"7101", b"7102", b"7103", b"7111", b"7112"}  # 7113 is the standby


def test_what_the_envoy_subset_lacks_is_an_error_naming_the_field(tmp_path: Path) -> None:
    text = (EXAMPLES / "envoy.yaml").read_text()
    path = tmp_path / "envoy.yaml"
    path.write_text(text.replace("lb_policy: RING_HASH", "lb_policy: RING_HASH\n      dns_lookup_family: V4_ONLY"))
    with pytest.raises(ConfigError, match=r"^static_resources\.clusters\[0\]\.dns_lookup_family: not supported"):
        load_config(path)
    path.write_text(text.replace("name: envoy.filters.network.generic_proxy", "name: envoy.filters.network.tcp_proxy"))
    with pytest.raises(ConfigError, match=r"filters\[0\]\.name: only envoy\.filters\.network\.generic_proxy"):
        load_config(path)


def envoy_document(route: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / "envoy.yaml").read_text())
    listener = document["static_resources"]["listeners"][0]
    typed = listener["filter_chains"][0]["filters"][0]["typed_config"]
    typed["route_config"]["virtual_hosts"][0]["routes"] = [{"match": {"prefix": ""}, "route": route}]
    clusters = document["static_resources"]["clusters"]
    clusters[:] = [{**clusters[0], "name": "c", **(cluster or {})}]
    clusters[0]["lb_policy"] = "ROUND_ROBIN"
    del document["admin"]
    return document


def test_envoys_own_defaults_are_kept() -> None:
    config = from_envoy(envoy_document({"cluster": "c"}, {"outlier_detection": {"consecutive_5xx": 3}}))
    [route] = config.listeners[0].routes
    [cluster] = config.clusters
    assert route.retry.attempts == 1  # no retry_policy: no retries
    assert cluster.connect_timeout == 5.0
    assert cluster.outlier_detection is not None
    assert cluster.outlier_detection.max_ejection_percent == 10
    config = from_envoy(envoy_document({"cluster": "c", "retry_policy": {"retry_on": "reset"}}))
    assert config.listeners[0].routes[0].retry.attempts == 2  # num_retries defaults to 1


@pytest.mark.parametrize(
    ("route", "cluster", "message"),
    [
        (
            {"cluster": "c", "retry_policy": {"num_retries": "two"}},
            None,
            r"routes\[0\]\.route\.retry_policy\.num_retries: expected an integer >= 0",
        ),
        (
            {"cluster": "c"},
            {"health_checks": [{"tcp_health_check": {"send": {"text": "00"}}}]},
            r"tcp_health_check\.send",
        ),
    ],
)
def test_envoy_fields_outside_the_subset_are_named(
    route: dict[str, Any], cluster: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_envoy(envoy_document(route, cluster))


def test_envoy_matchers_and_codec_options_are_not_half_read() -> None:
    document = envoy_document({"cluster": "c"})
    filters = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters["typed_config"]["codec_config"]["typed_config"] = {"max_line": 10}
    with pytest.raises(ConfigError, match=r"codec_config\.typed_config: not supported"):
        from_envoy(document)
    document = envoy_document({"cluster": "c"})
    routes = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes["route_config"]["virtual_hosts"][0]["routes"][0]["match"]["headers"] = [
        {"name": "service", "string_match": {"exact": "a", "prefix": "b"}}
    ]
    with pytest.raises(ConfigError, match=r"string_match: expected exactly one of exact, prefix, safe_regex, got 2"):
        from_envoy(document)
