"""A connection's read timeouts, and the alarm that enforces them cheaply.

:class:`ReadTimeouts` bound each wait of the reader for input. With a
cancel scope per wait, every receive entered and left an anyio scope and
set and cancelled a timer: ~46,000 instructions per request at one request
in flight through the proxy (callgrind; a request's round through the proxy
waits twice), a fifth of the proxy's work there. An :class:`InputAlarm`
keeps one timer per connection instead, armed lazily: each wait only
records its deadline; the timer, when it rings, ends the wait if the
deadline has come, or sets itself again for the deadline the connection has
now (which moves later with every read). Ending the wait means waking the
receive with nothing to read, which the stream reports as the end of input
(:func:`~sota_dispatch.io.transport.input_alarm`: only anyio's asyncio
socket streams can be woken so; every other stream keeps the scope).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import attrs

from .clock import loop_time

__all__ = ["InputAlarm", "ReadTimeouts"]

#: How early a ring still counts as on time: uvloop's timers run in whole
#: milliseconds (its clock is cached per loop turn), so a timer set for a
#: deadline may ring just before it; set again, it would ring again at once.
_SLACK: Final = 0.001


@attrs.frozen
class ReadTimeouts:
    """How long a peer may keep a connection without sending what it owes.

    ``frame``: from the connect to the first byte, and from a frame's first
    byte to its last (:class:`~sota_dispatch.FrameTimeout`). ``idle``: between frames, with
    nothing partly received (or anywhere, with no frame timeout); the
    connection then ends as if the peer had closed it. None: no limit.
    """

    frame: float | None = 30.0
    idle: float | None = 3600.0


class InputAlarm:
    """Ends one connection's waits for input at their deadlines, or at once.

    The reader calls :meth:`expect` before each wait and sets
    :attr:`waiting` around it; :attr:`fired` then tells a wait ended by
    :meth:`wake` (or by the deadline) from one ended by the peer.
    """

    __slots__ = ("_armed_at", "_call_at", "_handle", "_wake", "deadline", "fired", "waiting")

    def __init__(self, call_at: Callable[..., Any], wake: Callable[[], object]) -> None:
        #: The event loop's ``call_at`` (on :func:`loop_time`'s scale).
        self._call_at = call_at
        #: Wakes the stream's receive with nothing to read.
        self._wake = wake
        self._handle: Any = None
        self._armed_at = math.inf
        #: When the current (or next) wait must end (inf: never).
        self.deadline = math.inf
        #: True while the reader waits on the stream.
        self.waiting = False
        #: True once :meth:`wake` ended the current wait.
        self.fired = False

    def expect(self, deadline: float) -> None:
        """The next wait, or the one under way, ends at ``deadline`` (inf:
        never). Sets the timer only if it is not set or rings later: a
        deadline that moves later (each read's) costs no timer."""
        self.deadline = deadline
        if deadline < self._armed_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._handle = self._call_at(deadline, self._ring)
        self._armed_at = deadline

    def _ring(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        if not self.waiting:
            return  # the next wait sets it again if it needs to
        deadline = self.deadline
        if loop_time() >= deadline - _SLACK:
            self.wake()
        elif deadline != math.inf:
            self._arm(deadline)

    def wake(self) -> None:
        """End the wait under way now, as if input had ended."""
        self.fired = True
        self._wake()

    def close(self) -> None:
        """The connection is closed: drop the timer (it refers to us)."""
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
        self._armed_at = math.inf
