"""The stream filter API: per-request logic a listener runs on every request.

A listener's ``stream_filters`` see each decoded request before it is
routed, in their configured order, and each answer (or failure) before it
is written back, in reverse order: MOSN's stream filters, Envoy's
generic-proxy filters. A filter can let the request go on, answer it
locally with the protocol's own error reply (:class:`LocalReply`), wait
(return an awaitable), set routing attributes that routes and hash
balancers then use, and keep per-request data in :attr:`FilterRequest.metadata`.

The proxy never looks inside a frame, and neither must a filter that wants
to work for every protocol: it reads the request through its routing
attributes, its connection and its listener.

Filters are plain objects, built once per listener (and once more per
route that overrides one in ``per_filter_config``) from their option
values. A request's path through a chain of synchronous filters creates
no task and awaits nothing; only a filter that returns an awaitable makes
its request wait, in a task of its own, without holding up the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import attrs

from ..io.clock import SYSTEM_CLOCK, Clock
from ..protocol.codec import Failure
from ..protocol.context import ConnectionContext
from ..protocol.options import OptionSchema

if TYPE_CHECKING:
    from ..protocol.semantics import BoundSemantics

__all__ = ["FilterContext", "FilterRequest", "FilterResult", "LocalReply", "StreamFilter"]


@attrs.frozen
class LocalReply:
    """A filter's answer in place of upstream's: the protocol's error reply for ``failure``.

    ``public`` is text the client may read (the protocol's error reply
    carries it where it has room); ``detail`` goes to the log only.
    """

    failure: Failure
    public: str = ""
    detail: str = ""


#: What :meth:`StreamFilter.on_request` returns: None to let the request go
#: on, a :class:`LocalReply` to answer it, or an awaitable of either.
FilterResult: TypeAlias = "LocalReply | Awaitable[LocalReply | None] | None"


@attrs.frozen
class FilterContext:
    """Where a filter instance works: its listener, the route that overrides
    it (None: the listener's own instance), and the proxy's clock (read
    time from it, so that tests can move it)."""

    listener: str
    route: int | None = None
    clock: Clock = SYSTEM_CLOCK


class FilterRequest:
    """One request as the filters see it.

    ``frame`` is the decoded request (the protocol's frame type); read it
    through :attr:`attributes` to stay protocol-agnostic. :meth:`set_attribute`
    changes what routes match and hash balancers hash. ``metadata`` is free
    for filters to share data along the chain and with their
    :meth:`StreamFilter.on_response`. Once the request is answered,
    :attr:`outcome` (``success`` or the failure's name), :attr:`failure`
    (None on success) and :attr:`response` (upstream's frame, None for a
    local reply) say how.
    """

    __slots__ = (
        "_attributes",
        "_ran",
        "_route",
        "_semantics",
        "chain",
        "connection",
        "failure",
        "frame",
        "listener",
        "metadata",
        "now",
        "outcome",
        "response",
        "stream",
    )

    def __init__(
        self,
        frame: Any,
        semantics: BoundSemantics,
        listener: str,
        connection: ConnectionContext,
        stream: int,
        now: float = 0.0,
    ) -> None:
        self.frame = frame
        #: When the request was read, on the proxy's clock (what a filter
        #: that reads the time per request can use instead of the clock).
        self.now = now
        self._semantics = semantics
        self.listener = listener
        self.connection = connection
        self.stream = stream
        self.metadata: dict[str, Any] = {}
        self.outcome = ""
        self.failure: Failure | None = None
        self.response: Any = None
        self._attributes: dict[str, str] | None = None
        self._route: Any = _UNMATCHED
        #: The filters whose on_request ran, in order (for on_response).
        self._ran: list[StreamFilter] = []
        #: The chain that ran on it (a reload may give the listener another
        #: before the answer comes; this one hears of the answer).
        self.chain: Any = None

    @property
    def protocol(self) -> str:
        """The request's protocol (its registry name)."""
        return self._semantics.protocol_name

    @property
    def attributes(self) -> Mapping[str, str]:
        """The routing attributes (computed on first use, from the protocol's
        class). Raises :class:`~sota_dispatch.ProtocolError` for a request
        whose attributes cannot be read; the request then gets a codec
        error reply."""
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = dict(self._semantics.routing_attributes(self.frame))
        return attributes

    def set_attribute(self, name: str, value: str | None) -> None:
        """Set (None: remove) a routing attribute for the routes and hash
        balancers after this filter; the route is matched afresh."""
        attributes = self.attributes
        assert isinstance(attributes, dict)
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
        self._route = _UNMATCHED

    def matched(self, match: Callable[[FilterRequest], Any]) -> Any:
        """``match(self)``, kept until an attribute changes: the proxy
        matches the request's route once, whether a filter's override or
        the routing asks first (and reads the attributes only if a route
        has conditions)."""
        route = self._route
        if route is _UNMATCHED:
            route = self._route = match(self)
        return route

    @property
    def peer_address(self) -> str | None:
        """The client's address, ``host:port`` (None if the socket had none)."""
        return self.connection.remote_address

    @property
    def peer_names(self) -> tuple[str, ...]:
        """The names the client's TLS certificate proves (empty without mutual TLS)."""
        return self.connection.peer_names


_UNMATCHED: Any = object()


class StreamFilter:
    """Base class of a stream filter (subclass it, declare ``options``).

    The class is the filter's factory: the proxy builds one instance per
    listener, ``cls(options, context)``, with the values its
    :class:`~sota_dispatch.OptionSchema` read from the config's
    ``config:`` mapping (place ``filter``), and one per route whose
    ``per_filter_config`` names the filter. Register the class under the
    entry-point group ``sota_dispatch.filters`` (or with
    :func:`~sota_dispatch.register_filter`).
    """

    #: The filter's options (every one with place ``filter``).
    options: ClassVar[OptionSchema] = OptionSchema()
    #: Whether the class defines :meth:`on_response` (computed): the chain
    #: calls only those that listen.
    hears_responses: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.hears_responses = cls.on_response is not StreamFilter.on_response

    @classmethod
    def check_options(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Problems across options (name -> problem; empty: none), after
        each was read: the config check reports them with their paths."""
        return {}

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        self.values = options
        self.context = context

    def on_request(self, request: FilterRequest) -> FilterResult:
        """Called for each request before it is routed; return None to go
        on, a :class:`LocalReply` to answer it, or an awaitable of either
        to make it wait (only this request waits). An exception fails the
        request with :attr:`Failure.INTERNAL` and is logged."""
        return None

    def on_response(self, request: FilterRequest) -> None:
        """Called once the request is answered (upstream's answer or an
        error reply), before the answer is written; in reverse order, for
        every filter whose :meth:`on_request` ran. Never for a oneway
        request. Must not block; an exception is logged and ignored."""
