"""The one exception hierarchy of sota-dispatch.

Every error the library raises on purpose derives from :class:`SotaError`, so
an embedding program can tell "the peer or the configuration was wrong" from a
bug in its own code. A bad peer never raises out of a server: the dispatcher
that owns the connection catches these, logs why, and closes only that
connection.
"""

from __future__ import annotations

import errno
import os
import ssl
from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "describe_os_error",
    "ConfigError",
    "ConnectionLost",
    "DuplicateFilterError",
    "DuplicateProtocolError",
    "FrameTimeout",
    "IncompleteReadError",
    "LimitExceeded",
    "PluginLoadError",
    "ProtocolError",
    "SotaError",
    "StreamLimitError",
    "StreamTimeout",
    "UnknownFilterError",
    "UnknownProtocolError",
    "UpstreamError",
]


class SotaError(Exception):
    """Base class of every error raised by sota-dispatch."""


class ProtocolError(SotaError):
    """The peer sent bytes that break the protocol.

    Codecs raise only this (or a subclass) for malformed input, whatever the
    input is; the dispatcher answers it by closing that one connection.
    """

    #: Whether the close lingers (half-closes and reads out what the peer
    #: still sends, up to the linger timeout) so that an error reply written
    #: before it is not destroyed by a reset. False for peers owed nothing:
    #: one that let a timeout pass, or one shed to save memory, must not hold
    #: its slot, and what it keeps sending, for a linger.
    linger: ClassVar[bool] = True


class FrameTimeout(ProtocolError):
    """A peer took longer than the frame timeout to send a request (or its
    first bytes), or to read the answers sent to it: a slowloris, a peer
    that connected and said nothing, or one that stopped reading."""

    linger = False


class LimitExceeded(ProtocolError):
    """A frame, line or message is larger than the configured limit.

    Raised as soon as the limit is known to be exceeded, before the rest of
    the oversized input is buffered, so a hostile peer cannot grow memory.
    """

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} exceeds the limit of {limit} bytes")
        self.what = what
        self.limit = limit


class IncompleteReadError(ProtocolError):
    """The peer closed the connection in the middle of a frame.

    ``partial`` holds the bytes of the unfinished frame, for logging or for a
    protocol that can still make sense of them.
    """

    def __init__(self, partial: bytes, expected: int | None = None) -> None:
        want = "" if expected is None else f" of {expected} expected"
        super().__init__(f"connection closed after {len(partial)} bytes{want} of an unfinished frame")
        self.partial = partial
        self.expected = expected


class UpstreamError(SotaError):
    """Something went wrong on the far side of a proxied request."""


class ConnectionLost(UpstreamError):
    """The connection carrying a pending stream closed before its answer came.

    ``reason`` is the error that closed the connection, or ``None`` for an
    orderly close by the peer.
    """

    def __init__(self, reason: BaseException | None = None) -> None:
        detail = "closed by peer" if reason is None else f"{type(reason).__name__}: {reason}"
        super().__init__(f"connection lost ({detail})")
        self.reason = reason


class StreamTimeout(UpstreamError, TimeoutError):
    """A pending stream got no answer within its timeout."""


class StreamLimitError(SotaError):
    """Opening one more stream would exceed ``max_in_flight``."""


class UnknownProtocolError(SotaError, LookupError):
    """No protocol of that name is registered or installed."""


class DuplicateProtocolError(SotaError):
    """Two sources registered the same protocol name."""


class UnknownFilterError(SotaError, LookupError):
    """No stream filter of that name is registered or installed."""


class DuplicateFilterError(SotaError):
    """Two sources registered the same stream filter name."""


class PluginLoadError(SotaError):
    """An installed plugin (a protocol or a stream filter) failed to import."""


class ConfigError(SotaError):
    """A configuration problem; the message starts with the path of the value.

    A configuration with several problems raises one ConfigError for all of
    them (:meth:`combine`): its :attr:`errors` are the problems, each one
    with its own ``path`` and ``problem``, and its message lists them one
    per line, after a first line counting them (its own ``path`` is empty).
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
        self._errors: tuple[ConfigError, ...] = ()

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """Every problem: this error alone, or each of those it combines."""
        return self._errors or (self,)

    @classmethod
    def combine(cls, errors: Iterable[ConfigError]) -> ConfigError:
        """One error for the problems of ``errors`` (combined ones flattened,
        order kept): the only one itself, or one listing them all."""
        flat = tuple(problem for error in errors for problem in error.errors)
        if not flat:
            raise ValueError("no configuration errors to combine")
        if len(flat) == 1:
            return flat[0]
        listing = "\n".join(f"  {error}" for error in flat)
        combined = cls("", f"{len(flat)} configuration problems:\n{listing}")
        combined._errors = flat
        return combined


def describe_os_error(error: BaseException) -> str:
    """What went wrong with a connect or a socket, as an operator reads it:
    ``connection refused (ECONNREFUSED)``. anyio's ``connect_tcp`` raises
    "All connection attempts failed" with the real error as its cause (or
    among an exception group's): that one is found and named by its errno."""
    seen: list[BaseException] = [error]
    for candidate in seen:  # breadth first through causes and groups, bounded
        if len(seen) > 32:
            break
        if isinstance(candidate, ssl.SSLError):  # its errno is OpenSSL's, not the system's
            return str(candidate)
        code = getattr(candidate, "errno", None)
        if isinstance(candidate, OSError) and isinstance(code, int) and code in errno.errorcode:
            return f"{os.strerror(code).lower()} ({errno.errorcode[code]})"
        if candidate.__cause__ is not None:
            seen.append(candidate.__cause__)
        seen.extend(getattr(candidate, "exceptions", ()))
    return str(error) or type(error).__name__
