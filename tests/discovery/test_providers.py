"""Dubbo provider URLs and plain ``HOST:PORT`` children, read as endpoints.

The node names are what Dubbo's Java registry writes (``URLEncoder`` over
``URL.toFullString()``); whatever else a registry holds must be reported,
never raise.
"""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sota_dispatch import ConfigError
from sota_dispatch.config.discovery import ZooKeeperConfig
from sota_dispatch.config.model import EndpointConfig
from sota_dispatch.discovery import endpoints_from

INTERFACE = "org.apache.dubbo.demo.DemoService"
DUBBO = ZooKeeperConfig("127.0.0.1:2181", interface=INTERFACE, group="g1", version="1.0.0")


def node(host: str, port: int, scheme: str = "dubbo", **params: str) -> str:
    values = {"interface": INTERFACE, "group": "g1", "version": "1.0.0", "side": "provider", **params}
    query = "&".join(f"{k}={v}" for k, v in sorted(values.items()) if v)
    return quote_plus(f"{scheme}://{host}:{port}/{INTERFACE}?{query}", safe="*")


def test_a_java_registered_provider_is_read_with_its_weight() -> None:
    children = [
        # As a Dubbo 2.7.23 provider registers itself.
        "dubbo%3A%2F%2F10.0.0.5%3A20880%2Forg.apache.dubbo.demo.DemoService%3Fanyhost%3Dtrue%26application%3D"
        "demo-provider%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26group%3Dg1%26"
        "interface%3Dorg.apache.dubbo.demo.DemoService%26methods%3DsayHello%2CsayHelloAsync%26pid%3D4242%26"
        "release%3D2.7.23%26side%3Dprovider%26timestamp%3D1764720000000%26version%3D1.0.0%26weight%3D250",
        node("10.0.0.6", 20880),
    ]
    endpoints, problems = endpoints_from(children, DUBBO)
    assert endpoints == (EndpointConfig("10.0.0.5:20880", 250), EndpointConfig("10.0.0.6:20880", 100))
    assert problems == []


def test_only_this_clusters_enabled_providers_count() -> None:
    children = [
        node("10.0.0.1", 1, enabled="false"),
        node("10.0.0.2", 2, disabled="true"),
        node("10.0.0.3", 3, group="g2"),
        node("10.0.0.4", 4, version="2.0.0"),
        node("10.0.0.5", 5, scheme="tri"),
        node("10.0.0.6", 6, category="configurators"),
        node("10.0.0.7", 7, weight="0"),
        node("10.0.0.8", 8, weight="5000"),  # capped: a ring hash holds 160 points per unit
        node("10.0.0.8", 8, weight="7"),  # registered twice: once, at the highest weight
        node("[::1]", 9),
    ]
    endpoints, problems = endpoints_from(children, DUBBO)
    assert endpoints == (EndpointConfig("10.0.0.8:8", 1000), EndpointConfig("[::1]:9", 100))
    assert problems == []


@pytest.mark.parametrize(
    ("group", "version", "matched"),
    [
        ("*", "*", ["a", "b", "none"]),
        ("g1,g2", "1.0.0", ["a", "b"]),
        (None, None, ["none"]),
        ("g2", "*", ["b"]),
    ],
)
def test_group_and_version_match_as_dubbo_does(group: str | None, version: str | None, matched: list[str]) -> None:
    config = ZooKeeperConfig("127.0.0.1:2181", interface=INTERFACE, group=group, version=version)
    ports = {"a": 1, "b": 2, "none": 3}
    children = [
        node("10.0.0.1", 1, group="g1"),
        node("10.0.0.1", 2, group="g2"),
        node("10.0.0.1", 3, group="", version=""),
    ]
    endpoints, _ = endpoints_from(children, config)
    assert [e.address for e in endpoints] == [f"10.0.0.1:{ports[name]}" for name in matched]


def test_unreadable_children_are_reported_not_raised() -> None:
    children = ["garbage", node("10.0.0.1", 99999), quote_plus("dubbo://10.0.0.1:1/other.Service?x=1"), "%zz"]
    endpoints, problems = endpoints_from(children, DUBBO)
    assert endpoints == ()
    assert [child for child, _ in problems] == children
    assert "interface 'other.Service'" in problems[2][1]


def test_plain_children_are_host_port() -> None:
    plain = ZooKeeperConfig("127.0.0.1:2181", path="/services/echo")
    endpoints, problems = endpoints_from(["127.0.0.1:7001", "localhost:7002", "nope", "127.0.0.1:0"], plain)
    assert endpoints == (EndpointConfig("127.0.0.1:7001"), EndpointConfig("localhost:7002"))
    assert [child for child, _ in problems] == ["nope", "127.0.0.1:0"]
    assert plain.watched == "/services/echo"
    assert DUBBO.watched == f"/dubbo/{INTERFACE}/providers"


@given(st.lists(st.text(max_size=200), max_size=8))
def test_any_children_give_endpoints_or_problems_never_an_exception(children: list[str]) -> None:
    for config in (DUBBO, ZooKeeperConfig("127.0.0.1:2181", path="/x")):
        endpoints, problems = endpoints_from(children, config)
        assert len(endpoints) + len(problems) <= len(children)


@given(
    st.lists(
        st.tuples(
            st.ip_addresses(v=4).map(str),
            st.integers(1, 65535),
            st.integers(1, 1000),
            st.booleans(),
        ),
        max_size=10,
        unique_by=lambda p: (p[0], p[1]),
    )
)
def test_registered_providers_round_trip(providers: list[tuple[str, int, int, bool]]) -> None:
    children = [
        node(host, port, weight=str(weight), enabled=str(enabled).lower()) for host, port, weight, enabled in providers
    ]
    endpoints, problems = endpoints_from(children, DUBBO)
    expected = sorted(f"{host}:{port}" for host, port, _, enabled in providers if enabled)
    assert [e.address for e in endpoints] == expected
    weights = {f"{host}:{port}": weight for host, port, weight, _ in providers}
    assert all(e.weight == weights[e.address] for e in endpoints)
    assert problems == []


@pytest.mark.parametrize(
    ("given_", "problem"),
    [
        ({"hosts": "127.0.0.1:2181"}, "exactly one of interface"),
        ({"hosts": "127.0.0.1:2181", "interface": "a", "path": "/x"}, "exactly one of interface"),
        ({"hosts": "127.0.0.1", "path": "/x"}, "host:port"),
        ({"hosts": "127.0.0.1:2181", "path": "x"}, "absolute ZooKeeper path"),
        ({"hosts": "127.0.0.1:2181", "path": "/x", "group": "g"}, "go with interface"),
    ],
)
def test_zookeeper_config_problems_name_the_field(given_: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        ZooKeeperConfig(**given_)  # type: ignore[arg-type]
