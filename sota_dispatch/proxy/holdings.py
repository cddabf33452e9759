"""What one client connection holds of the process's buffer budget.

The budget (:class:`~sota_dispatch.BufferBudget`) counts, per connection:
the partial frame its codec holds, what its transport read ahead of it,
and its requests in flight, as an average share of the bytes their frames
took. A connection tells it once per read batch, and as answers leave only
in large steps (a call per small answer would cost more than it tells).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ..io.budget import BufferBudget

__all__ = ["Holdings"]


class Holdings:
    """One connection's bytes, as last told to ``budget`` (the connection,
    the holder, is passed in each call: kept here, it would make a cycle
    that only the garbage collector frees)."""

    __slots__ = ("_budget", "_read_ahead", "held", "in_flight_bytes", "partial")

    def __init__(self, budget: BufferBudget, read_ahead: Callable[[], int] | None) -> None:
        self._budget = budget
        #: What the transport read ahead of the connection (None: nothing, or unknown).
        self._read_ahead = read_ahead
        self.held = 0
        self.partial = 0
        self.in_flight_bytes = 0

    def after_read(self, holder: Hashable, received: int, partial: int, in_flight: int) -> bool:
        """``holder``'s read batch of ``received`` bytes was handled; the codec holds
        ``partial`` bytes of a frame, ``in_flight`` requests are out. True:
        the holdings grew past the budget, and the connection waits
        (``wait_to_grow``) before it reads more. May raise
        :class:`~sota_dispatch.io.budget.FrameRefused` (see ``hold``)."""
        if in_flight:
            self.in_flight_bytes += received + self.partial - partial
        held = partial + self.in_flight_bytes
        if self._read_ahead is not None:
            held += self._read_ahead()
        if held == self.held:
            self.partial = partial
            return False
        budget = self._budget
        new_large = self.partial < budget.large_frame <= partial
        grew = held > self.held
        self.held, self.partial = held, partial
        return budget.hold(holder, held, new_large_frame=new_large) and grew  # may refuse it

    def answered(self, holder: Hashable, released: int, in_flight: int) -> None:
        """``released`` of ``holder``'s requests left flight, ``in_flight`` remain."""
        if not self.in_flight_bytes:
            return
        if in_flight <= 0:
            self.in_flight_bytes = 0
        else:
            self.in_flight_bytes -= self.in_flight_bytes * released // (in_flight + released)
        held = self.partial + self.in_flight_bytes
        if held < self.held - 65536 or (held == 0 and self.held):  # not per small answer
            self.held = held
            self._budget.hold(holder, held, new_large_frame=False)
