"""Accepted connections that have sent nothing yet, held without a task.

A served connection costs what it allocates up front: its task, anyio's
stream (a transport, two events, a queue), the dispatcher's reader,
writer, codec and task group: about 17 KiB (``bench/idle_bench.py``). A
client that connects and says nothing (a pool's spare connection, a port
scanner, a flood of idle connections meant to exhaust memory) needs none
of it yet. So a listener keeps such a connection here as its bare socket
until the socket turns readable (first bytes, or the peer's close), and
only then builds its stream and dispatcher; one still silent at its
deadline is closed, as the reader's first-byte (frame) timeout would have.

On asyncio the wait is a reader callback on the event loop: no task, no
future. Elsewhere (trio) one small task per socket waits for readability,
still far less than a served connection.

Protocols whose server speaks first (a ZMTP greeting) cannot wait for
the client: their listeners start every connection at once
(:attr:`FrameSemantics.speaks_first <sota_dispatch.FrameSemantics.speaks_first>`).

A served connection idle long enough may come back here too, parked
(:mod:`~sota_dispatch.protocol.parking`): then it carries its hand-off
state (what its next dispatcher restores), its connection id and its own
deadline (what remains of its idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskGroup

__all__ = ["Doorstep", "wait_readable"]

log = logging.getLogger(__name__)

# anyio 4.7 renamed it (the old name warns there).
wait_readable: Callable[[socket.socket], Awaitable[None]] = (
    getattr(anyio, "wait_readable", None) or anyio.wait_socket_readable
)

_ADMIT, _MOVE, _CLOSE, _TIMEOUT = "admit", "move", "close", "timeout"


#: What the doorstep gives a socket's new owner: the socket, its hand-off
#: state (None: it never spoke) and its connection id (0: none yet).
Admit = Callable[[socket.socket, "Mapping[str, Any] | None", int], None]


class _Entry:
    """One waiting socket: its deadline and, once decided, its fate."""

    __slots__ = ("connection_id", "deadline", "fate", "scope", "sock", "state")

    def __init__(
        self, sock: socket.socket, deadline: float, state: Mapping[str, Any] | None, connection_id: int
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.state = state
        self.connection_id = connection_id
        self.fate: str | None = None
        self.scope: anyio.CancelScope | None = None  # its task's wait (trio)


class Doorstep:
    """Sockets waiting for their first bytes (see the module docstring).

    ``admit(sock, state, connection_id)`` is called once a socket is
    readable: the caller takes it over. ``timeout``: seconds a new socket
    may stay silent (None: no limit); a parked one brings its deadline.
    Run :meth:`run` in a task for the deadlines; :meth:`close` closes every
    socket still waiting.
    """

    def __init__(self, admit: Admit, timeout: float | None, tasks: TaskGroup) -> None:
        self._admit = admit
        self.timeout = timeout
        self._tasks = tasks
        self._waiting: dict[socket.socket, _Entry] = {}
        #: asyncio: (deadline, arrival, entry) of every entry with a
        #: deadline, a heap, for :meth:`run`; decided ones are skipped there.
        self._deadlines: list[tuple[float, int, _Entry]] = []
        self._arrivals = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        if sniffio.current_async_library() == "asyncio":
            self._loop = asyncio.get_running_loop()
        self._wake: anyio.Event | None = None
        self._sleeping_until = math.inf  # the deadline task's wake-up
        #: Sockets closed silent at their deadline, since the start (new ones).
        self.timed_out = 0
        #: Parked sockets closed at the end of their idle timeout, since the start.
        self.parked_timed_out = 0
        #: Parked sockets waiting now (they carry a hand-off state).
        self.parked = 0
        #: Called after a socket leaves without being admitted.
        self.on_drop: Callable[[], None] | None = None
        self._move: Admit | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def hold(
        self,
        sock: socket.socket,
        *,
        state: Mapping[str, Any] | None = None,
        connection_id: int = 0,
        deadline: float | None = None,
    ) -> None:
        """Keep ``sock`` (connected, non-blocking) until it is readable.

        A parked connection gives its ``state`` and ``connection_id`` (see
        :class:`Admit`) and its ``deadline`` (:func:`anyio.current_time`;
        default: the doorstep's timeout from now)."""
        if deadline is None:
            deadline = math.inf if self.timeout is None else anyio.current_time() + self.timeout
        entry = _Entry(sock, deadline, state, connection_id)
        if self._loop is None:
            self._waiting[sock] = entry
            self._tasks.start_soon(self._wait, entry, name="first bytes")
        else:
            self._loop.add_reader(sock.fileno(), self._readable, entry)  # may raise: then it is not held
            self._waiting[sock] = entry
            if deadline != math.inf:
                deadlines = self._deadlines
                heapq.heappush(deadlines, (deadline, next(self._arrivals), entry))
                if len(deadlines) > 2 * len(self._waiting) + 1024:  # decided ones pile up: keep the waiting
                    self._deadlines = [item for item in deadlines if item[2].fate is None]
                    heapq.heapify(self._deadlines)
                if self._wake is not None and deadline < self._sleeping_until:
                    self._wake.set()  # the deadline task sleeps past this one
        if state is not None:
            self.parked += 1

    # -- asyncio: a reader callback per socket, one task for the deadlines --

    def _readable(self, entry: _Entry) -> None:
        # A loop callback runs outside any task: anyio (starting the
        # connection's task) asks sniffio which library runs, and under a
        # plain asyncio.run() sniffio can only tell from the current task.
        token = sniffio.current_async_library_cvar.set("asyncio")
        try:
            self._settle(entry, _ADMIT)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    def _settle(self, entry: _Entry, fate: str) -> None:
        """Decide a waiting socket's fate: admitted, closed, timed out."""
        if entry.fate is not None or self._waiting.pop(entry.sock, None) is not entry:
            return
        entry.fate = fate
        if entry.state is not None:
            self.parked -= 1
        if self._loop is None:  # its task acts once its wait ends (trio must not
            if entry.scope is not None:  # see a descriptor closed under it)
                entry.scope.cancel()
            return
        self._loop.remove_reader(entry.sock.fileno())
        self._act(entry)

    def _act(self, entry: _Entry) -> None:
        if entry.fate == _ADMIT:
            self._admit(entry.sock, entry.state, entry.connection_id)
            return
        if entry.fate == _MOVE and self._move is not None:
            self._move(entry.sock, entry.state, entry.connection_id)
            return
        if entry.fate == _TIMEOUT and entry.state is None:
            self.timed_out += 1
        elif entry.fate == _TIMEOUT:
            self.parked_timed_out += 1
        entry.sock.close()
        if self.on_drop is not None:
            self.on_drop()

    async def run(self) -> None:
        """Close sockets silent past their deadline (asyncio; on trio each
        waiting task has its own) until cancelled, then every one still
        waiting (the server ends)."""
        try:
            if self._loop is None:
                await anyio.sleep_forever()
            while True:  # with no timeout (yet: a reload may set one), the queue stays empty
                deadlines = self._deadlines
                now = anyio.current_time()
                while deadlines and (deadlines[0][2].fate is not None or deadlines[0][0] <= now):
                    self._settle(heapq.heappop(deadlines)[2], _TIMEOUT)
                # Until the first deadline, or a new one that comes sooner.
                self._sleeping_until = deadlines[0][0] if deadlines else math.inf
                self._wake = anyio.Event()
                with anyio.move_on_after(self._sleeping_until - now):
                    await self._wake.wait()
                self._wake = None
        finally:
            self.close()

    # -- elsewhere (trio): a small task per socket ----------------------------

    async def _wait(self, entry: _Entry) -> None:
        try:
            if entry.fate is None:  # else decided before this task ran
                with anyio.CancelScope(deadline=entry.deadline) as scope:
                    entry.scope = scope
                    with contextlib.suppress(
                        OSError, anyio.ClosedResourceError
                    ):  # broken: admitted, its stream says so
                        await wait_readable(entry.sock)
                entry.scope = None
                # Undecided still: readable, or its deadline passed.
                self._settle(entry, _TIMEOUT if scope.cancelled_caught else _ADMIT)
        except BaseException:  # cancelled from outside (the server ends): the socket goes too
            self._waiting.pop(entry.sock, None)
            entry.sock.close()
            raise
        self._act(entry)

    # -- all at once ----------------------------------------------------------

    def move_all(self, move: Admit) -> None:
        """Give every waiting socket to ``move`` (a hand-off to another
        process, where it waits again), which takes it over."""
        self._move = move
        for entry in list(self._waiting.values()):
            self._settle(entry, _MOVE)

    def close(self) -> None:
        """Close every waiting socket: they owe nothing and are owed nothing."""
        for entry in list(self._waiting.values()):
            self._settle(entry, _CLOSE)
