"""Running a service in this process: signals, draining, exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
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


async def run(
    service: Service, started: Callable[[Any], None], where: str, *, watch: tuple[str, float] | None = None
) -> int:
    """Serve until a signal drains it. ``watch``: ``(config file, seconds)``,
    reload the file when it changes (``--watch-config``)."""
    try:
        return await _run_group(service, started, where, watch)
    except BaseExceptionGroup as group:
        mine, rest = group.split((UsageError, SotaError))
        if mine is not None and rest is None:
            first: BaseException = mine
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        raise


async def _run_group(
    service: Service, started: Callable[[Any], None], where: str, watch: tuple[str, float] | None
) -> int:
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
            tg.start_soon(_watch_signals, service, received, tg)
            if watch is not None and getattr(service, "reloadable", False):
                tg.start_soon(_watch_file, service, *watch)
    return 0


async def _reload(server: Service) -> None:
    """SIGHUP: the config file (if the service has one) and the TLS files
    again. Problems are logged where they are found; what was in force stays."""
    if getattr(server, "reloadable", False):
        log.info("SIGHUP: reloading the configuration and certificates")
        with contextlib.suppress(ConfigError):  # logged by the reload
            await server.reload_config()  # type: ignore[attr-defined]
    else:
        log.info("SIGHUP: reloading certificates")
    server.reload_certificates()


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


async def _watch_file(server: Service, path: str, interval: float) -> None:
    """Reload when ``path`` changes (inode, size or modification time), once
    it has stayed the same for one interval more: an editor or a config
    manager writing it in steps is read when done. A file that is missing
    meanwhile is waited for, not reloaded."""
    applied = seen = _stamp(path)
    while True:
        await anyio.sleep(interval)
        current = _stamp(path)
        if current != seen:  # changing: look again next time
            seen = current
            continue
        if current is not None and current != applied:
            applied = current
            log.info("%s changed: reloading the configuration", path)
            with contextlib.suppress(ConfigError):  # logged by the reload
                await server.reload_config()  # type: ignore[attr-defined]


async def _watch_signals(server: Service, received: AsyncIterator[int], tg: anyio.abc.TaskGroup) -> None:
    first = True
    scope = tg.cancel_scope
    async for signum in received:
        if signum == signal.SIGHUP:
            tg.start_soon(_reload, server)
        elif first:
            log.info("%s: draining (up to %.1fs)", signal.Signals(signum).name, server.drain_timeout)
            server.shutdown()
            first = False
        else:
            log.info("second signal: stopping now")
            scope.cancel()
            return
