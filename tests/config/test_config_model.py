"""Config values are immutable, hashable and checked when they are built,
in Python as from YAML, by one set of rules and one set of defaults."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from sota_dispatch import ConfigError
from sota_dispatch.config import (
    AdminConfig,
    BreakerConfig,
    ClusterConfig,
    EndpointConfig,
    FrozenMap,
    HealthCheckConfig,
    LimitsConfig,
    ListenerConfig,
    MatchConfig,
    OutlierConfig,
    OverloadConfig,
    PoolConfig,
    ProxyConfig,
    RetryConfig,
    RouteConfig,
    ThresholdsConfig,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "proxy").glob("*.yaml"))


def docs_yaml() -> list[str]:
    """The YAML configurations shown in the docs."""
    text = (ROOT / "docs" / "proxy.rst").read_text()
    blocks = [textwrap.dedent(b) for b in re.findall(r"\.\. code-block:: yaml\n\n((?:   .*\n|\n)+)", text)]
    assert blocks, "docs/proxy.rst shows no YAML configuration"
    return blocks


def endpoint(address: str = "127.0.0.1:7001") -> EndpointConfig:
    return EndpointConfig(address)


def proxy(**changes: Any) -> ProxyConfig:
    fields: dict[str, Any] = {
        "listeners": (ListenerConfig("l", "127.0.0.1:7000", "simple_line", (RouteConfig("c"),)),),
        "clusters": (ClusterConfig("c", (endpoint(),)),),
    }
    return ProxyConfig(**{**fields, **changes})


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_configs_are_hashable_values(example: Path, tmp_path: Path) -> None:
    config = load_config(example)
    copy = tmp_path / example.name
    copy.write_bytes(example.read_bytes())
    again = load_config(copy)
    assert again == config
    assert hash(again) == hash(config)
    assert {config: "current"}[again] == "current"  # a config can key a swap table
    assert attrs.evolve(config, drain_timeout=config.drain_timeout + 1) != config


@pytest.mark.parametrize("text", docs_yaml(), ids=lambda text: text.split(":")[0])
def test_the_docs_configs_are_valid_hashable_values(text: str) -> None:
    config = parse_config(yaml.safe_load(text))
    assert hash(config) == hash(parse_config(yaml.safe_load(text)))


def test_a_changed_file_is_a_different_config(tmp_path: Path) -> None:
    example = ROOT / "examples" / "proxy" / "simple_line.yaml"
    text = example.read_text()
    assert "7101" in text
    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("7101", "7109", 1))
    assert load_config(changed) != load_config(example)


def test_options_are_frozen_maps_equal_to_the_dicts_they_came_from() -> None:
    listener = ListenerConfig("l", "127.0.0.1:0", "zmtp", (RouteConfig("c"),), options={"b": "2", "a": "1"})
    assert isinstance(listener.options, FrozenMap)
    assert listener.options == {"a": "1", "b": "2"}
    assert list(listener.options) == ["b", "a"]  # the order given
    assert hash(listener) == hash(attrs.evolve(listener, options={"a": "1", "b": "2"}))
    with pytest.raises(TypeError):
        listener.options["c"] = "3"  # type: ignore[index]
    parsed = parse_config(
        {
            "listeners": [
                {"name": "l", "address": "127.0.0.1:0", "protocol": "zmtp", "routes": [{"cluster": "c"}]},
            ],
            "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"], "options": {"identity": "x", "flag": True}}],
        }
    )
    assert parsed.clusters[0].options == FrozenMap({"identity": "x", "flag": "true"})


def test_frozen_map() -> None:
    a = FrozenMap({"x": 1, "y": 2})
    b = FrozenMap([("y", 2), ("x", 1)])
    assert a == b
    assert hash(a) == hash(b)
    assert a == {"y": 2, "x": 1}
    assert a != FrozenMap({"x": 1})
    assert a != [("x", 1), ("y", 2)]
    assert (dict(a), len(a), "x" in a, a.get("z")) == ({"x": 1, "y": 2}, 2, True, None)
    assert repr(a) == "FrozenMap({'x': 1, 'y': 2})"
    assert FrozenMap() == {}
    with pytest.raises(AttributeError):
        a.other = 1  # type: ignore[attr-defined]


#: Config objects built in Python, and the first line of the error each raises.
BAD_VALUES: list[tuple[Callable[[], object], str]] = [
    (lambda: EndpointConfig("localhost"), 'address: expected HOST:PORT, got "localhost"'),
    (lambda: EndpointConfig("127.0.0.1:0"), "address: an endpoint needs a port from 1 to 65535"),
    (lambda: EndpointConfig("127.0.0.1:1", weight=1001), "weight: expected an integer <= 1000, got 1001"),
    (lambda: EndpointConfig("127.0.0.1:1", weight=0), "weight: expected an integer >= 1, got 0"),
    (lambda: EndpointConfig("127.0.0.1:1", priority=-1), "priority: expected an integer >= 0, got -1"),
    (lambda: EndpointConfig("127.0.0.1:1", weight=True), "weight: expected an integer, got true"),
    (lambda: ClusterConfig("", (endpoint(),)), 'name: expected a non-empty string, got ""'),
    (lambda: ClusterConfig("c", ()), "endpoints: expected at least one entry"),
    (lambda: ClusterConfig("c", [endpoint()]), "endpoints: expected tuple, got a list"),  # type: ignore[arg-type]
    (lambda: ClusterConfig("c", ("127.0.0.1:1",)), 'endpoints[0]: expected an EndpointConfig, got "127.0.0.1:1"'),  # type: ignore[arg-type]
    (lambda: ClusterConfig("c", (endpoint(),), lb="fastest"), "lb: expected one of round_robin"),  # type: ignore[arg-type]
    (lambda: ClusterConfig("c", (endpoint(),), connect_timeout=0), "connect_timeout: expected a positive duration"),
    (
        lambda: ClusterConfig("c", (endpoint(),), connect_timeout="1s"),  # type: ignore[arg-type]
        'connect_timeout: expected seconds (a number), got "1s"',
    ),
    (
        lambda: ClusterConfig("c", (endpoint(),), options={"a": 1}),  # type: ignore[dict-item]
        "options: expected a mapping of option names to strings",
    ),
    (
        lambda: ClusterConfig("c", (endpoint(),), failure_statuses=(-1,)),
        "failure_statuses[0]: expected an integer >= 0",
    ),
    (lambda: ClusterConfig("c", (endpoint(),), pool={}), "pool: expected a PoolConfig, got a mapping"),  # type: ignore[arg-type]
    (lambda: PoolConfig(mode="shared"), 'mode: expected one of multiplex, pipeline, exclusive, got "shared"'),  # type: ignore[arg-type]
    (lambda: PoolConfig(connections=0), "connections: expected an integer >= 1, got 0"),
    (lambda: PoolConfig(shared="yes"), 'shared: expected true or false, got "yes"'),  # type: ignore[arg-type]
    (lambda: ThresholdsConfig(max_retries=-1), "max_retries: expected an integer >= 0, got -1"),
    (lambda: BreakerConfig(failure_ratio=0), "failure_ratio: expected a number in (0, 1], got 0"),
    (lambda: BreakerConfig(open_timeout=float("nan")), "open_timeout: expected a positive duration"),
    (lambda: OutlierConfig(max_ejection_percent=101), "max_ejection_percent: expected a number from 0 to 100"),
    (lambda: OutlierConfig(consecutive_failures=0), "consecutive_failures: expected an integer >= 1, got 0"),
    (lambda: HealthCheckConfig(kind="http"), 'kind: expected one of tcp, protocol, got "http"'),  # type: ignore[arg-type]
    (lambda: HealthCheckConfig(send=""), 'send: expected a non-empty string, got ""'),
    (lambda: MatchConfig("a"), "expected exactly one of exact, prefix, regex, present, got 0"),
    (lambda: MatchConfig("a", exact="x", prefix="x"), "expected exactly one of exact, prefix, regex, present, got 2"),
    (lambda: MatchConfig("a", regex="("), "regex: invalid regular expression"),
    (lambda: MatchConfig("", present=True), 'attribute: expected a non-empty string, got ""'),
    (lambda: RetryConfig(attempts=0), "attempts: expected an integer >= 1, got 0"),
    (
        lambda: RetryConfig(retry_on=("5xx",)),
        'retry_on[0]: expected one of connect_failure, reset, per_try_timeout, status, got "5xx"',
    ),
    (lambda: RetryConfig(statuses=(4,)), 'statuses: statuses are retried only with "status" in retry_on'),
    (lambda: RouteConfig("c", timeout=-1), "timeout: expected a positive duration"),
    (lambda: RouteConfig("c", per_try_timeout=0), "per_try_timeout: expected a positive duration"),
    (lambda: RouteConfig("c", hash_key=""), 'hash_key: expected a non-empty string, got ""'),
    (lambda: LimitsConfig(max_connections=0), "max_connections: expected an integer >= 1, got 0"),
    (lambda: LimitsConfig(idle_timeout=0), "idle_timeout: expected a positive duration"),
    (lambda: ListenerConfig("l", "127.0.0.1:0", "x", ()), "routes: expected at least one entry"),
    (lambda: ListenerConfig("l", "nowhere", "x", (RouteConfig("c"),)), 'address: expected HOST:PORT, got "nowhere"'),
    (
        lambda: ListenerConfig("l", "127.0.0.1:0", "x", (RouteConfig("c"),), access_log="{nope}"),
        "access_log: unknown field {nope}",
    ),
    (
        lambda: ListenerConfig("l", "127.0.0.1:0", "x", (RouteConfig("c"),), access_log=True),  # type: ignore[arg-type]
        "access_log: expected a format string, got true",
    ),
    (lambda: AdminConfig("10.0.0.1:9901"), "address: 10.0.0.1:9901 is not loopback; set allow_remote: true"),
    (lambda: OverloadConfig(buffer_budget=0), "buffer_budget: expected an integer >= 1, got 0"),
    (lambda: OverloadConfig(large_frame="1MiB"), 'large_frame: expected int, got "1MiB"'),  # type: ignore[arg-type]
    (lambda: proxy(listeners=()), "listeners: expected at least one entry"),
    (lambda: proxy(drain_timeout=-1), "drain_timeout: expected a duration >= 0"),
    (lambda: proxy(admin="127.0.0.1:9901"), 'admin: expected an AdminConfig, got "127.0.0.1:9901"'),
]


@pytest.mark.parametrize(("build", "message"), BAD_VALUES)
def test_config_values_built_in_python_are_checked(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_checks_across_objects_run_for_a_config_built_in_python() -> None:
    listener = ListenerConfig(
        "l", "127.0.0.1:7000", "bolt", (RouteConfig("nope"), RouteConfig("hashed")), options={"x": "y"}
    )
    clusters = (ClusterConfig("c", (endpoint(),)), ClusterConfig("hashed", (endpoint(),), lb="maglev"))
    with pytest.raises(ConfigError) as caught:
        ProxyConfig(listeners=(listener, attrs.evolve(listener, name="l2")), clusters=(*clusters, clusters[0]))
    assert [(e.path, e.problem) for e in caught.value.errors] == [
        ("clusters[2].name", 'duplicate cluster name "c"'),
        ("listeners[1].address", "127.0.0.1:7000 is also listeners[0]'s"),
        ("listeners[0].routes[0].cluster", 'unknown cluster "nope" (clusters: c, hashed)'),
        ("listeners[0].routes[1].hash_key", 'cluster "hashed" balances by maglev, which needs a hash_key'),
        ("listeners[1].routes[0].cluster", 'unknown cluster "nope" (clusters: c, hashed)'),
        ("listeners[1].routes[1].hash_key", 'cluster "hashed" balances by maglev, which needs a hash_key'),
    ]
    config = proxy()
    with pytest.raises(ConfigError, match=r'^listeners\[0\]\.routes\[0\]\.cluster: unknown cluster "c"'):
        attrs.evolve(config, clusters=(ClusterConfig("other", (endpoint(),)),))  # evolve checks too


def test_yaml_and_python_share_each_rule() -> None:
    with pytest.raises(ConfigError) as from_python:
        EndpointConfig("127.0.0.1:1", weight=5000)
    document = {
        "listeners": [{"name": "l", "address": "127.0.0.1:7000", "protocol": "p", "routes": [{"cluster": "c"}]}],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:1", "weight": 5000}]}],
    }
    with pytest.raises(ConfigError) as from_yaml:
        parse_config(document)
    assert from_yaml.value.path == "clusters[0].endpoints[0].weight"
    assert from_yaml.value.problem == from_python.value.problem == "expected an integer <= 1000, got 5000"


def test_a_key_left_out_gets_the_models_default() -> None:
    document: dict[str, Any] = {
        "listeners": [
            {
                "name": "l",
                "address": "127.0.0.1:7000",
                "protocol": "simple_line",
                "limits": {},
                "routes": [{"cluster": "c", "retry": {}}],
            }
        ],
        "clusters": [
            {
                "name": "c",
                "endpoints": [{"address": "127.0.0.1:7001"}],
                "pool": {},
                "circuit_breakers": {},
                "endpoint_breaker": {},
                "outlier_detection": None,  # a key without a value: on, with the defaults
                "health_check": {},
            }
        ],
        "overload": {},
        "admin": {},
    }
    config = parse_config(document)
    cluster = ClusterConfig(
        "c",
        (EndpointConfig("127.0.0.1:7001"),),
        endpoint_breaker=BreakerConfig(),
        outlier_detection=OutlierConfig(),
        health_check=HealthCheckConfig(),
    )
    listener = ListenerConfig("l", "127.0.0.1:7000", "simple_line", (RouteConfig("c"),))
    assert config == ProxyConfig(listeners=(listener,), clusters=(cluster,), admin=AdminConfig())
    assert config.drain_timeout == RouteConfig("c").timeout + 1


def test_null_is_the_default_none_of_an_optional_value() -> None:
    document: dict[str, Any] = {
        "listeners": [
            {
                "name": "l",
                "address": "127.0.0.1:7000",
                "protocol": "simple_line",
                "limits": {"max_connections": None, "idle_timeout": None},
                "routes": [{"cluster": "c", "per_try_timeout": None}],
            }
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:7001"]}],
    }
    config = parse_config(document)
    assert config.listeners[0].limits == LimitsConfig(max_connections=None, idle_timeout=None)
    assert config.listeners[0].routes[0].per_try_timeout is None


def test_a_breaker_may_open_on_the_first_failure_in_yaml_as_in_python() -> None:
    assert BreakerConfig(consecutive_failures=0).consecutive_failures == 0
    document: dict[str, Any] = {
        "listeners": [{"name": "l", "address": "127.0.0.1:7000", "protocol": "p", "routes": [{"cluster": "c"}]}],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"], "endpoint_breaker": {"consecutive_failures": 0}}],
    }
    assert parse_config(document).clusters[0].endpoint_breaker == BreakerConfig(consecutive_failures=0)


def test_envoy_import_leaves_the_native_defaults_to_the_model(tmp_path: Path) -> None:
    config = load_config(ROOT / "examples" / "proxy" / "envoy.yaml")
    clusters = {cluster.name: cluster for cluster in config.clusters}
    orders = clusters["orders"]
    assert {(e.weight, e.priority) for e in orders.endpoints} == {(EndpointConfig("127.0.0.1:1").weight, 0)}
    assert orders.connect_timeout == 5.0  # Envoy's own default, not the native one
    assert clusters["default"].outlier_detection == OutlierConfig(
        consecutive_failures=5, base_ejection_time=30.0, max_ejection_percent=50
    )
