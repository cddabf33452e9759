"""What the supervisor's admin connections and restart socket see of it, declared here.

They sit below the supervisor, which starts them: they read it only through
:class:`SupervisorView`, so nothing here imports the supervisor back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..admin.view import AdminTarget
from .channel import Channel
from .sockets import ListenSocket

__all__ = ["SupervisorView", "WorkerView"]


class WorkerView(Protocol):
    """One worker process, as ``/workers`` shows it."""

    @property
    def slot(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...


class SupervisorView(AdminTarget, Protocol):
    """A supervisor of worker processes."""

    sockets: list[ListenSocket]
    epoch: int
    restarts: int
    state: str
    started_at: float
    workers: int

    def retire(self, successor: Channel | None = None) -> None: ...

    async def wait_stopped(self) -> None: ...

    async def metrics(self) -> bytes: ...

    async def gather(self) -> Sequence[WorkerView]: ...

    async def reload_everywhere(self) -> list[str]: ...
