"""A listener's stream filters, run in order on each request.

:meth:`FilterChain.run` goes through the filters synchronously and returns
as soon as one answers or wants to wait: no task and no await for a chain
of synchronous filters. A filter that returns an awaitable turns the rest
of the chain into a coroutine, which the proxy runs in a task for that one
request. Whatever a filter does wrong fails only its own request: an
exception becomes a :attr:`~sota_dispatch.Failure.INTERNAL` reply (a
:class:`~sota_dispatch.ProtocolError` while reading the request's
attributes, a codec error reply) and a rate-limited log line.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from ..errors import ProtocolError
from ..logs import RateLimitedLog
from ..protocol.codec import Failure
from .api import FilterRequest, LocalReply, StreamFilter

__all__ = ["FilterChain", "RouteFilters"]

log = logging.getLogger(__name__)

#: The filters a request's route overrides (``per_filter_config``), by name;
#: the chain asks only when some route of its listener overrides one.
RouteFilters = Callable[[FilterRequest], Mapping[str, StreamFilter]]

#: What :meth:`FilterChain.run` returns: go on (None), answer
#: (:class:`LocalReply`), or a coroutine that finishes the chain.
Verdict = LocalReply | None | Coroutine[Any, Any, LocalReply | None]


class FilterChain:
    """The ordered filters of one listener: ``(name, instance)`` pairs, and
    the names some route overrides (``overridden``)."""

    __slots__ = ("_errors", "filters", "overridden")

    def __init__(self, filters: Sequence[tuple[str, StreamFilter]], overridden: frozenset[str] = frozenset()) -> None:
        self.filters = tuple(filters)
        self.overridden = overridden
        self._errors = RateLimitedLog(log, logging.ERROR)

    def run(self, request: FilterRequest, route_filters: RouteFilters) -> Verdict:
        """Run the chain on ``request``: None (route it), a
        :class:`LocalReply`, or a coroutine to await for one of those."""
        request.chain = self
        return self._run_from(request, 0, request._ran, route_filters)

    def _run_from(
        self, request: FilterRequest, index: int, ran: list[StreamFilter], route_filters: RouteFilters
    ) -> Verdict:
        filters = self.filters
        while index < len(filters):
            name, instance = filters[index]
            index += 1
            if name in self.overridden:
                instance = route_filters(request).get(name, instance)
            if instance.hears_responses:
                ran.append(instance)  # told of the answer later
            try:
                result = instance.on_request(request)
            except Exception as exc:  # noqa: BLE001  (a filter's bug fails its request, logged in _failed)
                return self._failed(name, exc)
            if result is None:
                continue
            if type(result) is LocalReply:
                return result
            if not inspect.isawaitable(result):
                return self._failed(
                    name, TypeError(f"on_request returned {result!r}, not None, a LocalReply or an awaitable")
                )
            return self._wait(request, name, result, index, ran, route_filters)
        return None

    async def _wait(
        self,
        request: FilterRequest,
        name: str,
        waiting: Awaitable[LocalReply | None],
        index: int,
        ran: list[StreamFilter],
        route_filters: RouteFilters,
    ) -> LocalReply | None:
        while True:
            try:
                result = await waiting
            except Exception as exc:  # noqa: BLE001  (as in _run_from)
                return self._failed(name, exc)
            if result is not None:
                if type(result) is LocalReply:
                    return result
                return self._failed(
                    name, TypeError(f"on_request's awaitable gave {result!r}, not None or a LocalReply")
                )
            rest = self._run_from(request, index, ran, route_filters)
            if rest is None or isinstance(rest, LocalReply):
                return rest
            return await rest

    def _failed(self, name: str, exc: Exception) -> LocalReply:
        if isinstance(exc, ProtocolError):  # the request's own attributes could not be read
            return LocalReply(Failure.CODEC_ERROR, detail=str(exc))
        self._errors.log(name, "stream filter %s raised on a request; it gets an error reply", name, exc_info=exc)
        return LocalReply(Failure.INTERNAL, detail=f"stream filter {name} raised {exc!r}")

    def responded(self, request: FilterRequest) -> None:
        """The request is answered (its ``outcome``, ``failure`` and
        ``response`` set): each filter that saw it and defines
        ``on_response`` is told, in reverse order."""
        ran, request._ran = request._ran, []
        for instance in reversed(ran):
            try:
                instance.on_response(request)
            except Exception as exc:  # noqa: BLE001  (logged: the answer still goes out)
                self._errors.log(
                    ("response", type(instance)),
                    "stream filter %s raised in on_response",
                    type(instance).__name__,
                    exc_info=exc,
                )
