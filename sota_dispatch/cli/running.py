"""Running a service in this process: signals, draining, exit codes."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ..errors import ConfigError, SotaError
from .args import UsageError

__all__ = ["Service", "run"]

log = logging.getLogger("sota_dispatch.serve")


class Service(Protocol):
    """What the runner needs: a Server or a Proxy."""

    @property
    def drain_timeout(self) -> float: ...

    async def serve(self, *, task_status: TaskStatus[Any]) -> None: ...

    def shutdown(self) -> None: ...

    def reload_certificates(self) -> list[ConfigError]: ...


async def run(service: Service, started: Callable[[Any], None], where: str) -> int:
    try:
        return await _run_group(service, started, where)
    except BaseExceptionGroup as group:
        mine, rest = group.split((UsageError, SotaError))
        if mine is not None and rest is None:
            first: BaseException = mine
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        raise


async def _run_group(service: Service, started: Callable[[Any], None], where: str) -> int:
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
                raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            started(address)
            tg.start_soon(_watch_signals, service, received, tg.cancel_scope)
    return 0


async def _watch_signals(server: Service, received: AsyncIterator[int], scope: anyio.CancelScope) -> None:
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
