"""The command line's arguments: the parser and the types of its values."""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import NoReturn

from ..config import parse_duration
from ..config.values import size
from ..errors import ConfigError
from ..protocol.server import DEFAULT_MAX_CONNECTIONS, DEFAULT_PARK_IDLE_AFTER

__all__ = [
    "DEFAULT_GC_THRESHOLD",
    "DEFAULT_MALLOC_TRIM_THRESHOLD",
    "DEFAULT_LISTEN",
    "OneLineParser",
    "UsageError",
    "count",
    "loop_in_use",
    "parser",
    "seconds",
    "usable_cores",
    "workers",
]

#: Where the service listens unless ``--listen`` says otherwise.
DEFAULT_LISTEN = "127.0.0.1:7070"
#: ``--gc-threshold``'s default: new objects between two collections of
#: Python's young generation (its own default is 700). Each collection walks
#: every young object still alive, and a server's are its requests in
#: flight: at 1,000 in flight Python's default spent 0.8-1.4k instructions
#: per proxied request on it, and the ZMTP broker's CPU per message fell by
#: a quarter with this one (bench/, same run).
DEFAULT_GC_THRESHOLD = 10_000
#: ``--malloc-trim-threshold``'s default: freed memory the C allocator keeps
#: for reuse (see :mod:`sota_dispatch.process.malloc`). glibc's own starts
#: at 128 KiB: every large read or send buffer freed was given back to the
#: system and faulted in again for the next one.
DEFAULT_MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024


class UsageError(Exception):
    """An operator error: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose every error is one ``error:`` line on
    stderr and exit code 2, like the rest of the command line's errors (the
    usage block argparse prints hides the line that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


_DESCRIPTION = """\
Serve a protocol with sota-dispatch, in one of two modes:

  local service   --protocol NAME answers requests itself (the bundled
                  protocols echo); --listen picks the address.
  proxy           --upstream HOST:PORT (repeatable, round robin) forwards
                  the protocol to those endpoints; --config FILE runs a whole
                  proxy configuration (listeners, routes, clusters, admin).

SIGINT or SIGTERM drains and exits 0 (a second one stops at once); SIGHUP
reads the config file and the TLS files again."""

_EXAMPLES = """\
examples:
  %(prog)s --protocol simple_line                      echo on 127.0.0.1:7070
  %(prog)s --protocol zmtp --listen tcp://*:5555       a ZeroMQ ROUTER echo
  %(prog)s --protocol bolt --listen 127.0.0.1:0        a free port, logged
  %(prog)s --protocol dubbo --upstream 10.0.0.7:20880 --admin 127.0.0.1:9901
  %(prog)s -c examples/proxy/bolt.yaml --workers auto
  %(prog)s -c proxy.yaml --check-config

