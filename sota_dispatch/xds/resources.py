"""Envoy's xDS resources as native config: CDS clusters, LDS listeners, generic-proxy RDS routes.

The subset, checked as strictly as a config file (a field outside it is an
error naming it, which the client NACKs):

* ``Cluster`` (CDS): what :func:`~sota_dispatch.config.envoy.cluster_from_envoy`
  reads of a static file, plus ``type: EDS`` (``eds_cluster_config.service_name``,
  default the cluster's name: its endpoints come over EDS).
* ``Listener`` (LDS): ``name``, ``address.socket_address`` and one filter
  chain with one network filter, one of:

  - ``envoy.filters.network.generic_proxy``: a ``GenericProxy`` whose
    ``codec_config.name`` is the protocol, whose ``filters`` are at most
    Envoy's router, and whose routes are inline (``route_config``) or named
    (``generic_rds.route_config_name``: RDS);
  - ``envoy.filters.network.dubbo_proxy``: a ``DubboProxy`` (Dubbo over
    Hessian2) with inline ``route_config`` (or ``multiple_route_config``):
    each configuration's ``interface``, ``group`` and ``version`` and each
    route's ``match.method.name`` become matches on the dubbo routing
    attributes ``service``, ``group``, ``version`` and ``method``;
  - any name, with a ``TypedStruct`` whose ``type_url`` ends in
    ``sota_dispatch.listener`` and whose ``value`` is a native listener
    (``protocol``, ``routes``, ``limits``, ``options``, ... as in a config
    file; the name and address are the Listener's).
* generic proxy ``RouteConfiguration`` (RDS, or inline): ``routes``, a
  matcher list. Each matcher's predicate is a single predicate, or an
  ``and_matcher`` of them, on ``ServiceMatchInput`` (attribute
  ``service``), ``MethodMatchInput`` (``method``), ``HostMatchInput``
  (``host``), ``PathMatchInput`` (``path``) or ``PropertyMatchInput``
  (its ``property_name``), with an ``exact``, ``prefix`` or ``safe_regex``
  string match; its action a ``RouteAction`` with ``cluster``,
  ``timeout`` and ``retry_policy.num_retries``. ``on_no_match`` is the
  last, catch-all route.
"""

from __future__ import annotations

from typing import Any

from ..config.envoy import cluster_from_envoy
from ..errors import ConfigError

__all__ = ["CDS_TYPE", "LDS_TYPE", "RDS_TYPE", "cluster_document", "listener_document", "routes_document"]

CDS_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS_TYPE = "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.v3.RouteConfiguration"

_GENERIC_PROXY = "envoy.filters.network.generic_proxy"
_DUBBO_PROXY = "envoy.filters.network.dubbo_proxy"
#: How a TypedStruct names a native listener (after the last ``/``).
NATIVE_LISTENER = "sota_dispatch.listener"
_ROUTER = "envoy.filters.generic.router"
_INPUTS = {
    "ServiceMatchInput": "service",
    "MethodMatchInput": "method",
    "HostMatchInput": "host",
    "PathMatchInput": "path",
}


def cluster_document(message: Any) -> dict[str, Any]:
    """A CDS ``Cluster`` as a native cluster document."""
    from google.protobuf.json_format import MessageToDict

    return cluster_from_envoy(MessageToDict(message, preserving_proto_field_name=True), "", eds=True)


