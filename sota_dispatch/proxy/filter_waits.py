"""A request its stream filters made wait, and how it goes on after.

A filter chain that cannot decide at once (it awaits a check, say) gets a
task of its own for that request alone; the request holds its place
meanwhile (a :class:`~.replies.Slot` in an ordered client's order, a place
under ``max_in_flight``), and the connection reads and serves on. Once the
chain decides, the request is answered or started as any other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from ..cluster.cluster import Cluster
from ..filters.api import FilterRequest, LocalReply
from ..protocol.semantics import BoundSemantics
from .replies import Replies, Slot

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import TypeVarTuple, Unpack
    else:
        from typing_extensions import TypeVarTuple, Unpack

    PosArgs = TypeVarTuple("PosArgs")

__all__ = ["FilterWaits"]


class FilterWaits(Replies):
    """The part of :class:`~.connection.ProxyConnection` that runs a held
    request's filters to their end (a mixin, as :class:`~.replies.Replies`)."""

    if TYPE_CHECKING:  # the connection's (a stub here would hide the Dispatcher's)

        def start_soon(
            self,
            func: Callable[[Unpack[PosArgs]], Coroutine[Any, Any, Any]],
            *args: Unpack[PosArgs],
            name: object = None,
        ) -> None: ...

        #: ProxyConnection._request (see there).
        _request: Callable[..., tuple[Cluster, float, FilterRequest | None] | None]

    def _wait_for_filters(
        self,
        semantics: BoundSemantics,
        filtered: FilterRequest,
        verdict: Coroutine[Any, Any, LocalReply | None],
        oneway: bool,
    ) -> None:
        """The request's filters made it wait: it holds its place (its
        answer's position in an ordered client's order, a place under
        ``max_in_flight``) while a task of its own finishes the chain, then
        goes on as any request does. Only this request waits."""
        slot = None
        if not oneway:
            slot = Slot(None)
            self.in_flight += 1
            if self._ordered is not None:
                self._ordered.append(slot)
        waiting = anyio.CancelScope()  # drain_expired() answers it and ends the wait, even before it starts
        self._filtering[waiting] = (filtered, slot)
        self.start_soon(self._after_filters, semantics, filtered, verdict, oneway, slot, waiting)

    async def _after_filters(
        self,
        semantics: BoundSemantics,
        filtered: FilterRequest,
        verdict: Coroutine[Any, Any, LocalReply | None],
        oneway: bool,
        slot: Slot | None,
        waiting: anyio.CancelScope,
    ) -> None:
        reply = None
        with waiting:
            try:
                reply = await verdict
            finally:
                self._filtering.pop(waiting, None)
        if waiting.cancel_called:
            verdict.close()  # never started, if the drain came first
            return
        outbox, clock, frame = self.listener.outbox, self.listener.clock, filtered.frame
        outbox.begin()  # what this request writes leaves in one send
        try:
            if reply is not None:
                if not oneway:
                    self._local_reply(frame, reply.failure, filtered.stream, filtered, slot, reply.public, reply.detail)
                return
            full = self._request(semantics, frame, clock.now(), "filtered", None, filtered, slot)
            if full is not None:  # its cluster is full: this request waits for room, not the connection
                cluster, deadline, _ = full
                outbox.end()
                try:
                    room = await cluster.wait_for_room(deadline)
                finally:
                    outbox.begin()
                admission = "admitted" if room else "refused"
                self._request(semantics, frame, clock.now(), admission, deadline, filtered, slot)
        finally:
            outbox.end()