The asyncio backend runs on uvloop when it is installed (the default
install on Linux and macOS): {loop}."""


def loop_in_use(backend: str, no_uvloop: bool = False) -> str:
    """Which event loop ``--backend`` (and ``--no-uvloop``) runs on here:
    ``asyncio (uvloop)``, ``asyncio`` or ``trio``."""
    if backend == "asyncio" and not no_uvloop and importlib.util.find_spec("uvloop") is not None:
        return "asyncio (uvloop)"
    return backend


def parser(prog: str = "python -m sota_dispatch.serve") -> argparse.ArgumentParser:
    uvloop = importlib.util.find_spec("uvloop") is not None
    loop = "uvloop is installed here" if uvloop else "uvloop is not installed here, so asyncio's own loop runs"
    p = OneLineParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EXAMPLES.format(loop=loop),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="store_true", help="print the version (and the loop in use) and exit")
    p.add_argument("--protocol", metavar="NAME", help="protocol to serve (see --list-protocols)")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port; tcp://HOST:PORT and "
        "tcp://*:PORT as ZeroMQ writes them)",
    )
    p.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="proxy to this endpoint instead of serving locally (repeatable: round robin)",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="run the proxy configuration in this YAML file")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument(
        "--admin", metavar="HOST:PORT", help="serve the admin endpoint (/metrics, /clusters, ...) here (proxy only)"
    )
    p.add_argument(
        "--admin-allow-remote",
        action="store_true",
        help="let the admin endpoint listen beyond loopback (a container's 0.0.0.0): anyone who reaches it can "
        "drain the proxy and read its config",
    )
    p.add_argument(
        "--node-id", metavar="ID", help="the node id this proxy gives its xDS control plane (the config's xds.node_id)"
    )
    p.add_argument(
        "--node-cluster", metavar="NAME", help="the node cluster it gives its xDS control plane (xds.node_cluster)"
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
    p.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help=f"async backend (default asyncio, which runs on {'uvloop' if uvloop else 'its own loop'} here)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="run asyncio's own loop even if uvloop is installed")
    p.add_argument(
        "--drain-timeout",
        type=seconds,
        metavar="SECONDS",
        help="drain time on shutdown; requests still in flight then get a timeout reply (default: the "
        "config's drain_timeout, else the longest route timeout + 1 s; 10 for a local service)",
    )
    p.add_argument(
        "--max-connections",
        type=count,
        metavar="N",
        help=f"connections served at once; more are closed when accepted (default {DEFAULT_MAX_CONNECTIONS:,}; "
        "0: no limit; with --config, set the listener's limits instead)",
    )
    p.add_argument(
        "--frame-timeout",
        type=seconds,
        metavar="SECONDS",
        help="a client must send its first bytes, and then each request, within this (default 30; 0: no limit)",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        metavar="SECONDS",
        help="close a connection idle between requests this long (default 3600; 0: no limit)",
    )
    p.add_argument(
        "--park-idle-after",
        type=seconds,
        metavar="SECONDS",
        help="park a connection idle this long: its task and buffers are freed until it speaks again "
        f"(default {DEFAULT_PARK_IDLE_AFTER:g}; 0: never; protocols whose clients speak first, not zmtp)",
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
        "--workers",
        type=workers,
        default=None,
        metavar="N",
        help="run N worker processes sharing the listening ports under one supervisor (auto: one per usable "
        "core; default 1, in this process)",
    )
    p.add_argument(
        "--restart-socket",
        metavar="PATH",
        help="hot restart: take the listening sockets from the process serving this Unix socket (if any), then "
        "serve it for the next one; run the same command again to upgrade without refusing a connection",
    )
    p.add_argument(
        "--restart-drain-time",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="after a hot restart, how long the old process keeps serving the connections it has before "
        "draining them (default 60)",
    )
    p.add_argument(
        "--no-handoff",
        action="store_true",
        help="on a hot restart, do not move the old process's open connections to the new one (they are "
        "served by the old one until --restart-drain-time, then drained)",
    )
    p.add_argument(
        "--watch-config",
        type=seconds,
        nargs="?",
        const=1.0,
        metavar="SECONDS",
        help="reload the --config file when it changes (checked every SECONDS, default 1), as SIGHUP does",
    )
    p.add_argument("--worker-control", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    p.add_argument(
        "--gc-threshold",
        type=positive,
        default=DEFAULT_GC_THRESHOLD,
        metavar="N",
        help="collect reference cycles after N new objects, Python's young-generation threshold (default "
        f"{DEFAULT_GC_THRESHOLD:,}; Python's own is 700, which makes a busy server walk its requests in flight "
        "over and over)",
    )
    p.add_argument(
        "--malloc-trim-threshold",
        type=byte_size,
        default=DEFAULT_MALLOC_TRIM_THRESHOLD,
        metavar="SIZE",
        help="freed memory the C allocator (glibc) keeps for reuse, e.g. 64MiB; 0: the allocator's own adaptive "
        "setting (default 32MiB; glibc's starts at 128KiB, so every large read or send buffer was given back "
        "and faulted in again)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level (default info; 'listening on' is logged at info)",
    )
    p.add_argument(
        "--log-format", default="text", choices=("text", "json"), help="text lines, or one JSON object per line"
    )
    return p


def count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def byte_size(text: str) -> int:
    try:
        return size(text, "size", minimum=0)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected a size in bytes, e.g. 64MiB, got {text!r}") from None


def seconds(text: str) -> float:
    value = parse_duration(text)
    if value is None:
        raise argparse.ArgumentTypeError(f'expected seconds >= 0 (or e.g. "250ms"), got {text!r}')
    return value


def workers(text: str) -> int:
    """``--workers``: a count >= 1, or ``auto`` (the cores this process may use)."""
    if text == "auto":
        return usable_cores()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or auto, got {text!r}")
    return int(text)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)
