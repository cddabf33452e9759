"""From parsed arguments to what runs: a proxy configuration or a local service.

:class:`ServicePlan` holds everything checked once (config, protocol,
options, TLS files) and builds the service as often as needed: once in a
single process; in a supervisor to check it and learn its addresses; in
each worker on the sockets the supervisor hands it.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs

from ..config import (
    LimitsConfig,
    ProxyConfig,
    admin_config,
    config_from_upstreams,
    load_config,
)
from ..errors import ConfigError
from ..filters.registry import available_filters, get_filter
from ..io.address import parse_address
from ..io.timeouts import ReadTimeouts
from ..io.tls import ServerTLS
from ..logs import plural
from ..protocol.options import Option, OptionPlace
from ..protocol.registry import ProtocolInfo, available_protocols, get_protocol
from ..protocol.server import DEFAULT_MAX_CONNECTIONS, Server, park_idle_after
from ..proxy.proxy import Proxy
from .args import DEFAULT_LISTEN, UsageError

__all__ = [
    "SERVICE_KEY",
    "ServicePlan",
    "drain_seconds",
    "limits",
    "list_filters",
    "list_protocols",
    "listen_address",
    "parse_options",
    "proxy_config",
    "service_tls",
    "shortcut_error",
    "summary",
]

log = logging.getLogger("sota_dispatch.serve")

#: The listening-socket key of a local service (a proxy's are its listener names).
SERVICE_KEY = "service"


def limits(args: argparse.Namespace) -> tuple[int | None, ReadTimeouts]:
    """``(max_connections, timeouts)`` from the guard flags (0: no limit)."""
    defaults = ReadTimeouts()

    def given(value: float | None, default: float | None) -> float | None:
        if value is None:
            return default
        return value or None

    count = DEFAULT_MAX_CONNECTIONS if args.max_connections is None else (args.max_connections or None)
    return count, ReadTimeouts(
        frame=given(args.frame_timeout, defaults.frame), idle=given(args.idle_timeout, defaults.idle)
    )


def service_tls(args: argparse.Namespace) -> ServerTLS | None:
    """The local service's TLS from ``--tls-*`` (None: plaintext)."""
    if args.tls_cert is None and args.tls_key is None and args.tls_client_ca is None and not args.tls_allow_name:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        return ServerTLS(
            [(args.tls_cert, args.tls_key, ())],
            ca_file=args.tls_client_ca,
            require_client_certificate=args.tls_client_ca is not None,
            allowed_names=args.tls_allow_name,
        )
    except ConfigError as exc:
        flags = {"ca_file": "--tls-client-ca", "certificates[0].private_key": "--tls-key"}
        flag = flags.get(exc.path, "--tls-cert")
        raise UsageError(f"{flag}: {exc.problem}") from None


