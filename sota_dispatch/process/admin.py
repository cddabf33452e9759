"""The admin endpoint of a supervisor: every worker's state in one place.

Paths as a single process has them, answered for all workers:
``/metrics`` sums the workers' metrics (see :mod:`.merge`) and adds
``sota_workers``, ``sota_worker_restarts_total`` and ``sota_restart_epoch``;
``/stats`` renders those sums; ``/clusters`` lists each worker's view of
the clusters (health checks, breakers and outlier ejection run in each
worker on its own); ``/reload_certificates``, ``/drain``,
``/drain_listeners`` and ``/quitquitquit`` reach every worker (see
:mod:`.operations`). Two more:
``/workers`` (each worker's pid, state, start time and connection counts)
and ``/server_info`` (version, pid, uptime, state, restart epoch, config version).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import ByteStream

from ..admin.server import AdminConnection, WaitingConnections, package_version
from ..compiled import build_info
from ..protocol.context import ConnectionContext
from .view import SupervisorView

__all__ = ["SupervisorAdminConnection"]


class SupervisorAdminConnection(AdminConnection):
    """One admin request to a supervisor."""

    def __init__(
        self,
        stream: ByteStream,
        context: ConnectionContext,
        *,
        supervisor: SupervisorView,
        waiting: WaitingConnections | None = None,
    ) -> None:
        super().__init__(stream, context, proxy=supervisor, waiting=waiting)
        self.supervisor = supervisor

    def handlers(self) -> dict[str, tuple[str, Callable[[], Awaitable[None] | None]]]:
        return {
            **super().handlers(),
            "/metrics": ("GET", self._all_metrics),
            "/clusters": ("GET", self._all_clusters),
            "/reload_certificates": ("POST", self._reload_all),
            "/workers": ("GET", self._workers),
            "/server_info": ("GET", self._server_info),
        }

    async def _all_metrics(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        self._answer(200, await self.supervisor.metrics(), CONTENT_TYPE_LATEST)

    async def _all_clusters(self) -> None:
        await self.supervisor.gather()
        self._send_clusters(self.supervisor.describe_clusters())

    async def metric_families(self) -> list[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        return list(text_string_to_metric_families((await self.supervisor.metrics()).decode()))

    async def _reload_all(self) -> None:
        problems = await self.supervisor.reload_everywhere()
        if problems:
            listing = "".join(f"{problem}\n" for problem in problems)
            self._answer(500, f"not reloaded (the old certificates stay):\n{listing}")
        else:
            self._answer(200, "reloaded\n")

    async def _workers(self) -> None:
        workers = await self.supervisor.gather()
        self._json(
            {
                "workers": [worker.describe() for worker in sorted(workers, key=lambda w: w.slot)],
                "restarts": self.supervisor.restarts,
            }
        )

    def _server_info(self) -> None:
        supervisor = self.supervisor
        info: dict[str, Any] = {
            "version": package_version(),
            "build": build_info().kind,
            "compiled_modules": list(build_info().compiled),
            "pid": os.getpid(),
            "state": supervisor.state,
            "health_check": "failing" if supervisor.health_check_failed else "passing",
            "uptime_seconds": round(time.time() - supervisor.started_at, 3),
            "restart_epoch": supervisor.epoch,
            "workers": supervisor.workers,
            "config": supervisor.config_status(),
        }
        self._json(info)
