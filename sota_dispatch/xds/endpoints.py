"""Endpoints from Envoy's ``ClusterLoadAssignment`` (EDS), checked as the config's are.

Each ``endpoints[]`` locality group gives its ``priority``; each
``lb_endpoints[]`` entry a socket address (``endpoint.address``) and a
``load_balancing_weight`` (default 1). Entries whose ``health_status`` is
UNHEALTHY, DRAINING or TIMEOUT get no traffic, as in Envoy. A pipe or
named-resolver address is not supported. A problem raises one
:class:`~sota_dispatch.ConfigError` naming the field within the
assignment, which the client sends back in its NACK.
"""

from __future__ import annotations

from typing import Any

from ..config.model import EndpointConfig
from ..errors import ConfigError

__all__ = ["assignments_of", "endpoints_of"]

#: Envoy's ``HealthStatus`` values that take an endpoint out of the balancing.
_NO_TRAFFIC = {2, 3, 4}  # UNHEALTHY, DRAINING, TIMEOUT

#: Our endpoint's fields, as the assignment names them.
_FIELDS = {"address": "endpoint.address.socket_address", "weight": "load_balancing_weight"}


def endpoints_of(assignment: Any) -> tuple[EndpointConfig, ...]:
    """The endpoints of one ``ClusterLoadAssignment`` message."""
    found: list[EndpointConfig] = []
    problems: list[ConfigError] = []
    for i, group in enumerate(assignment.endpoints):
        for j, lb_endpoint in enumerate(group.lb_endpoints):
            path = f"endpoints[{i}].lb_endpoints[{j}]"
            if lb_endpoint.health_status in _NO_TRAFFIC:
                continue
            address = lb_endpoint.endpoint.address
            if address.WhichOneof("address") != "socket_address":
                problems.append(ConfigError(f"{path}.endpoint.address", "only socket_address is supported"))
                continue
            socket_address = address.socket_address
            if socket_address.WhichOneof("port_specifier") != "port_value":
                problems.append(ConfigError(f"{path}.endpoint.address.socket_address", "a port_value is needed"))
                continue
            host = socket_address.address
            weight = lb_endpoint.load_balancing_weight.value if lb_endpoint.HasField("load_balancing_weight") else 1
            text = f"[{host}]:{socket_address.port_value}" if ":" in host else f"{host}:{socket_address.port_value}"
            try:
                found.append(EndpointConfig(text, weight, group.priority))
            except ConfigError as exc:
                where = (
                    f"endpoints[{i}].priority"
                    if exc.path == "priority"
                    else f"{path}.{_FIELDS.get(exc.path, exc.path)}"
                )
                problems.append(ConfigError(where, exc.problem))
    if problems:
        raise ConfigError.combine(problems)
    return tuple(found)


def assignments_of(messages: Any) -> dict[str, tuple[EndpointConfig, ...]]:
    """The endpoints of each assignment of an EDS response, by its
    ``cluster_name``; one ConfigError naming every problem (for the NACK)."""
    assignments: dict[str, tuple[EndpointConfig, ...]] = {}
    problems: list[ConfigError] = []
    for i, assignment in enumerate(messages):
        try:
            assignments[assignment.cluster_name] = endpoints_of(assignment)
        except ConfigError as exc:
            where = f"resources[{i}] ({assignment.cluster_name})"
            problems += [ConfigError(f"{where}.{e.path}", e.problem) for e in exc.errors]
    if problems:
        raise ConfigError.combine(problems)
    return assignments