def _list_plugins(names: list[str], get: Callable[[str], Any], option_line: Callable[[str, Option], str]) -> int:
    """One line per installed protocol or filter, then one per option."""
    for name in names:
        try:
            info = get(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            print(f"{name}\t(failed to load: {exc})")
            continue
        print(f"{name}\t{info.description}\t[{info.source}]")
        for option, spec in info.options.items():
            print(option_line(option, spec))
    return 0


def list_filters() -> int:
    return _list_plugins(available_filters(), get_filter, lambda option, spec: f"    {option}: ...\t{spec.help}")


def list_protocols() -> int:
    def line(option: str, spec: Option) -> str:
        return f"    -o {option}=...\t{spec.help}\t({', '.join(sorted(spec.places))})"

    return _list_plugins(available_protocols(), get_protocol, line)


def parse_options(info: ProtocolInfo, items: Sequence[str], place: OptionPlace) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--option expects NAME=VALUE, got {item!r}")
        known = info.options.at(place)
        if name not in known:
            names = ", ".join(known) or "none"
            where = "a local service" if place == "service" else "a proxy listener"
            raise UsageError(f"protocol {info.name!r} has no option {name!r} for {where} (options: {names})")
        options[name] = value
    return options


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    try:
        return parse_address(args.listen or DEFAULT_LISTEN)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None


def drain_seconds(args: argparse.Namespace, default: float) -> float:
    return default if args.drain_timeout is None else float(args.drain_timeout)


def proxy_config(args: argparse.Namespace) -> ProxyConfig | None:
    """The proxy configuration the arguments ask for; None for a local service."""
    if args.config is not None:
        clash = [
            flag
            for flag, given in (
                ("--upstream", args.upstream),
                ("--protocol", args.protocol),
                ("--listen", args.listen),
                ("--option", args.option),
            )
            if given
        ]
        if clash:
            raise UsageError(f"--config holds the whole configuration; drop {', '.join(clash)}")
        guards = [
            flag
            for flag, given in (
                ("--max-connections", args.max_connections),
                ("--frame-timeout", args.frame_timeout),
                ("--idle-timeout", args.idle_timeout),
                ("--park-idle-after", args.park_idle_after),
            )
            if given is not None
        ]
        if guards:
            raise UsageError(f"{', '.join(guards)}: set the listeners' limits in the config file instead")
        config = load_config(args.config)
        node = {k: v for k, v in (("node_id", args.node_id), ("node_cluster", args.node_cluster)) if v is not None}
        if node:
            if config.xds is None:
                raise UsageError("--node-id and --node-cluster need an xds control plane in the config")
            config = attrs.evolve(config, xds=attrs.evolve(config.xds, **node))
        if args.drain_timeout is not None:
            config = attrs.evolve(config, drain_timeout=drain_seconds(args, config.drain_timeout))
        if args.admin is not None:
            config = attrs.evolve(config, admin=admin_config(_admin_arg(args), "--admin"))
        elif args.admin_allow_remote:
            if config.admin is None:
                raise UsageError("--admin-allow-remote needs an admin endpoint (--admin, or admin in the config)")
            config = attrs.evolve(config, admin=attrs.evolve(config.admin, allow_remote=True))
        return config
    if args.node_id is not None or args.node_cluster is not None:
        raise UsageError("--node-id and --node-cluster go with --config (its xds control plane)")
    if args.upstream:
        if not args.protocol:
            raise UsageError("--upstream needs --protocol (see --list-protocols, or auto)")
        if args.protocol == "auto":
            if args.option:
                raise UsageError("--option needs a named protocol, not auto")
            options: dict[str, str] = {}
        else:
            options = parse_options(get_protocol(args.protocol), args.option, "listener")
        max_connections, timeouts = limits(args)
        return config_from_upstreams(
            args.protocol,
            args.listen or DEFAULT_LISTEN,
            args.upstream,
            options=options,
            drain_timeout=args.drain_timeout,
            admin=None if args.admin is None else _admin_arg(args),
            limits=LimitsConfig(
                max_connections=max_connections,
                frame_timeout=timeouts.frame,
                idle_timeout=timeouts.idle,
                park_idle_after=args.park_idle_after,  # None: the listener's default; 0: never
            ),
        )
    if args.check_config:
        raise UsageError("--check-config needs --config or --upstream")
    if args.admin is not None or args.admin_allow_remote:
        raise UsageError("--admin needs --config or --upstream (the admin endpoint belongs to the proxy)")
    return None


def _admin_arg(args: argparse.Namespace) -> str | dict[str, object]:
    """``--admin`` (with ``--admin-allow-remote``) as the config's ``admin`` value."""
    if args.admin_allow_remote:
        return {"address": args.admin, "allow_remote": True}
    return str(args.admin)


#: The --upstream shortcut's config paths, as the flags the user typed.
_SHORTCUT_PATHS = (
    ("admin.address", "--admin"),
    ("listeners[0].protocol", "--protocol"),
    ("listeners[0].options.", "--option "),
    ("listeners[0].address", "--listen"),
    ("clusters[0].endpoints", "--upstream"),
    ("clusters[0].options.", "--option "),
)


def shortcut_error(exc: ConfigError) -> str:
    for prefix, flag in _SHORTCUT_PATHS:
        if exc.path.startswith(prefix):
            return f"{flag}{exc.path[len(prefix) :]}: {exc.problem}"
    return str(exc)


def summary(config: ProxyConfig) -> str:
    listeners = ", ".join(f"{c.name} ({c.protocol} on {c.address})" for c in config.listeners)
    clusters = ", ".join(f"{c.name} ({plural(len(c.endpoints), 'endpoint')}, {c.lb})" for c in config.clusters)
    return f"config OK: listeners {listeners}; clusters {clusters}"


@attrs.define
class ServicePlan:
    """What the arguments ask for, checked once: a proxy, or a local service."""

    args: argparse.Namespace
    #: The proxy's configuration (None: a local service).
    config: ProxyConfig | None
    info: ProtocolInfo | None = None
    options: dict[str, str] = attrs.Factory(dict)
    listen: tuple[str, int] = ("127.0.0.1", 0)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServicePlan:
        """Check everything the arguments name; raises :class:`UsageError`
        or :class:`~sota_dispatch.ConfigError`."""
        config = proxy_config(args)
        if config is not None:
            Proxy(config)  # checks protocols, filters and TLS files: a ConfigError is exit 2
            return cls(args, config)
        if not args.protocol:
            raise UsageError("--protocol is required (see --list-protocols)")
        info = get_protocol(args.protocol)
        plan = cls(args, None, info, parse_options(info, args.option, "service"), listen_address(args))
        plan.build()  # a bad option fails here
        return plan

    @property
    def watch(self) -> tuple[str, float] | None:
        """``--watch-config``: the file to watch and how often."""
        if self.args.watch_config is None:
            return None
        if not self.reloadable:
            raise UsageError("--watch-config needs --config")
        return self.args.config, self.args.watch_config

    @property
    def reloadable(self) -> bool:
        """Whether the proxy's config came from a file (SIGHUP, ``POST /reload`` read it again)."""
        return self.config is not None and self.args.config is not None

    def reread(self, *, admin: bool = True) -> ProxyConfig:
        """The config file as it is now, with the command line's overrides
        (a reload); raises :class:`~sota_dispatch.ConfigError`."""
        try:
            config = proxy_config(self.args)
        except UsageError as exc:  # the file no longer suits the command line (say, --node-id without xds)
            raise ConfigError("", str(exc)) from None
        assert config is not None
        return config if admin else attrs.evolve(config, admin=None)

    @property
    def addresses(self) -> dict[str, str]:
        """The configured address of each listening socket, by key
        (listener names; :data:`SERVICE_KEY` for a local service)."""
        if self.config is not None:
            return {listener.name: listener.address for listener in self.config.listeners}
        return {SERVICE_KEY: f"{self.listen[0]}:{self.listen[1]}"}

    @property
    def admin_address(self) -> str | None:
        return None if self.config is None or self.config.admin is None else self.config.admin.address

    @property
    def where(self) -> str:
        """The addresses, for an error message."""
        return ", ".join(self.addresses.values())

    @property
    def drain_timeout(self) -> float:
        if self.config is not None:
            return self.config.drain_timeout
        return drain_seconds(self.args, 10.0)

    def build(self, sockets: Mapping[str, Sequence[socket.socket]] | None = None, *, admin: bool = True) -> Any:
        """The service: a :class:`~sota_dispatch.Proxy` or a
        :class:`~sota_dispatch.Server`, on ``sockets`` (by key) if given,
        else binding its addresses; ``admin=False`` leaves the admin
        endpoint out (a worker's supervisor serves it)."""
        if self.config is not None:
            config = self.config if admin else attrs.evolve(self.config, admin=None)
            source = partial(self.reread, admin=admin) if self.reloadable else None
            return Proxy(config, sockets=sockets, source=source, source_name=self.args.config)
        assert self.info is not None
        max_connections, timeouts = limits(self.args)
        parks = getattr(self.info.factory, "speaks_first", None) is False
        if self.args.park_idle_after and not parks:
            raise UsageError(f"--park-idle-after: {self.info.name}'s clients do not speak first, so it cannot park")
        park = park_idle_after(self.args.park_idle_after, parks)
        try:
            return Server(
                self.info.factory,
                self.listen,
                protocol=self.info.name,
                options=self.options,
                drain_timeout=self.drain_timeout,
                max_connections=max_connections,
                timeouts=timeouts,
                tls=service_tls(self.args),
                sockets=None if sockets is None else sockets.get(SERVICE_KEY, ()),
                park_idle_after=park or None,
            )
        except ValueError as exc:
            raise UsageError(f"--option {exc}") from None

    def started(self, service: Any) -> Callable[[Any], None]:
        """What to log once ``service`` listens."""

        def proxy_started(addresses: dict[str, str]) -> None:
            for name, address in addresses.items():
                log.info("listening on %s (listener %s)", address, name)
            if service.admin_address is not None:
                log.info("admin endpoint on http://%s/", service.admin_address)

        def service_started(address: str) -> None:
            log.info("listening on %s (protocol %s)", address, service.protocol)

        return proxy_started if self.config is not None else service_started
