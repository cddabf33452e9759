""":class:`~sota_dispatch.FrameSemantics`'s per-frame defaults as plain
functions, made its static methods.

Compiled in the compiled build: the proxy calls several per request for a
protocol that keeps them (no ids, no heartbeats, no status, no timeout of
its own: simple_line, ZMTP), and a classmethod of the interpreted base
class cost ~1.1k instructions a call there. A subclass overrides any with
a classmethod, as before.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_heartbeat", "is_oneway", "is_request", "response_id", "status", "timeout"]


def is_request(frame: Any) -> bool:
    """True for a frame that asks for work (as opposed to a response)."""
    return True


def is_oneway(frame: Any) -> bool:
    """True for a request that gets no response."""
    return False


def is_heartbeat(frame: Any) -> bool:
    """True for a keepalive frame, answered locally and never forwarded."""
    return False


def response_id(frame: Any) -> int | None:
    """The id of an upstream response; None if it carries none we gave."""
    return None


def status(response: Any) -> int | None:
    """The response's protocol status, for retry policies; None if the
    protocol has none."""
    return None


def timeout(frame: Any) -> float | None:
    """The request's own timeout in seconds, if the protocol carries one."""
    return None
