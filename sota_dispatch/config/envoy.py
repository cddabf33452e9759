"""Read an Envoy v3 static bootstrap (a subset) as a native configuration.

sota-mesh reads Envoy's own files, so operators keep one format. The subset:

* ``static_resources.listeners[]``: ``name``, ``address.socket_address``
  and one filter chain with one ``envoy.filters.network.generic_proxy``
  filter whose ``typed_config`` has ``codec_config.name`` (the protocol, or
  ``auto``) and a ``route_config`` of ``virtual_hosts[].routes[]`` in
  Envoy's HTTP route shape: ``match`` (``prefix`` ``""`` or ``"/"``, and
  ``headers[]`` matching routing attributes: ``string_match`` exact /
  prefix / safe_regex, ``present_match``), ``route`` (``cluster``,
  ``timeout``, ``retry_policy``: ``retry_on``, ``num_retries``,
  ``per_try_timeout``; ``hash_policy[].header.header_name``;
  ``per_filter_config``, generic proxy's name, or HTTP's
  ``typed_per_filter_config`` on the route); and ``filters``: the stream
  filters, each ``{name, typed_config}`` whose ``typed_config`` is a
  ``TypedStruct`` (``xds.type.v3`` or ``udpa.type.v1``) with ``type_url``
  ``.../sota_dispatch.filters.<type>`` and the filter's options as
  ``value``, optionally ended by Envoy's terminal
  ``envoy.filters.generic.router``; ``access_log`` (see
  :mod:`sota_dispatch.config.envoy_access_log`);
* ``static_resources.clusters[]``: ``name``, ``connect_timeout``,
  ``lb_policy``, ``load_assignment.endpoints[]`` (``priority``,
  ``lb_endpoints[].endpoint.address.socket_address``,
  ``load_balancing_weight``), ``circuit_breakers.thresholds[0]``,
  ``outlier_detection`` (``consecutive_5xx``, ``base_ejection_time``,
  ``max_ejection_time``, ``max_ejection_percent``), ``health_checks[0]``
  (``interval``, ``timeout``, thresholds, ``tcp_health_check``);
* ``transport_socket`` on a listener's filter chain and on a cluster: TLS
  (see :mod:`sota_dispatch.config.envoy_tls`);
* ``admin.address.socket_address``.

Anything else is an error naming the field, never ignored; the problems of
every listener and cluster are reported at once. The result is the native
document, validated by :func:`~sota_dispatch.config.parse_config` (a field Envoy
leaves out gets the native default). Envoy's defaults are kept where they
differ from the native ones: no retries without a ``retry_policy`` and one
(two tries) without ``num_retries``, a 5 s ``connect_timeout``, a 10 %
``max_ejection_percent``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from .envoy_access_log import access_log_from_envoy
from .envoy_tls import downstream_tls, upstream_tls
from .model import ProxyConfig
from .parse import parse_config

__all__ = [
    "ENVOY_CONNECT_TIMEOUT",
    "cluster_from_envoy",
    "ENVOY_FILTER",
    "ENVOY_MAX_EJECTION_PERCENT",
    "ENVOY_NUM_RETRIES",
    "ENVOY_ROUTER",
    "FILTER_TYPE_PREFIX",
    "from_envoy",
    "is_envoy",
]

#: The network filter that carries a sota protocol in an Envoy file.
ENVOY_FILTER = "envoy.filters.network.generic_proxy"

#: Envoy generic proxy's terminal filter, the router: the last of ``filters``.
ENVOY_ROUTER = "envoy.filters.generic.router"
#: How a ``TypedStruct``'s ``type_url`` names a sota stream filter (after the last ``/``).
FILTER_TYPE_PREFIX = "sota_dispatch.filters."
_TYPED_STRUCTS = ("type.googleapis.com/xds.type.v3.TypedStruct", "type.googleapis.com/udpa.type.v1.TypedStruct")

# Envoy's defaults where they differ from the native ones (the native ones
# are the model's: a field left out of the native document gets its default).
#: A cluster's ``connect_timeout``.
ENVOY_CONNECT_TIMEOUT = "5s"
#: A ``retry_policy``'s ``num_retries``.
ENVOY_NUM_RETRIES = 1
#: ``outlier_detection.max_ejection_percent``.
ENVOY_MAX_EJECTION_PERCENT = 10

_LB = {name: name.lower() for name in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")}
_RETRY_ON = {
    "connect-failure": "connect_failure",
    "reset": "reset",
    "per-try-timeout": "per_try_timeout",
    "retriable-status-codes": "status",
}


def is_envoy(data: object) -> bool:
    """Does the loaded document look like an Envoy bootstrap?"""
    return isinstance(data, Mapping) and "static_resources" in data


def _map(value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "expected a mapping")
    for key in value:
        if key not in allowed:
            raise ConfigError(
                f"{path}.{key}", f"not supported by sota-dispatch's Envoy subset (supported: {', '.join(allowed)})"
            )
    for key in required:
        if key not in value:
            raise ConfigError(f"{path}.{key}", "required")
    return value


def _seq(value: object, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "expected a non-empty list")
    return value


def _one(value: object, path: str) -> Any:
    items = _seq(value, path)
    if len(items) != 1:
        raise ConfigError(path, f"exactly one entry is supported, got {len(items)}")
    return items[0]


def _socket_address(value: object, path: str) -> str:
    address = _map(
        _map(value, path, ("socket_address",), ("socket_address",))["socket_address"],
        f"{path}.socket_address",
        ("address", "port_value"),
        ("address", "port_value"),
    )
    host = address["address"]
    return f"[{host}]:{address['port_value']}" if ":" in str(host) else f"{host}:{address['port_value']}"


def _header(value: object, path: str) -> dict[str, Any]:
    header = _map(
        value,
        path,
        ("name", "string_match", "present_match", "exact_match", "prefix_match", "safe_regex_match"),
        ("name",),
    )
    match: dict[str, Any] = {"attribute": header["name"]}
    kinds = [
        k for k in ("string_match", "present_match", "exact_match", "prefix_match", "safe_regex_match") if k in header
    ]
    if len(kinds) != 1:
        raise ConfigError(
            path, f"expected exactly one of string_match, present_match or a legacy *_match, got {len(kinds)}"
        )
    if "string_match" in header:
        string = _map(header["string_match"], f"{path}.string_match", ("exact", "prefix", "safe_regex"))
        if len(string) != 1:
            raise ConfigError(
                f"{path}.string_match", f"expected exactly one of exact, prefix, safe_regex, got {len(string)}"
            )
        if "safe_regex" in string:
            match["regex"] = _map(string["safe_regex"], f"{path}.string_match.safe_regex", ("regex",), ("regex",))[
                "regex"
            ]
        elif "exact" in string:
            match["exact"] = string["exact"]
        else:
            match["prefix"] = string["prefix"]
    elif "exact_match" in header:
        match["exact"] = header["exact_match"]
    elif "prefix_match" in header:
        match["prefix"] = header["prefix_match"]
    elif "safe_regex_match" in header:
        match["regex"] = _map(header["safe_regex_match"], f"{path}.safe_regex_match", ("regex",), ("regex",))["regex"]
    else:
        match["present"] = header["present_match"]
    return match


def _typed_struct(value: object, path: str) -> tuple[str, object]:
    """The filter type and options a ``TypedStruct`` carries.

    Envoy's generic proxy has no fault, rate-limit or RBAC filter of its
    own, and a sota filter has no protobuf message: ``TypedStruct`` is the
    type Envoy (and xDS) defines for an extension configured by a plain
    struct, so a file naming our filters stays valid protobuf JSON.
    """
    typed = _map(value, path, ("@type", "type_url", "value"), ("@type",))
    if typed["@type"] not in _TYPED_STRUCTS:
        raise ConfigError(
            f"{path}.@type",
            f"a sota stream filter is a TypedStruct ({' or '.join(_TYPED_STRUCTS)}), got {typed['@type']!r}",
        )
    if "type_url" not in typed:
        raise ConfigError(f"{path}.type_url", "required")
    name = str(typed["type_url"]).rpartition("/")[2]
    if not name.startswith(FILTER_TYPE_PREFIX) or name == FILTER_TYPE_PREFIX:
        raise ConfigError(
            f"{path}.type_url",
            f"expected type.googleapis.com/{FILTER_TYPE_PREFIX}<filter type>, got {typed['type_url']!r}",
        )
    return name[len(FILTER_TYPE_PREFIX) :], typed.get("value") or {}


def _filters(value: object, path: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The native ``stream_filters`` of a generic proxy's ``filters``, and each one's type by name."""
    native: list[dict[str, Any]] = []
    types: dict[str, str] = {}
    items = _seq(value, path)
    for i, item in enumerate(items):
        fpath = f"{path}[{i}]"
        entry = _map(item, fpath, ("name", "typed_config"), ("name",))
        if entry["name"] == ENVOY_ROUTER:
            if i != len(items) - 1:
                raise ConfigError(fpath, f"{ENVOY_ROUTER} is the terminal filter: it must be the last")
            continue  # routing is the proxy's own: the router's config has nothing to add
        if "typed_config" not in entry:
            raise ConfigError(f"{fpath}.typed_config", "required")
        kind, options = _typed_struct(entry["typed_config"], f"{fpath}.typed_config")
        native.append({"type": kind, "name": entry["name"], "config": options})
        types[str(entry["name"])] = kind
    return native, types


