"""stream_filters and per_filter_config in a config: read, checked, every problem named by its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sota_dispatch import ConfigError
from sota_dispatch.config import StreamFilterConfig, load_config, parse_config
from sota_dispatch.config.frozen import FrozenMap
from sota_dispatch.filters import LocalRateLimit
from sota_dispatch.proxy import Proxy

pytestmark = pytest.mark.usefixtures("echo_lines")


def document(filters: Any, per_filter_config: Any = None) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": "c"}
    if per_filter_config is not None:
        route["per_filter_config"] = per_filter_config
    return {
        "listeners": [
            {
                "name": "l",
                "address": "127.0.0.1:0",
                "protocol": "echo_lines",
                "routes": [route],
                "stream_filters": filters,
            }
        ],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"]}],
    }


def errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        Proxy(parse_config(doc))
    return [(e.path, e.problem) for e in caught.value.errors]


def test_filters_and_overrides_are_read_as_frozen_values() -> None:
    config = parse_config(
        document(
            [{"type": "rbac", "config": {"attribute": "a", "present": True}}, {"type": "fault_inject"}],
            {"rbac": {"action": "allow", "source": "127.0.0.1"}},
        )
    )
    [listener] = config.listeners
    assert listener.stream_filters == (
        StreamFilterConfig("rbac", config=FrozenMap({"attribute": "a", "present": "true"})),
        StreamFilterConfig("fault_inject"),
    )
    assert listener.routes[0].per_filter_config == {"rbac": {"action": "allow", "source": "127.0.0.1"}}
    hash(config)  # immutable all the way down
    Proxy(config)  # and valid


def test_every_filter_problem_is_reported_with_its_path() -> None:
    problems = errors(
        document(
            [
                {"type": "no_such_filter"},
                {"type": "fault_inject", "config": {"abort_percent": "200", "color": "red"}},
                {"type": "rbac"},
                {"type": "rbac", "name": "second", "config": {"source": "::1"}},
                {"type": "local_rate_limit", "name": "second", "config": {"tokens_per_second": 5}},
            ],
            {"second": {"source": "bad"}, "absent": {}},
        )
    )
    paths = [path for path, _ in problems]
    assert paths == [
        "listeners[0].stream_filters[0].type",
        "listeners[0].stream_filters[1].config.abort_percent",
        "listeners[0].stream_filters[1].config.color",
        "listeners[0].stream_filters[2].config.attribute",
        "listeners[0].stream_filters[4].name",
        "listeners[0].routes[0].per_filter_config.second.source",
        "listeners[0].routes[0].per_filter_config.absent",
    ]
    text = dict(problems)
    assert text["listeners[0].stream_filters[0].type"].startswith("unknown stream filter 'no_such_filter'; available:")
    assert "fault_inject" in text["listeners[0].stream_filters[0].type"]
    assert text["listeners[0].stream_filters[1].config.color"].startswith("unknown option (options: abort_percent")
    assert text["listeners[0].stream_filters[4].name"] == "two filters of this listener are named 'second'"
    assert text["listeners[0].routes[0].per_filter_config.absent"] == (
        "the listener has no stream filter 'absent' (it has: fault_inject, rbac, second)"
    )


def test_structural_problems_are_config_errors_too() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document([{"config": {}}, "rbac", {"type": "rbac", "config": {"source": ["a", "b"]}}], [1]))
    paths = [e.path for e in caught.value.errors]
    assert paths == [
        "listeners[0].routes[0].per_filter_config",
        "listeners[0].stream_filters[0].type",
        "listeners[0].stream_filters[1]",
        "listeners[0].stream_filters[2].config.source",
    ]


def test_a_yaml_file_with_filters_loads(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        """
listeners:
  - name: front
    address: 127.0.0.1:0
    protocol: echo_lines
    stream_filters:
      - type: local_rate_limit
        config: {tokens_per_second: 200, burst: 200}
      - type: rbac
        config: {attribute: echo, prefix: "admin/", action: deny}
    routes:
      - cluster: backend
        match: [{attribute: echo, prefix: "bulk/"}]
        per_filter_config:
          local_rate_limit: {tokens_per_second: 20}
      - cluster: backend
clusters:
  - name: backend
    endpoints: [127.0.0.1:1]
"""
    )
    proxy = Proxy(load_config(path))
    [listener] = proxy.listeners
    assert listener.filters is not None
    assert [name for name, _ in listener.filters.filters] == ["local_rate_limit", "rbac"]
    assert listener.filters.overridden == {"local_rate_limit"}
    bulk, rest = listener.routes
    override = bulk.filters["local_rate_limit"]
    assert isinstance(override, LocalRateLimit)
    assert override.rate == 20
    assert rest.filters == {}
