"""``python -m sota_dispatch.serve``: run a protocol's local service.

Every failure an operator can cause (unknown protocol, bad address, port in
use, bad option) is one ``error:`` line on stderr and exit code 2, never a
traceback. SIGINT or SIGTERM stops accepting, drains in-flight requests
within ``--drain-timeout`` and exits 0; a second signal stops at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import anyio
from anyio.abc import TaskStatus

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from .address import parse_address
from .errors import SotaError
from .registry import ProtocolInfo, available_protocols, get_protocol
from .server import Server

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
        default=DEFAULT_LISTEN,
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port)",
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
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend")
    p.add_argument("--no-uvloop", action="store_true", help="do not use uvloop even if installed")
    p.add_argument(
        "--drain-timeout", type=_seconds, default=10.0, metavar="SECONDS", help="drain time on shutdown (default 10)"
    )
    p.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="log level (default info; 'listening on' is logged at info)",
    )
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _list_protocols() -> int:
    for name in available_protocols():
        try:
            info = get_protocol(name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            print(f"{name}\t(failed to load: {exc})")
            continue
        print(f"{name}\t{info.description}\t[{info.source}]")
        for option, text in info.options.items():
            print(f"    -o {option}=...\t{text}")
    return 0


def _parse_options(info: ProtocolInfo, items: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--option expects NAME=VALUE, got {item!r}")
        if name not in info.options:
            known = ", ".join(info.options) or "none"
            raise _UsageError(f"protocol {info.name!r} has no option {name!r} (options: {known})")
        options[name] = value
    return options


async def _run(server: Server) -> int:
    try:
        return await _run_group(server)
    except BaseExceptionGroup as group:
        usage, rest = group.split(_UsageError)
        if usage is not None and rest is None:
            raise usage.exceptions[0] from None
        raise


async def _run_group(server: Server) -> int:
    # Handlers go in before the "listening on" line: a signal sent as soon
    # as that line appears must drain, not kill.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with anyio.create_task_group() as tg:

            async def serve_then_stop(*, task_status: TaskStatus[str]) -> None:
                await server.serve(task_status=task_status)
                tg.cancel_scope.cancel()  # drained: stop the signal watcher too

            try:
                address = await tg.start(serve_then_stop)
            except OSError as exc:
                raise _UsageError(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from None
            log.info("listening on %s (protocol %s)", address, server.protocol)
            tg.start_soon(_watch_signals, server, received, tg.cancel_scope)
    return 0


async def _watch_signals(server: Server, received: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    first = True
    async for signum in received:
        if first:
            log.info("%s: draining (up to %.1fs)", signal.Signals(signum).name, server.drain_timeout)
            server.shutdown()
            first = False
        else:
            log.info("second signal: stopping now")
            scope.cancel()
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.list_protocols:
            return _list_protocols()
        if not args.protocol:
            raise _UsageError("--protocol is required (see --list-protocols)")
        info = get_protocol(args.protocol)
        try:
            listen = parse_address(args.listen)
        except ValueError as exc:
            raise _UsageError(f"--listen: {exc}") from None
        options = _parse_options(info, args.option)
        try:
            server = Server(info.factory, listen, protocol=info.name, options=options, drain_timeout=args.drain_timeout)
        except ValueError as exc:
            raise _UsageError(f"--option: {exc}") from None
        backend_options: dict[str, object] = {}
        if args.backend == "asyncio" and not args.no_uvloop and importlib.util.find_spec("uvloop") is not None:
            backend_options["use_uvloop"] = True
        return anyio.run(_run, server, backend=args.backend, backend_options=backend_options)
    except (_UsageError, SotaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