def _per_filter_config(value: object, path: str, types: Mapping[str, str]) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, "expected a mapping of filter names to their TypedStruct")
    native: dict[str, object] = {}
    for name, typed in value.items():
        if name not in types:
            raise ConfigError(
                f"{path}.{name}",
                f"the generic proxy has no filter named {name!r} (it has: {', '.join(types) or 'none'})",
            )
        kind, options = _typed_struct(typed, f"{path}.{name}")
        if kind != types[name]:
            raise ConfigError(f"{path}.{name}.type_url", f"the filter {name!r} is a {types[name]!r}, not a {kind!r}")
        native[name] = options
    return native


def _route(value: object, path: str, filters: Mapping[str, str]) -> dict[str, Any]:
    route = _map(value, path, ("name", "match", "route", "typed_per_filter_config"), ("match", "route"))
    match = _map(route["match"], f"{path}.match", ("prefix", "headers"))
    if match.get("prefix", "") not in ("", "/"):
        raise ConfigError(f"{path}.match.prefix", 'only "" or "/" (these protocols have no paths)')
    action = _map(
        route["route"],
        f"{path}.route",
        ("cluster", "timeout", "retry_policy", "hash_policy", "per_filter_config"),
        ("cluster",),
    )
    native: dict[str, Any] = {
        "cluster": action["cluster"],
        "match": [_header(h, f"{path}.match.headers[{i}]") for i, h in enumerate(match.get("headers", []))],
    }
    if "per_filter_config" in action and "typed_per_filter_config" in route:
        raise ConfigError(
            f"{path}.typed_per_filter_config", "give either this or route.per_filter_config (the same thing), not both"
        )
    if "per_filter_config" in action:
        native["per_filter_config"] = _per_filter_config(
            action["per_filter_config"], f"{path}.route.per_filter_config", filters
        )
    elif "typed_per_filter_config" in route:
        native["per_filter_config"] = _per_filter_config(
            route["typed_per_filter_config"], f"{path}.typed_per_filter_config", filters
        )
    if "timeout" in action:
        native["timeout"] = action["timeout"]
    if "retry_policy" not in action:
        native["retry"] = {"attempts": 1}  # one try: Envoy retries nothing without a policy
    else:
        policy = _map(
            action["retry_policy"],
            f"{path}.route.retry_policy",
            ("retry_on", "num_retries", "per_try_timeout", "retriable_status_codes"),
        )
        retry: dict[str, Any] = {"idempotent": True}  # Envoy retries what its policy names
        if "retry_on" in policy:
            kinds = []
            for kind in str(policy["retry_on"]).split(","):
                if kind.strip() not in _RETRY_ON:
                    raise ConfigError(
                        f"{path}.route.retry_policy.retry_on",
                        f"{kind.strip()!r} is not supported ({', '.join(_RETRY_ON)})",
                    )
                kinds.append(_RETRY_ON[kind.strip()])
            retry["retry_on"] = kinds
        retries = policy.get("num_retries", ENVOY_NUM_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"{path}.route.retry_policy.num_retries", f"expected an integer >= 0, got {retries!r}")
        retry["attempts"] = retries + 1
        if "retriable_status_codes" in policy:
            retry["statuses"] = policy["retriable_status_codes"]
        native["retry"] = retry
        if "per_try_timeout" in policy:
            native["per_try_timeout"] = policy["per_try_timeout"]
    if "hash_policy" in action:
        hashed = _one(action["hash_policy"], f"{path}.route.hash_policy")
        header = _map(
            _map(hashed, f"{path}.route.hash_policy[0]", ("header",), ("header",))["header"],
            f"{path}.route.hash_policy[0].header",
            ("header_name",),
            ("header_name",),
        )
        native["hash_key"] = header["header_name"]
    return native


