"""The Envoy import's generic-proxy ``filters`` and per-route filter configs.

Envoy's generic proxy has no fault, rate-limit or RBAC filter of its own, so
a sota filter is named by a ``TypedStruct`` (``type_url`` ending in
``sota_dispatch.filters.<type>``), the type xDS defines for extensions
configured by a plain struct; Envoy's terminal router may end the list.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from sota_dispatch import ConfigError
from sota_dispatch.config import load_config, parse_config
from sota_dispatch.config.envoy import from_envoy
from sota_dispatch.testing import EchoLines, connect, serve_process, serving

pytestmark = pytest.mark.anyio

ROUTER = {
    "name": "envoy.filters.generic.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.router.v3.Router"},
}


def struct(kind: str, value: dict[str, Any] | None = None, typed: str = "xds.type.v3") -> dict[str, Any]:
    config: dict[str, Any] = {
        "@type": f"type.googleapis.com/{typed}.TypedStruct",
        "type_url": f"type.googleapis.com/sota_dispatch.filters.{kind}",
    }
    if value is not None:
        config["value"] = value
    return config


def envoy(backend: str, filters: list[dict[str, Any]], routes: list[dict[str, Any]]) -> dict[str, Any]:
    """One echo_lines listener whose generic proxy has ``filters`` and ``routes``; one cluster."""
    host, port = backend.rsplit(":", 1)
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.generic_proxy",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/"
                                        "envoy.extensions.filters.network.generic_proxy.v3.GenericProxy",
                                        "stat_prefix": "front",
                                        "codec_config": {"name": "echo_lines"},
                                        "filters": filters,
                                        "route_config": {"virtual_hosts": [{"name": "all", "routes": routes}]},
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "echo",
                    "load_assignment": {
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {"socket_address": {"address": host, "port_value": int(port)}}
                                        }
                                    }
                                ]
                            }
                        ]
                    },
                }
            ],
        }
    }


def route(
    per_filter: dict[str, Any] | None = None, prefix: str | None = None, http_form: bool = False
) -> dict[str, Any]:
    entry: dict[str, Any] = {"match": {"prefix": ""}, "route": {"cluster": "echo"}}
    if prefix is not None:
        entry["match"]["headers"] = [{"name": "echo", "string_match": {"prefix": prefix}}]
    if per_filter is not None:
        if http_form:
            entry["typed_per_filter_config"] = per_filter
        else:
            entry["route"]["per_filter_config"] = per_filter
    return entry


#: Refuses requests whose echo starts with "admin"; the "open" route lets them through.
DENY = {"name": "no_admin", "typed_config": struct("rbac", {"attribute": "echo", "prefix": "admin", "action": "deny"})}
LIMIT = {"name": "envoy_limit", "typed_config": struct("local_rate_limit", {"tokens_per_second": 100})}
OPEN = {"no_admin": struct("rbac", {"source": "0.0.0.0/0", "action": "allow"}, typed="udpa.type.v1")}


def test_the_filters_list_is_the_native_chain_and_per_filter_config_the_routes() -> None:
    imported = from_envoy(
        envoy(
            "127.0.0.1:1",
            [DENY, LIMIT, ROUTER],
            [
                route(OPEN, prefix="admin/open"),
                route({"envoy_limit": struct("local_rate_limit", {"burst": 5})}, http_form=True),
                route(),
            ],
        )
    )
    native = parse_config(
        {
            "listeners": [
                {
                    "name": "front",
                    "address": "127.0.0.1:0",
                    "protocol": "echo_lines",
                    "stream_filters": [
                        {
                            "type": "rbac",
                            "name": "no_admin",
                            "config": {"attribute": "echo", "prefix": "admin", "action": "deny"},
                        },
                        {"type": "local_rate_limit", "name": "envoy_limit", "config": {"tokens_per_second": 100}},
                    ],
                    "routes": [
                        {
                            "cluster": "echo",
                            "match": [{"attribute": "echo", "prefix": "admin/open"}],
                            "per_filter_config": {"no_admin": {"source": "0.0.0.0/0", "action": "allow"}},
                        },
                        {"cluster": "echo", "per_filter_config": {"envoy_limit": {"burst": 5}}},
                        {"cluster": "echo"},
                    ],
                }
            ],
            "clusters": [{"name": "echo", "endpoints": ["127.0.0.1:1"]}],
        }
    )
    assert imported.listeners[0].stream_filters == native.listeners[0].stream_filters
    assert [r.per_filter_config for r in imported.listeners[0].routes] == [
        r.per_filter_config for r in native.listeners[0].routes
    ]
    # Without the router, and without any filters, it reads too.
    assert from_envoy(envoy("127.0.0.1:1", [DENY], [route()])).listeners[0].stream_filters == (
        native.listeners[0].stream_filters[0],
    )
    assert from_envoy(envoy("127.0.0.1:1", [ROUTER], [route()])).listeners[0].stream_filters == ()


GP = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
ROUTES = f"{GP}.route_config.virtual_hosts[0].routes"


@pytest.mark.parametrize(
    ("filters", "routes", "path", "problem"),
    [
        (
            [ROUTER, DENY],
            [route()],
            f"{GP}.filters[0]",
            "envoy.filters.generic.router is the terminal filter: it must be the last",
        ),
        (
            [
                {
                    "name": "x",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"},
                }
            ],
            [route()],
            f"{GP}.filters[0].typed_config.@type",
            "a sota stream filter is a TypedStruct",
        ),
        (
            [
                {
                    "name": "x",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.Other",
                        "type_url": "t/sota_dispatch.filters.rbac",
                    },
                }
            ],
            [route()],
            f"{GP}.filters[0].typed_config.@type",
            "a sota stream filter is a TypedStruct",
        ),
        (
            [{"name": "x", "typed_config": struct("rbac") | {"type_url": "type.googleapis.com/acme.Rbac"}}],
            [route()],
            f"{GP}.filters[0].typed_config.type_url",
            "expected type.googleapis.com/sota_dispatch.filters.<filter type>, got 'type.googleapis.com/acme.Rbac'",
        ),
        ([{"name": "x"}], [route()], f"{GP}.filters[0].typed_config", "required"),
        (
            [{"name": "x", "typed_config": struct("rbac"), "disabled": True}],
            [route()],
            f"{GP}.filters[0].disabled",
            "not supported",
        ),
        (
            [DENY],
            [route({"nope": struct("rbac")})],
            f"{ROUTES}[0].route.per_filter_config.nope",
            "the generic proxy has no filter named 'nope' (it has: no_admin)",
        ),
        (
            [DENY],
            [route({"no_admin": struct("fault_inject")})],
            f"{ROUTES}[0].route.per_filter_config.no_admin.type_url",
            "the filter 'no_admin' is a 'rbac', not a 'fault_inject'",
        ),
        (
            [DENY],
            [route(OPEN) | {"typed_per_filter_config": OPEN}],
            f"{ROUTES}[0].typed_per_filter_config",
            "give either this or route.per_filter_config (the same thing), not both",
        ),
    ],
)
def test_mistakes_in_the_filters_name_their_envoy_path(
    filters: list[dict[str, Any]], routes: list[dict[str, Any]], path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_envoy(envoy("127.0.0.1:1", copy.deepcopy(filters), copy.deepcopy(routes)))
    [error] = caught.value.errors
    assert (error.path, problem in error.problem or error.problem.startswith(problem)) == (path, True), error


@pytest.mark.usefixtures("echo_lines")
async def test_an_envoy_file_with_filters_runs_them_in_a_proxy_process(
    echo_lines_env: dict[str, str], tmp_path: Path
) -> None:
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        path = tmp_path / "envoy.yaml"
        path.write_text(
            yaml.safe_dump(envoy(backend.address, [DENY, ROUTER], [route(OPEN, prefix="admin/open"), route()]))
        )
        load_config(path)  # the file as the process reads it
        with serve_process(["--config", str(path)], env=echo_lines_env) as proxy:
            async with await connect(proxy.address) as stream:
                await stream.send(b"echo:admin/secret\necho:admin/open\necho:hello\n")
                data = b""
                with anyio.fail_after(10):
                    while data.count(b"\n") < 3:
                        data += await stream.receive()
    denied, opened, plain = data.splitlines()
    assert denied.startswith(b"error:denied")
    assert (opened, plain) == (b"echo:admin/open", b"echo:hello")
