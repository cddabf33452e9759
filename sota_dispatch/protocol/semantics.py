"""What the core knows of a protocol's frames, declared once on its class.

:class:`~sota_dispatch.Dispatcher` inherits :class:`FrameSemantics`, so a
protocol is one class: its registry name, sniffer and options, the codec
of each side of a connection, and what the proxy, the health checks and
clients need to know of a frame (request or response, heartbeat and its
reply, oneway, the id and how to rewrite it in the raw bytes, status,
timeout, routing attributes, the error reply for each :class:`Failure`,
the health probe), and what the client tool (``python -m
sota_dispatch.call``) needs to build a request from a command line and
to show its answer. The proxy never looks inside a frame; a missing
capability belongs here, in the protocol's class, never as a special case
in the proxy.

Everything here is a classmethod (or, for a default called per frame, a
static method) and pure (no I/O), so the proxy uses the registered class
itself, and a connection's own instance answers the same.
Frames are typed ``Any`` here; a protocol's overrides name its frame type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..io.writer import Encoded
from . import defaults
from .bound import BoundSemantics
from .calls import CallAnswer
from .codec import Codec, Failure, PoolMode
from .options import OptionPlace, OptionSchema

__all__ = ["BoundSemantics", "FrameSemantics"]


class FrameSemantics:
    """The frame semantics of one protocol (pure, no I/O).

    The defaults describe a protocol without heartbeats, oneway requests,
    statuses or timeouts of its own. A class that defines both
    :meth:`server_codec` and :meth:`client_codec` is :attr:`proxiable`.
    """

    #: The protocol's name in logs, metrics and pool keys, and the usual
    #: registry name (a subclass without one gets its class name).
    protocol_name: ClassVar[str] = ""
    #: The protocol's options, for every place they come from.
    options: ClassVar[OptionSchema] = OptionSchema()
    #: Width of the request id, for the upstream id counter.
    id_bits: ClassVar[int] = 32
    #: How upstream connections carry requests by default.
    pool_mode: ClassVar[PoolMode] = "multiplex"
    #: The pool modes the protocol can work in (a cluster's ``pool.mode``):
    #: ``pipeline`` needs answers in order, ``multiplex`` needs ids.
    pool_modes: ClassVar[frozenset[PoolMode]] = frozenset({"multiplex", "exclusive"})
    #: True when a client expects answers in the order it sent the requests
    #: (a pipelined line protocol): the proxy then holds an early answer back
    #: until the ones before it are written.
    ordered: ClassVar[bool] = False
    #: True when the class defines the codecs of both sides (computed).
    proxiable: ClassVar[bool] = False
    #: Who speaks first on a new connection. ``False``: the client (a
    #: request), so a listener may hold the connection as a bare socket,
    #: without a task, until its first bytes (:class:`~sota_dispatch.Server`'s
    #: ``wait_for_first_bytes``); ``True``: the server (a greeting, as
    #: ZMTP's); ``None``, the default: not declared, so the connection starts
    #: at once (a ``serve()`` may well write a banner first).
    speaks_first: ClassVar[bool | None] = None
    _named_after_class: ClassVar[bool] = False
    _bound: ClassVar[BoundSemantics | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("options")
        if isinstance(declared, Mapping) and not isinstance(declared, OptionSchema):
            # A 0.1 subclass declared {name: help}: text options of a local service.
            cls.options = OptionSchema.from_help(declared)
        if "protocol_name" not in cls.__dict__ and (not cls.protocol_name or cls._named_after_class):
            cls.protocol_name = cls.__name__  # logs and metrics need some name
            cls._named_after_class = True
        elif "protocol_name" in cls.__dict__:
            cls._named_after_class = False
        cls.proxiable = _overrides(cls, "server_codec") and _overrides(cls, "client_codec")

    # -- options ----------------------------------------------------------

    @classmethod
    def option_errors(cls, options: Mapping[str, str], place: OptionPlace = "service") -> dict[str, str]:
        """Everything wrong with ``options`` at ``place``, name -> problem.

        Unknown names and values their reader refuses first; when each is
        fine on its own, :meth:`check_options` judges them together.
        """
        errors = cls.options.errors(options, place)
        if not errors:
            errors = cls.check_options(cls.options.read(options, place), place)
        return errors

    @classmethod
    def check_options(cls, values: Mapping[str, Any], place: OptionPlace) -> dict[str, str]:
        """Rules across options (two that go together), name -> problem;
        ``values`` holds every option of ``place``, read or defaulted."""
        return {}

    @classmethod
    def option_values(cls, options: Mapping[str, str], place: OptionPlace) -> dict[str, Any]:
        """Every option of ``place`` read from ``options`` or defaulted."""
        return cls.options.read(options, place)

    # -- codecs -----------------------------------------------------------

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> Codec[Any]:
        """The codec of a connection a peer opened to us (we answer requests).

        ``options``: the values of the listener's (or service's) options."""
        raise NotImplementedError(f"{cls.__qualname__} has no server codec")

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> Codec[Any]:
        """The codec of a connection we opened (we send requests).

        ``options``: the values of the cluster's options."""
        raise NotImplementedError(f"{cls.__qualname__} has no client codec")

    @classmethod
    def bound_semantics(cls) -> BoundSemantics:
        """The per-frame classmethods of this class, bound once (made at
        first use, then kept on the class): what the proxy calls per frame."""
        bound = cls.__dict__.get("_bound")
        if bound is None:
            bound = cls._bound = BoundSemantics(cls)
        return bound

    # -- frames -----------------------------------------------------------

    # The per-frame defaults are plain functions (sota_dispatch.protocol.
    # defaults, compiled in the compiled build), made static methods: an
    # interpreted classmethod cost the compiled proxy ~1.1k instructions a
    # call. A subclass overrides any with a classmethod, as before.
    is_request = staticmethod(defaults.is_request)
    is_oneway = staticmethod(defaults.is_oneway)
    is_heartbeat = staticmethod(defaults.is_heartbeat)

    @classmethod
    def heartbeat_reply(cls, frame: Any) -> bytes:
        """The answer to a heartbeat request."""
        raise NotImplementedError(f"{cls.__qualname__} has heartbeats but no reply")

    @classmethod
    def heartbeat_request(cls) -> Any:
        """A heartbeat request frame, which the client role's keepalive
        sends with :meth:`~sota_dispatch.Dispatcher.request` on a quiet
        connection; None (the default): the protocol has none."""
        return None

    @classmethod
    def encode_request(cls, frame: Any, upstream_id: int) -> Encoded:
        """The request's bytes for upstream, carrying ``upstream_id`` (which a
        protocol without ids ignores); ids are rewritten in the raw bytes.
        One ``bytes``, or a list of pieces sent in order (:data:`~sota_dispatch.Encoded`:
        a large body handed on as decoded, not copied behind a new header)."""
        raise NotImplementedError(f"{cls.__qualname__} cannot forward a request")

    response_id = staticmethod(defaults.response_id)

    @classmethod
    def encode_response(cls, response: Any, request: Any) -> Encoded:
        """The response's bytes for the client that sent ``request``, with
        that request's own id (bytes or pieces, as :meth:`encode_request`)."""
        raise NotImplementedError(f"{cls.__qualname__} cannot forward a response")

    status = staticmethod(defaults.status)
    timeout = staticmethod(defaults.timeout)

    @classmethod
    def routing_attributes(cls, frame: Any) -> Mapping[str, str]:
        """What routes match on and hash balancers hash (computed only when
        a route or balancer needs it). May raise
        :class:`~sota_dispatch.ProtocolError` for a request it cannot read,
        which gets a :attr:`Failure.CODEC_ERROR` reply."""
        return {}

    @classmethod
    def trace_headers(cls, frame: Any) -> Mapping[str, str]:
        """The request's tracing context as the protocol carries it (a bolt
        header's ``rpc_trace_context.sofaTraceId``, a dubbo ``traceparent``
        attachment), name -> value; read only when a listener traces (the
        proxy forwards them untouched either way). Default: none."""
        return {}

    @classmethod
    def rpc_names(cls, frame: Any) -> tuple[str | None, str | None]:
        """The request's ``(service, method)`` for a span's ``rpc.service``
        and ``rpc.method``; default: the ``service`` and ``method`` routing
        attributes (None where missing). Read only when a listener traces."""
        attributes = cls.routing_attributes(frame)
        return attributes.get("service"), attributes.get("method")

    @classmethod
    def frame_size(cls, frame: Any) -> int | None:
        """The request's size as received, bytes, where the frame knows it
        cheaply (its raw bytes); read only for an access log. Default: None."""
        return None

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[Any]) -> bytes | None:
        """A health-check request's bytes, sent once ``codec`` (the probe
        connection's, handshake done) is ready; ``send`` is the cluster's
        configured probe text, if any. None: the protocol has no probe for
        this peer, so the connect (and handshake) is the check."""
        return None

    @classmethod
    def health_probe_ok(cls, frame: Any) -> bool:
        """Whether the first frame answering :meth:`health_probe` is healthy."""
        return True

    @classmethod
    def health_probe_verdict(cls, codec: Codec[Any]) -> bool | None:
        """A verdict the codec itself holds, for probes answered below the
        frame level (a ZMTP PONG); None: wait for a frame."""
        return None

    @classmethod
    def error_reply(cls, request: Any, failure: Failure, detail: str = "") -> bytes:
        """The protocol's own error reply to ``request`` for ``failure``.

        ``detail`` is text for the client where the protocol has room for
        it: the proxy puts there only what the client may know (a
        reference to quote, the deadline applied), never upstream
        addresses or cluster names, which it logs instead."""
        raise NotImplementedError(f"{cls.__qualname__} has no error reply")

    # -- the client tool --------------------------------------------------

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> Any:
        """A request frame built from a command line of ``python -m
        sota_dispatch.call``, for the client role to send (its id is set by
        :meth:`encode_request`).

        ``words``: the positional arguments after the address (a query, a
        payload, one ZMTP frame each, a method's arguments: the protocol
        decides). ``fields``: the ``--header/-H NAME=VALUE`` pairs, plus
        ``service`` and ``method`` when ``--service`` and ``--method`` are
        given. Raise :class:`ValueError`, one line for the user, for words
        or fields the protocol cannot send (the tool exits 2).

        The default raises :class:`NotImplementedError`: the protocol has
        no call support, and the tool says so instead of guessing a frame.
        """
        raise NotImplementedError(f"protocol {cls.protocol_name} has no call support (no call_request())")

    @classmethod
    def describe_answer(cls, frame: Any) -> CallAnswer:
        """The answer ``frame`` as the client tool shows it: success or
        error (its exit code), one line for a person, JSON-ready data for
        ``--json`` (see :class:`~sota_dispatch.CallAnswer`).

        The default calls every answer a success and shows its ``repr``: a
        protocol with :meth:`call_request` should say what its statuses
        and error answers are."""
        return CallAnswer(ok=True, text=repr(frame), data=repr(frame))


def _overrides(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass is not FrameSemantics
    return False