def _listener(value: object, path: str) -> dict[str, Any]:
    listener = _map(value, path, ("name", "address", "filter_chains"), ("name", "address", "filter_chains"))
    chain = _map(
        _one(listener["filter_chains"], f"{path}.filter_chains"),
        f"{path}.filter_chains[0]",
        ("filters", "transport_socket"),
        ("filters",),
    )
    fpath = f"{path}.filter_chains[0].filters[0]"
    filter_ = _map(
        _one(chain["filters"], f"{path}.filter_chains[0].filters"),
        fpath,
        ("name", "typed_config"),
        ("name", "typed_config"),
    )
    if filter_["name"] != ENVOY_FILTER:
        raise ConfigError(f"{fpath}.name", f"only {ENVOY_FILTER} is supported, got {filter_['name']!r}")
    typed = _map(
        filter_["typed_config"],
        f"{fpath}.typed_config",
        ("@type", "stat_prefix", "codec_config", "route_config", "filters", "access_log"),
        ("codec_config", "route_config"),
    )
    stream_filters: list[dict[str, Any]] = []
    filter_types: dict[str, str] = {}
    if "filters" in typed:
        stream_filters, filter_types = _filters(typed["filters"], f"{fpath}.typed_config.filters")
    codec = _map(typed["codec_config"], f"{fpath}.typed_config.codec_config", ("name",), ("name",))
    rpath = f"{fpath}.typed_config.route_config"
    route_config = _map(typed["route_config"], rpath, ("name", "virtual_hosts"), ("virtual_hosts",))
    routes: list[dict[str, Any]] = []
    for i, host in enumerate(_seq(route_config["virtual_hosts"], f"{rpath}.virtual_hosts")):
        vpath = f"{rpath}.virtual_hosts[{i}]"
        vhost = _map(host, vpath, ("name", "domains", "routes"), ("routes",))
        if vhost.get("domains", ["*"]) != ["*"]:
            raise ConfigError(f"{vpath}.domains", 'only ["*"] (these protocols have no host names)')
        routes += [
            _route(r, f"{vpath}.routes[{j}]", filter_types)
            for j, r in enumerate(_seq(vhost["routes"], f"{vpath}.routes"))
        ]
    native: dict[str, Any] = {
        "name": listener["name"],
        "address": _socket_address(listener["address"], f"{path}.address"),
        "protocol": codec["name"],
        "routes": routes,
    }
    if stream_filters:
        native["stream_filters"] = stream_filters
    if "access_log" in typed:
        native["access_log"] = access_log_from_envoy(typed["access_log"], f"{fpath}.typed_config.access_log", _map)
    if "transport_socket" in chain:
        native["tls"] = downstream_tls(_map, chain["transport_socket"], f"{path}.filter_chains[0].transport_socket")
    return native


