"""Endpoints from the children of a ZooKeeper node: Dubbo provider URLs, or plain ``HOST:PORT``.

Dubbo's Java registry names each provider node by its URL, URL-encoded
(``URLEncoder.encode(url.toFullString(), "UTF-8")``)::

    dubbo%3A%2F%2F10.0.0.5%3A20880%2Forg.apache.dubbo.demo.DemoService%3F...%26weight%3D100

Decoded: scheme, ``host:port``, the interface as the path, and parameters:
``weight`` (default 100), ``enabled`` (``false`` takes the provider out of
the balancing, as Dubbo's admin does), ``disabled``, ``group``, ``version``,
``category``. A provider is used when its scheme is the cluster's, it is
enabled, and its group and version match the cluster's (``*`` matches any;
a group may list several). Children that cannot be read are reported, not
fatal: a registry holds whatever its writers put there.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from ..config.discovery import ZooKeeperConfig
from ..config.model import MAX_WEIGHT, EndpointConfig
from ..errors import ConfigError

__all__ = ["DUBBO_DEFAULT_WEIGHT", "dubbo_provider", "endpoints_from"]

#: A provider's weight when its URL names none (Dubbo's default).
DUBBO_DEFAULT_WEIGHT = 100


def _matches(wanted: str | None, given: str) -> bool:
    """Dubbo's group/version match: ``*`` any; else equal (a group may list several)."""
    if wanted == "*":
        return True
    return given in (wanted or "").split(",") if wanted and "," in wanted else given == (wanted or "")


def dubbo_provider(child: str, config: ZooKeeperConfig) -> EndpointConfig | str | None:
    """The endpoint a provider node names; None if it is not for this
    cluster (another scheme, group or version, disabled); a string saying
    why if it cannot be read."""
    text = unquote_plus(child)
    try:
        url = urlsplit(text)
        host, port = url.hostname, url.port
    except ValueError as exc:
        return f"not a provider URL ({exc})"
    if not url.scheme or host is None or port is None:
        return "not a provider URL (scheme://host:port/interface?...)"
    if url.scheme != config.scheme:
        return None
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    interface = params.get("interface") or url.path.strip("/")
    if interface != config.interface:
        return f"registered for interface {interface!r}, not {config.interface!r}"
    if params.get("category", "providers") != "providers":
        return None
    if params.get("enabled", "true").lower() == "false" or params.get("disabled", "false").lower() == "true":
        return None
    if not _matches(config.group, params.get("group", "")) or not _matches(config.version, params.get("version", "")):
        return None
    try:
        weight = int(params.get("weight", DUBBO_DEFAULT_WEIGHT))
    except ValueError:
        return f"weight {params['weight']!r} is not a number"
    if weight <= 0:
        return None  # Dubbo sends such a provider nothing
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return EndpointConfig(address, min(weight, MAX_WEIGHT))
    except ConfigError as exc:
        return exc.problem


def _plain(child: str) -> EndpointConfig | str:
    try:
        return EndpointConfig(child)
    except ConfigError as exc:
        return f"not HOST:PORT ({exc.problem})"


def endpoints_from(
    children: Iterable[str], config: ZooKeeperConfig
) -> tuple[tuple[EndpointConfig, ...], list[tuple[str, str]]]:
    """The endpoints the children of ``config.watched`` name, sorted by
    address (a provider registered twice counts once, at its highest
    weight), and ``(child, why)`` for each child that cannot be read."""
    found: dict[str, EndpointConfig] = {}
    problems: list[tuple[str, str]] = []
    for child in children:
        endpoint = dubbo_provider(child, config) if config.interface is not None else _plain(child)
        if isinstance(endpoint, str):
            problems.append((child, endpoint))
        elif endpoint is not None:
            known = found.get(endpoint.address)
            if known is None or known.weight < endpoint.weight:
                found[endpoint.address] = endpoint
    return tuple(found[address] for address in sorted(found)), problems
