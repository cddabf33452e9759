"""A supervisor's answers to the admin's Envoy-style operations, for all its workers.

``/drain_listeners`` and ``/quitquitquit`` reach every worker (each drains
or stops its own listeners); ``/listeners`` shows the configured listeners
with the workers' connection and request counts summed;
``/healthcheck/fail`` is the supervisor's own flag (its ``/ready`` is what
a load balancer asks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cli.build import ServicePlan
from .channel import Message
from .child import WorkerProcess
from .restart import ADMIN_KEY
from .sockets import ListenSocket

__all__ = ["AdminOperations"]

#: ``/listeners`` counts, from the summed metrics: key -> metric sample name.
_COUNTS = {
    "connections_active": "sota_downstream_connections_active",
    "connections_total": "sota_downstream_connections_total",
    "requests": "sota_downstream_requests_total",
}


class AdminOperations:
    """What :class:`~.supervisor.Supervisor` adds for the admin's operations."""

    plan: ServicePlan
    live: dict[int, WorkerProcess]
    sockets: list[ListenSocket]
    health_check_failed: bool = False
    state: str
    _listeners_drained: bool = False

    @property
    def draining(self) -> bool:
        raise NotImplementedError

    def _stop_workers(self, message: Message, state: str) -> None:
        raise NotImplementedError

    async def metrics(self) -> bytes:
        raise NotImplementedError

    def quit(self) -> None:
        """Every worker stops now (drain timeout 0: requests in flight get
        their error reply), then the supervisor exits."""
        self._stop_workers({"type": "drain", "drain_timeout": 0.0}, "draining")

    async def drain_listeners(self) -> None:
        """Every worker stops accepting and drains its client connections;
        the workers and the supervisor (and its admin) stay up."""
        self._listeners_drained = True
        self.state = "draining"
        for worker in list(self.live.values()):
            await worker.ask({"type": "drain_listeners"}, timeout=10.0)
        for listening in self.sockets:  # ours too, or connects would queue in its backlog, unserved
            if listening.key != ADMIN_KEY:
                listening.sock.close()

    async def describe_listeners(self) -> list[dict[str, Any]]:
        from prometheus_client.parser import text_string_to_metric_families

        counts: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families((await self.metrics()).decode()):
            for sample in family.samples:
                for key, name in _COUNTS.items():
                    if sample.name == name and "listener" in sample.labels:
                        counts.setdefault(sample.labels["listener"], {})[key] = sample.value
        drained = self.draining
        addresses: Mapping[str, str] = self.plan.addresses
        configs = {c.name: c.protocol for c in self.plan.config.listeners} if self.plan.config is not None else {}
        return [
            {
                "name": name,
                "protocol": configs.get(name, self.plan.args.protocol),
                "address": address,
                "state": "draining" if drained else "accepting",
                "workers": len(self.live),
                **{key: int(value) for key, value in counts.get(name, {}).items()},
            }
            for name, address in addresses.items()
        ]