def cluster_from_envoy(value: object, path: str, *, eds: bool = False) -> dict[str, Any]:
    """One Envoy ``Cluster`` (a mapping, in its JSON shape) as a native
    cluster document; ``eds``: ``type: EDS`` is allowed too (an xDS
    client's), its ``eds`` naming the assignment its endpoints come from."""
    kinds = ("STATIC", "EDS") if eds else ("STATIC",)
    cluster = _map(
        value,
        path,
        (
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "circuit_breakers",
            "outlier_detection",
            "health_checks",
            "transport_socket",
            *(("eds_cluster_config",) if eds else ()),
        ),
        ("name",),
    )
    kind = cluster.get("type", "STATIC")
    if kind not in kinds:
        raise ConfigError(f"{path}.type", f"only {' and '.join(kinds)} clusters are supported, got {kind!r}")
    if (kind == "EDS") == ("load_assignment" in cluster):
        problem = "an EDS cluster's endpoints come over EDS" if kind == "EDS" else "required"
        raise ConfigError(f"{path}.load_assignment", problem)
    native: dict[str, Any] = {
        "name": cluster["name"],
        "connect_timeout": cluster.get("connect_timeout", ENVOY_CONNECT_TIMEOUT),
    }
    if "lb_policy" in cluster:
        if cluster["lb_policy"] not in _LB:
            raise ConfigError(f"{path}.lb_policy", f"expected one of {', '.join(_LB)}, got {cluster['lb_policy']!r}")
        native["lb"] = _LB[cluster["lb_policy"]]
    apath = f"{path}.load_assignment"
    endpoints = []
    groups: list[Any] = []
    if kind == "EDS":
        service = _map(
            cluster.get("eds_cluster_config", {}), f"{path}.eds_cluster_config", ("service_name", "eds_config")
        )
        native["eds"] = service.get("service_name") or cluster["name"]
    else:
        assignment = _map(cluster["load_assignment"], apath, ("cluster_name", "endpoints"), ("endpoints",))
        groups = _seq(assignment["endpoints"], f"{apath}.endpoints")
    for i, group in enumerate(groups):
        gpath = f"{apath}.endpoints[{i}]"
        locality = _map(group, gpath, ("priority", "lb_endpoints", "locality"), ("lb_endpoints",))
        for j, item in enumerate(_seq(locality["lb_endpoints"], f"{gpath}.lb_endpoints")):
            epath = f"{gpath}.lb_endpoints[{j}]"
            lb_endpoint = _map(item, epath, ("endpoint", "load_balancing_weight"), ("endpoint",))
            endpoint = _map(lb_endpoint["endpoint"], f"{epath}.endpoint", ("address",), ("address",))
            native_endpoint = {"address": _socket_address(endpoint["address"], f"{epath}.endpoint.address")}
            if "load_balancing_weight" in lb_endpoint:
                native_endpoint["weight"] = lb_endpoint["load_balancing_weight"]
            if "priority" in locality:
                native_endpoint["priority"] = locality["priority"]
            endpoints.append(native_endpoint)
    native["endpoints"] = endpoints
    if "circuit_breakers" in cluster:
        cpath = f"{path}.circuit_breakers"
        breakers = _map(cluster["circuit_breakers"], cpath, ("thresholds",), ("thresholds",))
        thresholds = dict(
            _map(
                _one(breakers["thresholds"], f"{cpath}.thresholds"),
                f"{cpath}.thresholds[0]",
                ("priority", "max_connections", "max_pending_requests", "max_requests", "max_retries"),
            )
        )
        if thresholds.pop("priority", "DEFAULT") != "DEFAULT":
            raise ConfigError(f"{cpath}.thresholds[0].priority", "only DEFAULT")
        native["circuit_breakers"] = thresholds
    if "outlier_detection" in cluster:
        outlier = _map(
            cluster["outlier_detection"],
            f"{path}.outlier_detection",
            ("consecutive_5xx", "base_ejection_time", "max_ejection_time", "max_ejection_percent"),
        )
        native["outlier_detection"] = {
            "max_ejection_percent": ENVOY_MAX_EJECTION_PERCENT,
            **{{"consecutive_5xx": "consecutive_failures"}.get(k, k): v for k, v in outlier.items()},
        }
    if "health_checks" in cluster:
        hpath = f"{path}.health_checks[0]"
        check = _map(
            _one(cluster["health_checks"], f"{path}.health_checks"),
            hpath,
            ("timeout", "interval", "unhealthy_threshold", "healthy_threshold", "tcp_health_check"),
        )
        native["health_check"] = {k: v for k, v in check.items() if k != "tcp_health_check"}
        if "tcp_health_check" in check:
            # Only the plain connect check: a send/receive payload is not supported.
            _map(check["tcp_health_check"] or {}, f"{hpath}.tcp_health_check", ())
            native["health_check"]["kind"] = "tcp"
    if "transport_socket" in cluster:
        native["tls"] = upstream_tls(_map, cluster["transport_socket"], f"{path}.transport_socket")
    return native


