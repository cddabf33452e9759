"""What the bundled proxy needs from a protocol, and nothing more.

The proxy loop is generic: it never looks inside a frame. A protocol plugin
that wants to be proxied gives its dispatcher class a ``proxy_hooks``
attribute, an instance of :class:`ProxyHooks`, and the proxy does everything
through it: build the codecs of both sides, tell requests from heartbeats,
read routing attributes, put a fresh upstream id on a request and the
downstream id back on its response (by rewriting the id bytes, not by
re-encoding), and build the protocol's own error reply for each
:class:`Failure`. A missing capability belongs in the plugin's hooks, never
as a special case in the proxy.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar

__all__ = ["Failure", "PoolMode", "ProxyCodec", "ProxyHooks"]

F = TypeVar("F")

#: How an upstream connection carries requests: ``multiplex`` (many at once,
#: matched by id), ``pipeline`` (many at once, answered in order) or
#: ``exclusive`` (one at a time).
PoolMode: TypeAlias = Literal["multiplex", "pipeline", "exclusive"]


class Failure(enum.Enum):
    """Why a request got no answer from upstream; each maps to an error reply."""

    NO_ROUTE = "no route"
    NO_HEALTHY_UPSTREAM = "no healthy upstream"
    OVERFLOW = "overflow"
    TIMEOUT = "timeout"
    UPSTREAM_RESET = "upstream reset"
    CODEC_ERROR = "codec error"


class ProxyCodec(Protocol[F]):
    """One connection's sans-I/O codec, as the proxy drives it.

    ``feed`` returns the complete frames; frames that came before bad bytes
    are returned first and the error is raised by :meth:`check` (or the next
    ``feed``). ``data_to_send`` hands out bytes the codec itself must send
    (a handshake, a PONG, an error line before a close); ``ready`` is False
    until a handshake, if the protocol has one, is complete.
    """

    @property
    def ready(self) -> bool: ...

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not complete yet (a drain waits for it)."""
        ...

    def feed(self, data: bytes) -> list[F]: ...

    def data_to_send(self) -> bytes: ...

    def check(self) -> None: ...


class ProxyHooks(Generic[F]):
    """The proxy-facing operations of one protocol's frames (pure, no I/O).

    Subclass it per protocol; the defaults describe a protocol without
    heartbeats, oneway requests, statuses or timeouts of its own.
    """

    #: The protocol's registry name.
    name: str = ""
    #: Width of the request id, for the upstream id counter.
    id_bits: int = 32
    #: How upstream connections carry requests by default.
    pool_mode: PoolMode = "multiplex"
    #: The pool modes the protocol can work in (a cluster's ``pool.mode``):
    #: ``pipeline`` needs answers in order, ``multiplex`` needs ids.
    pool_modes: frozenset[PoolMode] = frozenset({"multiplex", "exclusive"})
    #: Options of client connections (a listener's ``options``), name -> help.
    options: Mapping[str, str] = {}
    #: Options of upstream connections (a cluster's ``options``), name -> help.
    upstream_options: Mapping[str, str] = {}
    #: True when a client expects answers in the order it sent the requests
    #: (a pipelined line protocol): the proxy then holds an early answer back
    #: until the ones before it are written.
    ordered: bool = False

    def option_errors(self, options: Mapping[str, str], *, upstream: bool = False) -> dict[str, str]:
        """What is wrong with ``options``, option name -> problem (empty: nothing).

        The default knows only names: anything not in :attr:`options` (or
        :attr:`upstream_options`) is unknown. Override it to check values too.
        """
        known = self.upstream_options if upstream else self.options
        names = ", ".join(known) or "none"
        return {name: f"unknown option (options: {names})" for name in options if name not in known}

    def downstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> ProxyCodec[F]:
        """The codec of a client connection (we are the server)."""
        raise NotImplementedError

    def upstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> ProxyCodec[F]:
        """The codec of an upstream connection (we are the client)."""
        raise NotImplementedError

    def is_request(self, frame: F) -> bool:
        """True for a frame that asks for work (as opposed to a response)."""
        return True

    def is_oneway(self, frame: F) -> bool:
        """True for a request that gets no response."""
        return False

    def is_heartbeat(self, frame: F) -> bool:
        """True for a keepalive frame, answered locally and never forwarded."""
        return False

    def heartbeat_reply(self, frame: F) -> bytes:
        """The answer to a heartbeat request."""
        raise NotImplementedError

    def encode_request(self, frame: F, upstream_id: int) -> bytes:
        """The request's bytes for upstream, carrying ``upstream_id`` (which a
        protocol without ids ignores)."""
        raise NotImplementedError

    def response_id(self, frame: F) -> int | None:
        """The id of an upstream response; None if it carries none we gave."""
        return None

    def encode_response(self, response: F, request: F) -> bytes:
        """The response's bytes for the client that sent ``request``, with
        that request's own id."""
        raise NotImplementedError

    def status(self, response: F) -> int | None:
        """The response's protocol status, for retry policies; None if the
        protocol has none."""
        return None

    def timeout(self, frame: F) -> float | None:
        """The request's own timeout in seconds, if the protocol carries one."""
        return None

    def routing_attributes(self, frame: F) -> Mapping[str, str]:
        """What routes match on and hash balancers hash (computed only when
        a route or balancer needs it). May raise
        :class:`~sota_dispatch.ProtocolError` for a request it cannot read,
        which gets a :attr:`Failure.CODEC_ERROR` reply."""
        return {}

    def health_probe(self, send: str | None, codec: ProxyCodec[F]) -> bytes | None:
        """A health-check request's bytes, sent once ``codec`` (the probe
        connection's, handshake done) is ready; ``send`` is the cluster's
        configured probe text, if any. None: the protocol has no probe for
        this peer, so the connect (and handshake) is the check."""
        return None

    def health_probe_ok(self, frame: F) -> bool:
        """Whether the first frame answering :meth:`health_probe` is healthy."""
        return True

    def health_probe_verdict(self, codec: ProxyCodec[F]) -> bool | None:
        """A verdict the codec itself holds, for probes answered below the
        frame level (a ZMTP PONG); None: wait for a frame."""
        return None

    def error_reply(self, request: F, failure: Failure, detail: str = "") -> bytes:
        """The protocol's own error reply to ``request`` for ``failure``.

        ``detail`` is text for the client where the protocol has room for
        it: the proxy puts there only what the client may know (a
        reference to quote, the deadline applied), never upstream
        addresses or cluster names, which it logs instead."""
        raise NotImplementedError