def listener_document(message: Any) -> tuple[dict[str, Any], str | None]:
    """An LDS ``Listener`` as a native listener document, and the name of
    its RDS route configuration (None: its routes are inline)."""
    from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2

    if not message.HasField("address") or message.address.WhichOneof("address") != "socket_address":
        raise ConfigError("address", "a socket_address is needed")
    socket_address = message.address.socket_address
    host, port = socket_address.address, socket_address.port_value
    if len(message.filter_chains) != 1:
        raise ConfigError("filter_chains", "exactly one filter chain is supported")
    chain = message.filter_chains[0]
    if chain.HasField("transport_socket") or chain.HasField("filter_chain_match"):
        raise ConfigError("filter_chains[0]", "transport_socket and filter_chain_match are not supported over xDS yet")
    if len(chain.filters) != 1:
        raise ConfigError("filter_chains[0].filters", "exactly one network filter is supported")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    typed_config = chain.filters[0].typed_config
    if typed_config.type_url.rpartition("/")[2] in ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"):
        return _native_listener(message.name, address, typed_config), None
    if chain.filters[0].name == _DUBBO_PROXY:
        return {
            "name": message.name,
            "address": address,
            "protocol": "dubbo",
            "routes": _dubbo_routes(typed_config),
        }, None
    if chain.filters[0].name != _GENERIC_PROXY:
        raise ConfigError(
            "filter_chains[0].filters[0].name",
            f"{chain.filters[0].name!r} is not supported ({_GENERIC_PROXY}, {_DUBBO_PROXY}, "
            f"or a TypedStruct of {NATIVE_LISTENER})",
        )
    proxy = generic_proxy_pb2.GenericProxy()
    if not chain.filters[0].typed_config.Unpack(proxy):
        raise ConfigError("filter_chains[0].filters[0].typed_config", "not a GenericProxy")
    where = "filter_chains[0].filters[0].typed_config"
    for i, entry in enumerate(proxy.filters):
        if entry.name != _ROUTER:
            raise ConfigError(f"{where}.filters[{i}]", f"only {_ROUTER} is supported over xDS yet")
    native: dict[str, Any] = {"name": message.name, "address": address, "protocol": proxy.codec_config.name}
    if proxy.HasField("route_config"):
        native["routes"] = routes_document(proxy.route_config, f"{where}.route_config")
        return native, None
    if proxy.HasField("generic_rds"):
        return native, proxy.generic_rds.route_config_name
    raise ConfigError(where, "route_config or generic_rds is needed")


def routes_document(config: Any, path: str = "") -> list[dict[str, Any]]:
    """A generic proxy ``RouteConfiguration`` as native routes, in order."""
    from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2

    if len(config.virtual_hosts):
        raise ConfigError(f"{path}.virtual_hosts", "not supported: give the routes in routes")
    matcher = config.routes
    if matcher.HasField("matcher_tree"):
        raise ConfigError(f"{path}.routes.matcher_tree", "not supported: use a matcher_list")

    def action(on_match: Any, where: str) -> dict[str, Any]:
        route = action_pb2.RouteAction()
        if not on_match.HasField("action") or not on_match.action.typed_config.Unpack(route):
            raise ConfigError(f"{where}.action", "a generic proxy RouteAction is needed")
        if not route.cluster:
            raise ConfigError(
                f"{where}.action.typed_config.cluster", "a cluster is needed (weighted_clusters: not yet)"
            )
        native: dict[str, Any] = {"cluster": route.cluster, "retry": {"attempts": 1}}
        if route.HasField("timeout"):
            native["timeout"] = route.timeout.ToTimedelta().total_seconds()
        if route.HasField("retry_policy"):
            retries = route.retry_policy.num_retries.value if route.retry_policy.HasField("num_retries") else 1
            native["retry"] = {"attempts": 1 + retries}
        return native

    routes = []
    for i, field in enumerate(matcher.matcher_list.matchers):
        where = f"{path}.routes.matcher_list.matchers[{i}]"
        route = action(field.on_match, f"{where}.on_match")
        route["match"] = _predicate(field.predicate, f"{where}.predicate")
        routes.append(route)
    if matcher.HasField("on_no_match"):
        routes.append(action(matcher.on_no_match, f"{path}.routes.on_no_match"))
    return routes


def _predicate(predicate: Any, path: str) -> list[dict[str, Any]]:
    kind = predicate.WhichOneof("match_type")
    if kind == "single_predicate":
        return [_single(predicate.single_predicate, f"{path}.single_predicate")]
    if kind == "and_matcher":
        found = []
        for i, inner in enumerate(predicate.and_matcher.predicate):
            found += _predicate(inner, f"{path}.and_matcher.predicate[{i}]")
        return found
    raise ConfigError(f"{path}", f"{kind} is not supported (single_predicate, and_matcher)")


