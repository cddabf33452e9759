"""Envoy's xDS resources read as native config: the subset, and an error naming the field outside it."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("envoy.config.cluster.v3.cluster_pb2")

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.core.v3 import extension_pb2 as core_extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2
from envoy.extensions.filters.network.generic_proxy.matcher.v3 import matcher_pb2 as inputs_pb2
from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2, route_pb2
from google.protobuf import any_pb2, duration_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2, regex_pb2, string_pb2

from sota_dispatch import ConfigError
from sota_dispatch.config.parse import cluster_config, listener_config
from sota_dispatch.xds.resources import cluster_document, listener_document, routes_document

Predicate = matcher_pb2.Matcher.MatcherList.Predicate


def packed(message: Any) -> Any:
    value = any_pb2.Any()
    value.Pack(message)
    return value


def typed(message: Any) -> Any:
    return extension_pb2.TypedExtensionConfig(name="x", typed_config=packed(message))


def single(input_message: Any, **match: Any) -> Any:
    return Predicate(
        single_predicate=Predicate.SinglePredicate(
            input=typed(input_message), value_match=string_pb2.StringMatcher(**match)
        )
    )


def on(cluster: str, **action: Any) -> Any:
    return matcher_pb2.Matcher.OnMatch(action=typed(action_pb2.RouteAction(cluster=cluster, **action)))


def test_a_matcher_list_becomes_routes_in_order() -> None:
    both = Predicate(
        and_matcher=Predicate.PredicateList(
            predicate=[
                single(inputs_pb2.ServiceMatchInput(), exact="com.example.Orders"),
                single(inputs_pb2.MethodMatchInput(), prefix="get"),
            ]
        )
    )
    regex = single(
        inputs_pb2.PropertyMatchInput(property_name="zone"), safe_regex=regex_pb2.RegexMatcher(regex="z[0-9]")
    )
    config = route_pb2.RouteConfiguration(
        name="r",
        routes=matcher_pb2.Matcher(
            matcher_list=matcher_pb2.Matcher.MatcherList(
                matchers=[
                    matcher_pb2.Matcher.MatcherList.FieldMatcher(
                        predicate=both, on_match=on("orders", timeout=duration_pb2.Duration(nanos=250_000_000))
                    ),
                    matcher_pb2.Matcher.MatcherList.FieldMatcher(predicate=regex, on_match=on("zoned")),
                ]
            ),
            on_no_match=on("rest"),
        ),
    )
    assert routes_document(config) == [
        {
            "cluster": "orders",
            "retry": {"attempts": 1},
            "timeout": 0.25,
            "match": [
                {"attribute": "service", "exact": "com.example.Orders"},
                {"attribute": "method", "prefix": "get"},
            ],
        },
        {"cluster": "zoned", "retry": {"attempts": 1}, "match": [{"attribute": "zone", "regex": "z[0-9]"}]},
        {"cluster": "rest", "retry": {"attempts": 1}},
    ]


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (route_pb2.RouteConfiguration(virtual_hosts=[route_pb2.VirtualHost(name="v")]), ".virtual_hosts"),
        (
            route_pb2.RouteConfiguration(
                routes=matcher_pb2.Matcher(
                    on_no_match=matcher_pb2.Matcher.OnMatch(
                        action=typed(action_pb2.RouteAction(weighted_clusters=route_components_pb2.WeightedCluster()))
                    )
                )
            ),
            ".routes.on_no_match.action.typed_config.cluster",
        ),
        (
            route_pb2.RouteConfiguration(
                routes=matcher_pb2.Matcher(
                    matcher_list=matcher_pb2.Matcher.MatcherList(
                        matchers=[
                            matcher_pb2.Matcher.MatcherList.FieldMatcher(
                                predicate=single(inputs_pb2.RequestMatchInput(), exact="x"), on_match=on("c")
                            )
                        ]
                    )
                )
            ),
            ".routes.matcher_list.matchers[0].predicate.single_predicate.input",
        ),
    ],
)
def test_what_is_outside_the_subset_is_named(config: Any, path: str) -> None:
    with pytest.raises(ConfigError) as raised:
        routes_document(config)
    assert raised.value.path == path


def test_listeners_need_one_generic_proxy_filter() -> None:
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=7000))
    tcp = listener_pb2.Listener(
        name="t",
        address=address,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy")]
            )
        ],
    )
    with pytest.raises(ConfigError, match="generic_proxy"):
        listener_document(tcp)
    proxy = generic_proxy_pb2.GenericProxy(codec_config=core_extension_pb2.TypedExtensionConfig(name="bolt"))
    proxy.generic_rds.route_config_name = "r1"
    named = listener_pb2.Listener(
        name="g",
        address=address,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.generic_proxy", typed_config=packed(proxy)
                    )
                ]
            )
        ],
    )
    assert listener_document(named) == ({"name": "g", "address": "127.0.0.1:7000", "protocol": "bolt"}, "r1")


def test_clusters_static_or_eds() -> None:
    eds = cluster_pb2.Cluster(
        name="orders",
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name="orders-v2"),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
    )
    native = cluster_config(cluster_document(eds), "c")
    assert (native.name, native.eds, native.lb, native.endpoints) == ("orders", "orders-v2", "least_request", ())
    dns = cluster_pb2.Cluster(name="d", type=cluster_pb2.Cluster.STRICT_DNS)
    with pytest.raises(ConfigError, match="only STATIC and EDS clusters are supported, got 'STRICT_DNS'"):
        cluster_document(dns)


def listener_with(name: str, typed_config: Any) -> Any:
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="::1", port_value=20880))
    return listener_pb2.Listener(
        name="l",
        address=address,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=name, typed_config=packed(typed_config))]
            )
        ],
    )


def test_envoys_dubbo_proxy_routes_on_dubbos_attributes() -> None:
    from envoy.extensions.filters.network.dubbo_proxy.v3 import dubbo_proxy_pb2
    from envoy.extensions.filters.network.dubbo_proxy.v3 import route_pb2 as dubbo_route_pb2
    from envoy.type.matcher.v3 import string_pb2 as envoy_string_pb2

    config = dubbo_route_pb2.RouteConfiguration(
        name="demo",
        interface="org.apache.dubbo.demo.DemoService",
        group="g1",
        version="1.0.0",
        routes=[
            dubbo_route_pb2.Route(
                match=dubbo_route_pb2.RouteMatch(
                    method=dubbo_route_pb2.MethodMatch(name=envoy_string_pb2.StringMatcher(prefix="say"))
                ),
                route=dubbo_route_pb2.RouteAction(cluster="say"),
            ),
            dubbo_route_pb2.Route(route=dubbo_route_pb2.RouteAction(cluster="demo")),
        ],
    )
    proxy = dubbo_proxy_pb2.DubboProxy(stat_prefix="d", route_config=[config])
    document, rds = listener_document(listener_with("envoy.filters.network.dubbo_proxy", proxy))
    assert rds is None
    base = [
        {"attribute": "service", "exact": "org.apache.dubbo.demo.DemoService"},
        {"attribute": "group", "exact": "g1"},
        {"attribute": "version", "exact": "1.0.0"},
    ]
    assert document == {
        "name": "l",
        "address": "[::1]:20880",
        "protocol": "dubbo",
        "routes": [
            {"cluster": "say", "match": [*base, {"attribute": "method", "prefix": "say"}], "retry": {"attempts": 1}},
            {"cluster": "demo", "match": base, "retry": {"attempts": 1}},
        ],
    }


def test_a_typed_struct_carries_a_native_listener() -> None:
    from google.protobuf import struct_pb2
    from xds.type.v3 import typed_struct_pb2

    value = struct_pb2.Struct()
    value.update({"protocol": "bolt", "routes": [{"cluster": "up"}], "limits": {"max_in_flight": 64}})
    native = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/sota_dispatch.listener", value=value)
    document, rds = listener_document(listener_with("sota", native))
    assert rds is None
    assert document == {
        "name": "l",
        "address": "[::1]:20880",
        "protocol": "bolt",
        "routes": [{"cluster": "up"}],
        "limits": {"max_in_flight": 64},
    }
    assert isinstance(document["limits"]["max_in_flight"], int)  # a Struct's 64.0, read as the file's 64
    listener_config(document, "l")
    other = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/acme.listener", value=value)
    with pytest.raises(ConfigError, match=r"expected \.\.\./sota_dispatch\.listener"):
        listener_document(listener_with("sota", other))