def from_envoy(data: Mapping[str, Any]) -> ProxyConfig:
    """The native configuration an Envoy bootstrap describes (see the module)."""
    top = _map(data, "(top level)", ("static_resources", "admin"), ("static_resources",))
    resources = _map(top["static_resources"], "static_resources", ("listeners", "clusters"), ("listeners", "clusters"))
    errors: list[ConfigError] = []

    def each(name: str, translate: Callable[[object, str], dict[str, Any]]) -> list[dict[str, Any]]:
        translated = []
        for i, value in enumerate(_seq(resources[name], f"static_resources.{name}")):
            try:
                translated.append(translate(value, f"static_resources.{name}[{i}]"))
            except ConfigError as exc:  # reported with the others' problems
                errors.extend(exc.errors)
        return translated

    native: dict[str, Any] = {
        "listeners": each("listeners", _listener),
        "clusters": each("clusters", cluster_from_envoy),
    }
    if "admin" in top:
        try:
            admin = _map(top["admin"], "admin", ("address",), ("address",))
            native["admin"] = _socket_address(admin["address"], "admin.address")
        except ConfigError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError.combine(cv.in_file_order(errors, data))
    try:
        return parse_config(native)
    except ConfigError as exc:
        raise ConfigError.combine(
            ConfigError(error.path, f"{error.problem} (in the native config made from the Envoy file)")
            for error in exc.errors
        ) from None
