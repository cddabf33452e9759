"""A configuration with several mistakes reports all of them at once, each
with its path, in the file's order; one mistake keeps its one-line message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sota_dispatch import ConfigError
from sota_dispatch.config import load_config, parse_config
from sota_dispatch.serve import main

# ``main`` sets up logging as the CLI does (see the fixture).
pytestmark = pytest.mark.usefixtures("root_logging_restored")

ROOT = Path(__file__).resolve().parents[2]

#: Mistakes in two clusters, two listeners, three routes and at the top,
#: clusters before listeners.
MISTAKES = """\
clusters:
  - name: orders
    endpoints:
      - 127.0.0.1:7101
      - {address: localhost, weight: 0}
    pool: {mode: shared}
  - name: users
    lb: fastest
    endpoints: [127.0.0.1:7201]
listeners:
  - name: front
    address: 127.0.0.1:7000
    protocol: simple_line
    limits: {max_connections: 0}
    routes: [{cluster: orders}]
  - name: back
    address: 127.0.0.1:7001
    protocol: simple_line
    routes:
      - {cluster: nope}
      - {cluster: orders, timeout: soon, retry: {retry_on: [5xx]}}
      - {cluster: users, hash_key: ""}
drain_timeout: -1
extra: 1
"""

EXPECTED = [
    ("clusters[0].endpoints[1].address", 'expected HOST:PORT, got "localhost"'),
    ("clusters[0].endpoints[1].weight", "expected an integer >= 1, got 0"),
    ("clusters[0].pool.mode", 'expected one of multiplex, pipeline, exclusive, got "shared"'),
    (
        "clusters[1].lb",
        "expected one of round_robin, random, least_request, ring_hash, maglev, modulo_hash, lowest_latency, "
        'got "fastest"',
    ),
    ("listeners[0].limits.max_connections", "expected an integer >= 1, got 0"),
    ("listeners[1].routes[0].cluster", 'unknown cluster "nope" (clusters: orders, users)'),
    ("listeners[1].routes[1].timeout", 'expected a positive duration (seconds, or e.g. "250ms"), got "soon"'),
    (
        "listeners[1].routes[1].retry.retry_on[0]",
        'expected one of connect_failure, reset, per_try_timeout, status, got "5xx"',
    ),
    ("listeners[1].routes[2].hash_key", 'expected a non-empty string, got ""'),
    ("drain_timeout", 'expected a duration >= 0 (seconds, or e.g. "250ms"), got -1'),
    ("extra", "unknown key (expected one of: listeners, clusters, drain_timeout, admin, overload, xds)"),
]


def test_every_mistake_of_a_file_is_reported_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert [(e.path, e.problem) for e in error.errors] == EXPECTED
    lines = str(error).splitlines()
    assert lines[0] == f"{len(EXPECTED)} configuration problems:"
    assert lines[1:] == [f"  {path}: {problem}" for path, problem in EXPECTED]
    assert error.path == ""


def test_check_config_shows_every_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(MISTAKES)
    assert main(["--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"error: {len(EXPECTED)} configuration problems:",
        *(f"  {path}: {problem}" for path, problem in EXPECTED),
    ]


def test_the_order_is_the_documents(tmp_path: Path) -> None:
    document = yaml.safe_load(MISTAKES)
    reordered = {key: document[key] for key in ("extra", "listeners", "drain_timeout", "clusters")}
    with pytest.raises(ConfigError) as caught:
        parse_config(reordered)
    paths = [e.path for e in caught.value.errors]
    assert paths[0] == "extra"
    assert paths.index("drain_timeout") == paths.index("clusters[0].endpoints[1].address") - 1
    assert all(p.startswith("listeners") for p in paths[1 : paths.index("drain_timeout")])


def test_a_required_key_and_an_unknown_one_are_both_reported() -> None:
    document = {
        "listeners": [{"name": "l", "adress": "127.0.0.1:1", "protocol": "p", "routes": [{"cluster": "c"}]}],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    allowed = "name, address, protocol, routes, limits, options, access_log, stream_filters, tls, tracing"
    assert [(e.path, e.problem) for e in caught.value.errors] == [
        ("listeners[0].address", "required"),  # where the mapping that lacks it is
        ("listeners[0].adress", f"unknown key (did you mean 'address'? expected one of: {allowed})"),
    ]


def test_misspellings_get_a_hint_and_every_mistake_is_reported_at_once() -> None:
    document = {
        "listeners": [
            {"name": "l", "address": "127.0.0.1:1", "protocol": "p", "routes": [{"cluster": "c", "timout": "1s"}]}
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:2"], "lb": "round_robbin", "zzz": 1}],
        "drain_timout": 3,
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    problems = {e.path: e.problem for e in caught.value.errors}
    assert len(problems) == 4
    assert problems["listeners[0].routes[0].timout"].startswith("unknown key (did you mean 'timeout'? expected")
    assert problems["drain_timout"].startswith("unknown key (did you mean 'drain_timeout'? expected")
    assert problems["clusters[0].lb"].endswith("""got "round_robbin"; did you mean 'round_robin'?""")
    assert problems["clusters[0].zzz"].startswith("unknown key (expected one of")  # nothing close: no guess


def test_one_mistake_is_one_line_as_before() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"]}]})
    assert str(caught.value) == "listeners: required"
    assert caught.value.errors == (caught.value,)


def test_an_envoy_file_reports_the_mistakes_of_every_listener_and_cluster(tmp_path: Path) -> None:
    envoy = yaml.safe_load((ROOT / "examples" / "proxy" / "envoy.yaml").read_text())
    clusters = envoy["static_resources"]["clusters"]
    clusters[0]["dns_lookup_family"] = "V4_ONLY"
    clusters[1]["lb_policy"] = "FASTEST"
    envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["name"] = "envoy.tcp_proxy"
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(envoy, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [e.path for e in caught.value.errors] == [
        "static_resources.listeners[0].filter_chains[0].filters[0].name",
        "static_resources.clusters[0].dns_lookup_family",
        "static_resources.clusters[1].lb_policy",
    ]
    # The values Envoy's shape carries are checked by the native rules, all at once too.
    envoy = yaml.safe_load((ROOT / "examples" / "proxy" / "envoy.yaml").read_text())
    clusters = envoy["static_resources"]["clusters"]
    clusters[0]["connect_timeout"] = "soon"
    clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = 0
    path.write_text(yaml.safe_dump(envoy, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [
        (e.path, e.problem.endswith("(in the native config made from the Envoy file)")) for e in caught.value.errors
    ] == [
        ("clusters[0].connect_timeout", True),
        ("clusters[1].endpoints[0].weight", True),
    ]


def test_combining_errors() -> None:
    a, b, c = ConfigError("a", "one"), ConfigError("b", "two"), ConfigError("", "three")
    assert ConfigError.combine([a]) is a
    both = ConfigError.combine([a, b])
    assert both.errors == (a, b)
    assert str(both) == "2 configuration problems:\n  a: one\n  b: two"
    assert ConfigError.combine([both, c]).errors == (a, b, c)  # flattened
    with pytest.raises(ValueError, match="no configuration errors"):
        ConfigError.combine([])
