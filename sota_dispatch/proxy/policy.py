"""What a listener applies to every request it reads, in one object.

A listener's routes, stream filters and observer (access log, spans) are
read once per request, and a reload may replace them at any time. Its
client connections used to read them from the listener through a
``typing.Protocol``: in the compiled build that is a lookup by name
(~190 instructions) per attribute per request. A listener instead keeps
one :class:`RequestPolicy` for its whole life and a reload changes that
object's fields in place; each connection keeps a reference to it and
reads the fields directly (compiled: a native class, so a field read is a
load). Requests read from then on see the new values; an exchange keeps
the observer it started with (as Envoy's connections keep the listener
configuration they were accepted under).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..filters.api import FilterRequest, StreamFilter
from ..filters.chain import FilterChain
from .routing import Route

__all__ = ["RequestPolicy"]


class RequestPolicy:
    """A listener's routes, stream filters (None: none, and a request pays
    one test) and observer (None: no access log nor tracing)."""

    __slots__ = ("filters", "observer", "routes")

    def __init__(
        self,
        routes: tuple[Route, ...],
        filters: FilterChain | None,
        observer: Callable[..., None] | None,
    ) -> None:
        self.routes = routes
        self.filters = filters
        #: ``observer(exchange, data, outcome, now, elapsed, response)``:
        #: see :data:`~sota_dispatch.proxy.sites.Observer`.
        self.observer = observer

    def match(self, request: FilterRequest) -> Route | None:
        """The first route ``request`` matches (its attributes are read only
        when a route has conditions): for a request its filters saw."""
        for route in self.routes:
            if not route.matchers or route.matches(request.attributes):
                return route
        return None

    def route_filters(self, request: FilterRequest) -> Mapping[str, StreamFilter]:
        """The filters ``request``'s route overrides (matched once, kept)."""
        route: Route | None = request.matched(self.match)
        return route.filters if route is not None else {}
