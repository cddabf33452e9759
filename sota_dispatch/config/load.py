"""Loading a configuration: a YAML file (native, or an Envoy v3 bootstrap),
or the ``--upstream`` shortcut of the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError
from .envoy import from_envoy, is_envoy
from .model import ClusterConfig, LimitsConfig, ListenerConfig, ProxyConfig, RouteConfig
from .parse import admin_config, endpoint_config, parse_config

__all__ = ["config_from_text", "config_from_upstreams", "load_config"]


def load_config(path: str | Path) -> ProxyConfig:
    """Read and validate a YAML config file; raises :class:`ConfigError`.

    The file is the native format, or an Envoy v3 static bootstrap (one
    with ``static_resources``; see :mod:`sota_dispatch.config.envoy`). A key given
    twice in one mapping is an error (PyYAML would silently keep the last
    one). A file with several problems raises one error listing them all,
    in the file's order (:attr:`~sota_dispatch.ConfigError.errors`); only
    a file that is not YAML at all stops at its first.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    return config_from_text(text, str(path))


def config_from_text(text: str, path: str = "<config>") -> ProxyConfig:
    """:func:`load_config` for a YAML document already read (``path``
    names it in errors)."""
    import yaml  # imported here: only the config file needs it

    try:
        data = yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError("", f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError("", f"{path}: nested too deeply") from None

    if is_envoy(data):
        return from_envoy(data)
    return parse_config(data)


def _strict_loader() -> type[Any]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        mark = key_node.start_mark
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {cv.show(key)}", mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def config_from_upstreams(
    protocol: str,
    listen: str,
    upstreams: Sequence[str],
    *,
    options: Mapping[str, str] | None = None,
    drain_timeout: float | None = None,
    admin: str | Mapping[str, object] | None = None,
    limits: LimitsConfig | None = None,
) -> ProxyConfig:
    """The ``--upstream`` shortcut: one listener, one round-robin cluster of
    ``upstreams``, one catch-all route."""
    endpoints = cv.items(list(upstreams), "--upstream", endpoint_config)
    config = ProxyConfig(
        listeners=(
            ListenerConfig(
                name="main",
                address=cv.address(listen, "--listen"),
                protocol=protocol,
                routes=(RouteConfig(cluster="upstream"),),
                options=options or {},
                limits=limits or LimitsConfig(),
            ),
        ),
        clusters=(ClusterConfig(name="upstream", endpoints=endpoints),),
        admin=None if admin is None else admin_config(admin, "--admin"),
    )
    return config if drain_timeout is None else attrs.evolve(config, drain_timeout=drain_timeout)
