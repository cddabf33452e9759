"""``python -m sota_dispatch.serve``: run a protocol's local service, or the proxy.

Without ``--upstream`` or ``--config`` it serves the protocol's local
service (an echo, say); ``--upstream HOST:PORT`` (repeatable) proxies the
protocol to those endpoints, round robin; ``--config FILE`` runs a whole
proxy configuration (several listeners and protocols), which
``--check-config`` only validates.

Every failure an operator can cause (unknown protocol, bad address, port in
use, bad option, bad config) is one ``error:`` line on stderr and exit code
2, never a traceback. SIGINT or SIGTERM stops accepting, drains in-flight
requests within the drain timeout and exits 0; a second signal stops at once.
SIGHUP reads the TLS certificate files again (``--tls-cert``, or every
listener's and cluster's ``tls``): new connections use them, open ones
keep theirs.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import anyio
import attrs
from anyio.abc import TaskStatus

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from .config import (
    LimitsConfig,
    ProxyConfig,
    admin_config,
    config_from_upstreams,
    load_config,
    parse_duration,
)
from .errors import ConfigError, SotaError
from .filters.registry import available_filters, get_filter
from .io.address import parse_address
from .io.reader import ReadTimeouts
from .io.tls import ServerTLS
from .logs import configure_logging
from .protocol.options import Option, OptionPlace
from .protocol.registry import ProtocolInfo, available_protocols, get_protocol
from .protocol.server import DEFAULT_MAX_CONNECTIONS, Server
from .proxy.proxy import Proxy

__all__ = ["DEFAULT_LISTEN", "main"]

#: Where the service listens unless ``--listen`` says otherwise.
DEFAULT_LISTEN = "127.0.0.1:7070"

log = logging.getLogger("sota_dispatch.serve")


class _UsageError(Exception):
    """An operator error: reported as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sota_dispatch.serve",
        description="Serve a protocol's local service with sota-dispatch.",
    )
    p.add_argument("--protocol", metavar="NAME", help="protocol to serve (see --list-protocols)")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port)",
    )
    p.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="proxy to this endpoint instead of serving locally (repeatable: round robin)",
    )
    p.add_argument("--config", metavar="FILE", help="run the proxy configuration in this YAML file")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument(
        "--admin", metavar="HOST:PORT", help="serve the admin endpoint (/metrics, /clusters, ...) here (proxy only)"
    )
    p.add_argument(
        "-o",
        "--option",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="protocol option (repeatable; --list-protocols shows each protocol's options)",
    )
    p.add_argument("--list-protocols", action="store_true", help="list installed protocols and exit")
    p.add_argument(
        "--list-filters", action="store_true", help="list installed stream filters and their options, and exit"
    )
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend")
    p.add_argument("--no-uvloop", action="store_true", help="do not use uvloop even if installed")
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="drain time on shutdown; requests still in flight then get a timeout reply (default: the "
        "config's drain_timeout, else the longest route timeout + 1 s; 10 for a local service)",
    )
    p.add_argument(
        "--max-connections",
        type=_count,
        metavar="N",
        help=f"connections served at once; more are closed when accepted (default {DEFAULT_MAX_CONNECTIONS:,}; "
        "0: no limit; with --config, set the listener's limits instead)",
    )
    p.add_argument(
        "--frame-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="a client must send its first bytes, and then each request, within this (default 30; 0: no limit)",
    )
    p.add_argument(
        "--idle-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="close a connection idle between requests this long (default 3600; 0: no limit)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve over TLS with this certificate chain (PEM; local service)")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    p.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates signed by a CA in this bundle (mutual TLS; with --tls-cert)",
    )
    p.add_argument(
        "--tls-allow-name",
        metavar="NAME",
        action="append",
        default=[],
        help="accept only client certificates naming this (SAN or common name; repeatable; with --tls-client-ca)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="log level (default info; 'listening on' is logged at info)",
    )
    p.add_argument(
        "--log-format", default="text", choices=("text", "json"), help="text lines, or one JSON object per line"
    )
    return p


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _limits(args: argparse.Namespace) -> tuple[int | None, ReadTimeouts]:
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