def _single(single: Any, path: str) -> dict[str, Any]:
    from envoy.extensions.filters.network.generic_proxy.matcher.v3 import matcher_pb2

    kind = single.input.typed_config.type_url.rpartition(".")[2]
    if kind == "PropertyMatchInput":
        prop = matcher_pb2.PropertyMatchInput()
        single.input.typed_config.Unpack(prop)
        attribute = prop.property_name
    elif kind in _INPUTS:
        attribute = _INPUTS[kind]
    else:
        raise ConfigError(f"{path}.input", f"{kind or 'an empty input'} is not supported")
    if single.WhichOneof("matcher") != "value_match":
        raise ConfigError(f"{path}.custom_match", "only value_match is supported")
    value = single.value_match
    if value.ignore_case:
        raise ConfigError(f"{path}.value_match.ignore_case", "not supported")
    test = value.WhichOneof("match_pattern")
    if test == "exact":
        return {"attribute": attribute, "exact": value.exact}
    if test == "prefix":
        return {"attribute": attribute, "prefix": value.prefix}
    if test == "safe_regex":
        return {"attribute": attribute, "regex": value.safe_regex.regex}
    raise ConfigError(f"{path}.value_match", f"{test} is not supported (exact, prefix, safe_regex)")


def _native_listener(name: str, address: str, typed_config: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict
    from xds.type.v3 import typed_struct_pb2

    where = "filter_chains[0].filters[0].typed_config"
    struct = typed_struct_pb2.TypedStruct()
    typed_config.Unpack(struct)
    if struct.type_url.rpartition("/")[2] != NATIVE_LISTENER:
        raise ConfigError(f"{where}.type_url", f"expected .../{NATIVE_LISTENER}, got {struct.type_url!r}")
    value = _integral(MessageToDict(struct.value))
    for key in ("name", "address"):
        if key in value:
            raise ConfigError(f"{where}.value.{key}", "the Listener's own is used")
    return {**value, "name": name, "address": address}


def _integral(value: Any) -> Any:
    """A Struct's numbers are all doubles: 64.0 back to 64, as YAML would read it."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _dubbo_routes(typed_config: Any) -> list[dict[str, Any]]:
    """Envoy's dubbo_proxy routes as native routes on dubbo's attributes."""
    from envoy.extensions.filters.network.dubbo_proxy.v3 import dubbo_proxy_pb2

    where = "filter_chains[0].filters[0].typed_config"
    proxy = dubbo_proxy_pb2.DubboProxy()
    if not typed_config.Unpack(proxy):
        raise ConfigError(where, "not a DubboProxy")
    if proxy.HasField("drds") or len(proxy.dubbo_filters) > 1:
        raise ConfigError(f"{where}.drds", "drds and dubbo_filters are not supported; give route_config")
    configs = list(proxy.route_config) or list(proxy.multiple_route_config.route_config)
    routes: list[dict[str, Any]] = []
    for i, config in enumerate(configs):
        base = [{"attribute": "service", "exact": config.interface}] if config.interface not in ("", "*") else []
        for attribute in ("group", "version"):
            if getattr(config, attribute):
                base.append({"attribute": attribute, "exact": getattr(config, attribute)})
        for j, route in enumerate(config.routes):
            path = f"{where}.route_config[{i}].routes[{j}]"
            if len(route.match.headers) or route.match.method.params_match:
                raise ConfigError(f"{path}.match", "only method.name is supported")
            if not route.route.cluster:
                raise ConfigError(f"{path}.route.cluster", "a cluster is needed (weighted_clusters: not yet)")
            match = list(base)
            if route.match.HasField("method"):
                name = route.match.method.name
                test = name.WhichOneof("match_pattern")
                if test == "exact":
                    match.append({"attribute": "method", "exact": name.exact})
                elif test == "prefix":
                    match.append({"attribute": "method", "prefix": name.prefix})
                elif test == "safe_regex":
                    match.append({"attribute": "method", "regex": name.safe_regex.regex})
                else:
                    raise ConfigError(f"{path}.match.method.name", f"{test} is not supported")
            routes.append({"cluster": route.route.cluster, "match": match, "retry": {"attempts": 1}})
    return routes
