"""Idle served connections parked at the doorstep, their task and buffers freed.

A connection that has spoken and then sits idle (a long-lived RPC client
between calls) still holds what serving it took: its task, anyio's
stream, the dispatcher's reader, writer, codec and task group, about 17
KiB (``bench/idle_bench.py``). A server with ``park_idle_after`` set
looks over its connections every so often; one idle that long, at a frame
boundary, with nothing in flight or unsent and a dispatcher that can
say what it needs to go on (:meth:`~sota_dispatch.Dispatcher.handoff_state`,
as for a hot-restart hand-off), is handed off to its own server: its
socket goes back to the doorstep (:mod:`~sota_dispatch.protocol.doorstep`)
with that state and its connection id, and everything else is freed. When
it turns readable, a new dispatcher takes it over from that state, as a
successor process would. The peer notices nothing; its idle timeout runs
on while it is parked.

Only listeners whose server never speaks unprompted park (those that wait
for first bytes: the client speaks first, and a parked connection has
nobody to speak for it). What cannot move (TLS, a dispatcher without
state) is never asked to.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any

import anyio

from .dispatcher import Dispatcher
from .doorstep import Doorstep
from .handoff import HandOff, HandOffDeclined

__all__ = ["Parking"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the connections, at most (and the share of
#: ``after``: a connection parks between ``after`` and 1.5 x ``after`` idle).
_MAX_INTERVAL = 5.0

#: Seconds without parking after a park found no descriptor free.
_FD_PAUSE = 5.0

#: Serve a parked connection that turned out to have bytes waiting at once:
#: (socket, the bytes, its state, its connection id).
ServeNow = Callable[[socket.socket, bytes, Mapping[str, Any], int], None]


class Parking:
    """Parks a server's idle connections at its doorstep (see the module docstring).

    Run :meth:`run` in a task with the server's live dispatchers;
    ``serve_now`` takes a parked connection back at once when bytes came
    with it (read ahead of us by the stream before it stopped reading).
    ``after``: seconds idle before a connection parks (None: none parks);
    settable (a reload).
    """

    def __init__(self, after: float | None, doorstep: Doorstep, serve_now: ServeNow) -> None:
        self._after = after
        self._changed = anyio.Event()
        self._doorstep = doorstep
        self._serve_now = serve_now
        #: Dispatchers asked to park, until the server is done with them (:meth:`done`).
        self._asked: set[Dispatcher] = set()
        self._landed: set[Dispatcher] = set()
        #: Set when the server shuts down: a connection still on its way is closed.
        self.stopped = False
        #: Set when the server hands its connections to another process: a
        #: connection still on its way goes there (socket, state, id) instead.
        self.forward: Callable[[socket.socket, Mapping[str, Any], int], None] | None = None
        #: Connections parked since the start (one parked twice counts twice).
        self.parked_total = 0
        #: Looks over the connections so far.
        self.sweeps = 0
        #: No parking until then: the process ran out of descriptors (each
        #: park needs one more for a moment; a connection it fails for closes).
        self._paused_until = -math.inf

    @property
    def after(self) -> float | None:
        return self._after

    @after.setter
    def after(self, seconds: float | None) -> None:
        self._after = seconds
        self._changed.set()  # run() looks again at once, at the new pace

    async def run(self, dispatchers: Collection[Dispatcher]) -> None:
        """Look over ``dispatchers`` every ``after / 2`` seconds (at most
        every 5 s), until cancelled: one pass over the set, a few attribute
        reads per connection, no timer per connection."""
        while True:
            after = self._after
            self._changed = anyio.Event()
            with anyio.move_on_after(math.inf if after is None else min(after / 2, _MAX_INTERVAL)):
                await self._changed.wait()
                continue
            self.sweep(dispatchers)
            self.sweeps += 1

    def sweep(self, dispatchers: Collection[Dispatcher]) -> None:
        """Ask every connection of ``dispatchers`` idle for ``after``
        seconds that can park to park."""
        now = anyio.current_time()
        if self._after is None or now < self._paused_until:
            return
        cutoff = now - self._after
        for dispatcher in list(dispatchers):
            reader = dispatcher.reader
            since = reader.idle_since
            if since is None or since > cutoff or dispatcher in self._asked:
                continue
            if not dispatcher.writer.all_sent or not dispatcher.can_hand_off() or dispatcher.handoff_state() is None:
                continue
            self._asked.add(dispatcher)
            # Its idle timeout runs on at the doorstep: the same deadline.
            dispatcher.hand_off(functools.partial(self._park, dispatcher, reader.idle_deadline))

    def done(self, dispatcher: Dispatcher) -> bool:
        """Forget ``dispatcher`` (its run is over); True if it parked."""
        self._asked.discard(dispatcher)
        if dispatcher in self._landed:
            self._landed.discard(dispatcher)
            return True
        return False

    async def _park(self, dispatcher: Dispatcher, deadline: float, moving: HandOff) -> None:
        """The hand-off sink: the socket back to the doorstep, with the
        dispatcher's state, id and what remains of its idle timeout."""
        if self.stopped:
            raise HandOffDeclined("the server is shutting down")  # closed, as the drain closes idle ones
        try:
            sock = socket.socket(fileno=os.dup(moving.fd))  # moving.fd is closed once this returns
        except OSError:
            self._paused_until = anyio.current_time() + _FD_PAUSE  # EMFILE: the others stay served meanwhile
            raise
        try:
            sock.setblocking(False)
            if self.forward is not None and not moving.unread:
                self.forward(sock, moving.state, moving.connection_id)
            elif moving.unread:  # it spoke as it was parking: serve it again at once
                self._serve_now(sock, moving.unread, moving.state, moving.connection_id)
            else:
                self._doorstep.hold(sock, state=moving.state, connection_id=moving.connection_id, deadline=deadline)
        except BaseException:
            sock.close()
            raise
        self._landed.add(dispatcher)
        self.parked_total += 1
