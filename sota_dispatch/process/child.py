"""One worker process as its supervisor sees it: the process, its channel, its last report."""

from __future__ import annotations

import time
from typing import Any

import anyio
import attrs
from anyio.abc import Process

from .channel import Channel, Message

__all__ = ["WorkerProcess"]


@attrs.define(eq=False)
class WorkerProcess:
    """One worker as its supervisor sees it."""

    slot: int
    epoch: int
    process: Process
    channel: Channel
    started: float = attrs.Factory(time.time)
    state: str = "starting"
    addresses: Any = None
    #: Its last report (``stats`` or ``exit``): metrics text, clusters, counts.
    last: Message = attrs.Factory(dict)
    ready: anyio.Event = attrs.Factory(anyio.Event)
    _replies: dict[int, tuple[anyio.Event, list[Message]]] = attrs.Factory(dict)
    _next_id: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ask(self, message: Message, timeout: float = 2.0) -> Message | None:
        """Send a request and wait for its reply (None: none in time, or gone)."""
        self._next_id += 1
        ident = self._next_id
        event, box = anyio.Event(), list[Message]()
        self._replies[ident] = (event, box)
        try:
            with anyio.move_on_after(timeout):
                await self.channel.send({**message, "id": ident})
                await event.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return None
        finally:
            self._replies.pop(ident, None)
        return box[0] if box else None

    def answered(self, message: Message) -> None:
        waiting = self._replies.get(message.get("id", -1))
        if waiting is not None:
            waiting[1].append(message)
            waiting[0].set()

    def describe(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "pid": self.pid,
            "epoch": self.epoch,
            "state": self.state,
            "started": self.started,
            "connections_active": self.last.get("connections_active"),
            "connections_total": self.last.get("connections_total"),
            "requests": self.last.get("requests"),
        }