def _service_tls(args: argparse.Namespace) -> ServerTLS | None:
    """The local service's TLS from ``--tls-*`` (None: plaintext)."""
    if args.tls_cert is None and args.tls_key is None and args.tls_client_ca is None and not args.tls_allow_name:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise _UsageError("--tls-cert and --tls-key go together")
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
        raise _UsageError(f"{flag}: {exc.problem}") from None


def _seconds(text: str) -> float:
    value = parse_duration(text)
    if value is None:
        raise argparse.ArgumentTypeError(f'expected seconds >= 0 (or e.g. "250ms"), got {text!r}')
    return value


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


def _list_filters() -> int:
    return _list_plugins(available_filters(), get_filter, lambda option, spec: f"    {option}: ...\t{spec.help}")


def _list_protocols() -> int:
    def line(option: str, spec: Option) -> str:
        return f"    -o {option}=...\t{spec.help}\t({', '.join(sorted(spec.places))})"

    return _list_plugins(available_protocols(), get_protocol, line)


def _parse_options(info: ProtocolInfo, items: Sequence[str], place: OptionPlace) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--option expects NAME=VALUE, got {item!r}")
        known = info.options.at(place)
        if name not in known:
            names = ", ".join(known) or "none"
            where = "a local service" if place == "service" else "a proxy listener"
            raise _UsageError(f"protocol {info.name!r} has no option {name!r} for {where} (options: {names})")
        options[name] = value
    return options


class _Service(Protocol):
    """What the runner needs: a Server or a Proxy."""

    @property
    def drain_timeout(self) -> float: ...

    async def serve(self, *, task_status: TaskStatus[Any]) -> None: ...

    def shutdown(self) -> None: ...

    def reload_certificates(self) -> list[ConfigError]: ...


async def _run(service: _Service, started: Callable[[Any], None], where: str) -> int:
    try:
        return await _run_group(service, started, where)
    except BaseExceptionGroup as group:
        mine, rest = group.split((_UsageError, SotaError))
        if mine is not None and rest is None:
            first: BaseException = mine
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        raise


async def _run_group(service: _Service, started: Callable[[Any], None], where: str) -> int:
    # Handlers go in before the "listening on" line: a signal sent as soon
    # as that line appears must drain, not kill.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as received:
        async with anyio.create_task_group() as tg:

            async def serve_then_stop(*, task_status: TaskStatus[Any]) -> None:
                await service.serve(task_status=task_status)
                tg.cancel_scope.cancel()  # drained: stop the signal watcher too

            try:
                address = await tg.start(serve_then_stop)
            except OSError as exc:
                raise _UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            started(address)
            tg.start_soon(_watch_signals, service, received, tg.cancel_scope)
    return 0


