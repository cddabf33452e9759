"""A proxy connection's own answers: error replies, their log lines, their order.

When the proxy answers a request itself (no route, overflow, timeout, a
stream filter's refusal), the client gets its protocol's error reply with
a reference to quote, and the log gets the detail under the same
reference. For a protocol whose client expects answers in request order
(simple_line), an answer made early waits behind the requests before it;
a request its filters made wait holds its place (a :class:`Slot`) meanwhile.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, cast

import anyio

from ..filters.api import FilterRequest
from ..io.writer import BufferedWriter
from ..protocol.codec import Failure
from ..protocol.context import ConnectionContext
from ..protocol.fifo import Fifo
from ..protocol.semantics import FrameSemantics
from .sites import ListenerSite

if TYPE_CHECKING:
    from ..protocol.dispatcher import Dispatcher
    from .exchange import Exchange

__all__ = ["Replies", "Slot"]

log = logging.getLogger(__name__)


class Slot:
    """An answer's place in a client's order: made by the proxy itself
    (``reply`` set at once), or held by a request its filters made wait."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply


class Replies:
    """The part of :class:`~.connection.ProxyConnection` that answers
    requests itself (a mixin: it works on the connection's own state)."""

    listener: ListenerSite
    context: ConnectionContext
    protocol: type[FrameSemantics] | None
    writer: BufferedWriter
    in_flight: int
    _ordered: Fifo[Exchange | Slot] | None
    _ref: str | None
    _exchanges: set[Exchange]
    _room_scope: anyio.CancelScope | None
    _filtering: dict[anyio.CancelScope, tuple[FilterRequest, Slot | None]]
    _expired: bool

    def _woken(self, released: int) -> None:
        raise NotImplementedError

    def _local_reply(
        self,
        frame: Any,
        failure: Failure,
        stream: int,
        filtered: FilterRequest | None,
        slot: Slot | None,
        public: str = "",
        detail: str = "",
    ) -> None:
        """Answer a request with the protocol's error reply for ``failure``
        (its filters hear of it first), in its place if it holds one."""
        data = self.failure_reply(frame, failure, stream, public, detail)
        if filtered is not None:
            filtered.outcome, filtered.failure = failure.name.lower(), failure
            chain = filtered.chain
            if chain is not None:
                chain.responded(filtered)
        if slot is None:
            self._reply_now(data, failure)
            return
        self._count_reply(data, failure)
        if self._ordered is not None:
            slot.reply = data
            self._write_ordered()
        else:
            self.writer.write(data)
            self.in_flight -= 1
            self._woken(1)
        self.listener.outbox.add(cast("Dispatcher", self))  # a mixin of ProxyConnection

    def failure_reply(self, frame: Any, failure: Failure, stream: int, public: str = "", detail: str = "") -> bytes:
        """The protocol's error reply to request ``stream`` for ``failure``,
        logged (rate-limited) with ``detail``, which stays in the log: the
        client gets the kind, ``public`` and a reference to quote."""
        if self._ref is None:
            # Random, not the connection id: that counter would tell clients
            # how many connections the proxy has opened.
            self._ref = secrets.token_hex(3)
        ref = f"{self._ref}.{stream}"
        ids = {"conn": self.context.connection_id, "stream": stream}
        listener = self.listener
        if failure is Failure.OVERFLOW:
            listener.overflow_log.log(failure, "request %s overflowed: %s", ref, detail or "-", extra=ids)
        else:
            listener.failure_log.log(
                failure,
                "request %s failed: %s: %s",
                ref,
                failure.value,
                detail or public or "-",
                extra=ids,
            )
        protocol = self.protocol
        assert protocol is not None
        return protocol.error_reply(frame, failure, f"{public}; ref {ref}" if public else f"ref {ref}")

    def _count_reply(self, data: bytes, failure: Failure) -> None:
        stats = self.listener.stats
        stats.local_replies[failure.name.lower()] = stats.local_replies.get(failure.name.lower(), 0) + 1
        stats.bytes_out += len(data)

    def _reply_now(self, data: bytes, failure: Failure) -> None:
        self._count_reply(data, failure)
        if self._ordered:  # answers before it are still pending: keep the order
            self._ordered.append(Slot(data))
            self.in_flight += 1  # held replies count against max_in_flight too
        else:
            self.writer.write(data)

    def _write_ordered(self) -> None:
        raise NotImplementedError

    def drain_expired(self) -> None:
        """Shutdown cut the drain short: every request still in flight gets
        a timeout reply now (in order, for an ordered protocol), instead of
        a close without an answer."""
        self._expired = True
        detail = f"the proxy shut down first (drain timeout {self.listener.drain_timeout:g}s)"
        for exchange in list(self._exchanges):
            exchange.fail(Failure.TIMEOUT, "drain timeout", public=detail)
        if self._room_scope is not None:
            self._room_scope.cancel()
        for waiting, (filtered, slot) in list(self._filtering.items()):  # held by their filters
            waiting.cancel()
            if slot is not None:  # not a oneway request
                self._local_reply(filtered.frame, Failure.TIMEOUT, filtered.stream, filtered, slot, detail)
        self._filtering.clear()
