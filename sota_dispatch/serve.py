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

``--workers N`` runs N worker processes under a supervisor, and
``--restart-socket PATH`` makes the same command a hot restart of the
process already serving PATH: to upgrade or reconfigure a running proxy,
run the command it was started with again (with the new file or version);
the new process takes the listening sockets and the client connections,
and the old one exits (see docs/operations.rst and
:mod:`sota_dispatch.process`).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from collections.abc import Sequence
from functools import partial

import anyio

from .cli.args import DEFAULT_LISTEN, UsageError, loop_in_use, parser
from .cli.build import ServicePlan, list_filters, list_protocols, shortcut_error, summary
from .cli.running import run
from .errors import ConfigError, SotaError
from .logs import configure_logging
from .process.malloc import set_malloc_trim_threshold

__all__ = ["DEFAULT_LISTEN", "main"]


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (a None in ``sys.modules``, an
    import blocked on purpose, counts as not installed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_line(backend: str = "asyncio", no_uvloop: bool = False) -> str:
    """``--version``: this package's version, Python's, and the loop
    ``--backend`` would run on."""
    from .admin.server import package_version
    from .compiled import build_info

    python = f"{sys.implementation.name} {sys.version.split()[0]}"
    build = build_info().describe()
    return f"sota-dispatch {package_version()} ({python}; {build}; loop: {loop_in_use(backend, no_uvloop)})"


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sota_dispatch.serve") -> int:
    """Entry point; returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(arguments)
    if args.version:
        print(version_line(args.backend, args.no_uvloop))
        return 0
    configure_logging(args.log_level, args.log_format)
    try:
        if args.backend == "trio" and not _installed("trio"):
            raise UsageError("--backend trio: trio is not installed (pip install 'sota-dispatch[trio]')")
        if args.list_protocols:
            return list_protocols()
        if args.list_filters:
            return list_filters()
        backend_options: dict[str, object] = {}
        if args.backend == "asyncio" and not args.no_uvloop and importlib.util.find_spec("uvloop") is not None:
            backend_options["use_uvloop"] = True
        plan = ServicePlan.from_args(args)
        if args.check_config:
            assert plan.config is not None
            print(summary(plan.config))
            return 0
        # A process-wide setting, so the command's (for a process that
        # serves), not the library's: an application embedding a Server
        # tunes its own process.
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
        if args.malloc_trim_threshold:
            set_malloc_trim_threshold(args.malloc_trim_threshold)
        if args.worker_control is not None:
            from .process.worker import run_worker

            return anyio.run(
                run_worker, plan, args.worker_control, backend=args.backend, backend_options=backend_options
            )
        if args.workers is not None or args.restart_socket is not None:
            from .process.supervisor import Supervisor

            supervisor = Supervisor(
                plan,
                arguments,
                workers=args.workers or 1,
                restart_socket=args.restart_socket,
                restart_drain_time=args.restart_drain_time,
                handoff=not args.no_handoff,
            )
            return anyio.run(
                partial(run, watch=plan.watch), supervisor, supervisor.started, plan.where, backend=args.backend
            )
        service = plan.build()
        return anyio.run(
            partial(run, watch=plan.watch),
            service,
            plan.started(service),
            plan.where,
            backend=args.backend,
            backend_options=backend_options,
        )
    except (UsageError, SotaError) as exc:
        if isinstance(exc, ConfigError) and args.upstream:
            exc = UsageError(shortcut_error(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