async def _watch_signals(server: _Service, received: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    first = True
    async for signum in received:
        if signum == signal.SIGHUP:
            # Certificates rotate without a restart; problems are logged
            # where they are found and the old certificates stay.
            log.info("SIGHUP: reloading certificates")
            server.reload_certificates()
        elif first:
            log.info("%s: draining (up to %.1fs)", signal.Signals(signum).name, server.drain_timeout)
            server.shutdown()
            first = False
        else:
            log.info("second signal: stopping now")
            scope.cancel()
            return


def _listen(args: argparse.Namespace) -> tuple[str, int]:
    try:
        return parse_address(args.listen or DEFAULT_LISTEN)
    except ValueError as exc:
        raise _UsageError(f"--listen: {exc}") from None


def _drain_timeout(args: argparse.Namespace, default: float) -> float:
    return default if args.drain_timeout is None else float(args.drain_timeout)


def _proxy_config(args: argparse.Namespace) -> ProxyConfig | None:
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
            raise _UsageError(f"--config holds the whole configuration; drop {', '.join(clash)}")
        guards = [
            flag
            for flag, given in (
                ("--max-connections", args.max_connections),
                ("--frame-timeout", args.frame_timeout),
                ("--idle-timeout", args.idle_timeout),
            )
            if given is not None
        ]
        if guards:
            raise _UsageError(f"{', '.join(guards)}: set the listeners' limits in the config file instead")
        config = load_config(args.config)
        if args.drain_timeout is not None:
            config = attrs.evolve(config, drain_timeout=_drain_timeout(args, config.drain_timeout))
        if args.admin is not None:
            config = attrs.evolve(config, admin=admin_config(args.admin, "--admin"))
        return config
    if args.upstream:
        if not args.protocol:
            raise _UsageError("--upstream needs --protocol (see --list-protocols, or auto)")
        if args.protocol == "auto":
            if args.option:
                raise _UsageError("--option needs a named protocol, not auto")
            options: dict[str, str] = {}
        else:
            options = _parse_options(get_protocol(args.protocol), args.option, "listener")
        max_connections, timeouts = _limits(args)
        return config_from_upstreams(
            args.protocol,
            args.listen or DEFAULT_LISTEN,
            args.upstream,
            options=options,
            drain_timeout=args.drain_timeout,
            admin=args.admin,
            limits=LimitsConfig(
                max_connections=max_connections, frame_timeout=timeouts.frame, idle_timeout=timeouts.idle
            ),
        )
    if args.check_config:
        raise _UsageError("--check-config needs --config or --upstream")
    if args.admin is not None:
        raise _UsageError("--admin needs --config or --upstream (the admin endpoint belongs to the proxy)")
    return None


#: The --upstream shortcut's config paths, as the flags the user typed.
_SHORTCUT_PATHS = (
    ("admin.address", "--admin"),
    ("listeners[0].protocol", "--protocol"),
    ("listeners[0].options.", "--option "),
    ("listeners[0].address", "--listen"),
    ("clusters[0].endpoints", "--upstream"),
    ("clusters[0].options.", "--option "),
)


def _shortcut_error(exc: ConfigError) -> str:
    for prefix, flag in _SHORTCUT_PATHS:
        if exc.path.startswith(prefix):
            return f"{flag}{exc.path[len(prefix) :]}: {exc.problem}"
    return str(exc)


def _summary(config: ProxyConfig) -> str:
    listeners = ", ".join(f"{c.name} ({c.protocol} on {c.address})" for c in config.listeners)
    clusters = ", ".join(f"{c.name} ({len(c.endpoints)} endpoints, {c.lb})" for c in config.clusters)
    return f"config OK: listeners {listeners}; clusters {clusters}"


def _proxy_started(addresses: dict[str, str], proxy: Proxy) -> None:
    for name, address in addresses.items():
        log.info("listening on %s (listener %s)", address, name)
    if proxy.admin_address is not None:
        log.info("admin endpoint on http://%s/", proxy.admin_address)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.list_protocols:
            return _list_protocols()
        if args.list_filters:
            return _list_filters()
        backend_options: dict[str, object] = {}
        if args.backend == "asyncio" and not args.no_uvloop and importlib.util.find_spec("uvloop") is not None:
            backend_options["use_uvloop"] = True
        config = _proxy_config(args)
        if config is not None:
            proxy = Proxy(config)  # checks the protocols: a ConfigError is exit 2
            if args.check_config:
                print(_summary(config))
                return 0
            where = ", ".join(listener.address for listener in config.listeners)
            return anyio.run(
                _run,
                proxy,
                lambda a: _proxy_started(a, proxy),
                where,
                backend=args.backend,
                backend_options=backend_options,
            )
        if not args.protocol:
            raise _UsageError("--protocol is required (see --list-protocols)")
        info = get_protocol(args.protocol)
        listen = _listen(args)
        options = _parse_options(info, args.option, "service")
        max_connections, timeouts = _limits(args)
        tls = _service_tls(args)
        try:
            server = Server(
                info.factory,
                listen,
                protocol=info.name,
                options=options,
                drain_timeout=_drain_timeout(args, 10.0),
                max_connections=max_connections,
                timeouts=timeouts,
                tls=tls,
            )
        except ValueError as exc:
            raise _UsageError(f"--option {exc}") from None

        def started(address: str) -> None:
            log.info("listening on %s (protocol %s)", address, server.protocol)

        where = f"{server.host}:{server.port}"
        return anyio.run(_run, server, started, where, backend=args.backend, backend_options=backend_options)
    except (_UsageError, SotaError) as exc:
        if isinstance(exc, ConfigError) and args.upstream:
            exc = _UsageError(_shortcut_error(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
