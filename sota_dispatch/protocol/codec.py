"""The shape of a protocol's sans-I/O codec, and the words the core and a
protocol share about requests: :class:`Failure` and :data:`PoolMode`.

A codec turns bytes into frames and holds what it must send itself (a
handshake, a PONG, an error before a close), with no sockets, awaits or
clocks (the h11 model), so the same object serves a local service, a
client and both sides of the proxy.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

__all__ = ["Codec", "Failure", "PoolMode", "codec_handoff_state", "codec_movable", "restore_codec"]

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
    #: A stream filter refused the request (``rbac``).
    DENIED = "denied"
    #: A stream filter shed the request over a rate (``local_rate_limit``).
    RATE_LIMITED = "rate limited"
    #: The proxy itself failed on this request (a stream filter raised).
    INTERNAL = "internal error"


class Codec(Protocol[F]):
    """One connection's sans-I/O codec, as the core drives it.

    ``feed`` returns the complete frames; frames that came before bad bytes
    are returned first and the error is raised by :meth:`check` (or the next
    ``feed``). ``data_to_send`` hands out bytes the codec itself must send
    (a handshake, a PONG, an error line before a close); ``ready`` is False
    until a handshake, if the protocol has one, is complete.

    A codec whose connection is encrypted after its handshake (ZMTP CURVE)
    also has ``output_sealing()``: :class:`~sota_dispatch.CodecLoop` calls
    it once the handshake is done, and the callable it returns (None: no
    sealing) becomes the writer's :attr:`~sota_dispatch.BufferedWriter.transform`;
    the codec's own output is plaintext from then on.

    A codec whose connections may move to another process (hot restart
    hand-off) also has ``movable`` (True while its connection could move
    once at a frame boundary: False for a CURVE session, say),
    ``handoff_state()`` (JSON-ready values, asked at such a boundary) and
    ``restore_handoff(state)``, which puts a new codec where the old one
    was: see :func:`codec_handoff_state`.
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


def codec_movable(codec: object) -> bool:
    """Whether a codec's connection could move to another process (once
    at a frame boundary): it has the hooks and says it is ``movable``."""
    return (
        hasattr(codec, "handoff_state") and hasattr(codec, "restore_handoff") and bool(getattr(codec, "movable", False))
    )


def codec_handoff_state(codec: object) -> dict[str, Any] | None:
    """What a codec needs to go on in another process (hot restart
    hand-off), from its optional ``handoff_state()``: JSON-ready values
    (``{}`` for a codec whose state a new one has anyway), or None: this
    connection cannot move (no such method, or the codec says so, e.g. a
    CURVE session). Asked at a frame boundary with nothing buffered."""
    export = getattr(codec, "handoff_state", None)
    held: int = getattr(codec, "buffered", 0)
    if export is None or held:
        return None
    state = export()
    return None if state is None else dict(state)


def restore_codec(codec: object, state: Mapping[str, Any]) -> None:
    """Put a new codec where the exported one was (``restore_handoff(state)``):
    handshake done, peer known, nothing to send."""
    restore = getattr(codec, "restore_handoff", None)
    if restore is None:
        raise TypeError(f"{type(codec).__name__} cannot take over a connection (no restore_handoff)")
    restore(state)
