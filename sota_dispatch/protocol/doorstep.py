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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections import deque
from collections.abc import Awaitable, Callable

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


class _Entry:
    """One waiting socket: its deadline and, once decided, its fate."""

    __slots__ = ("deadline", "fate", "scope", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.fate: str | None = None
        self.scope: anyio.CancelScope | None = None  # its task's wait (trio)


class Doorstep:
    """Sockets waiting for their first bytes (see the module docstring).

    ``admit(sock)`` is called once a socket is readable: the caller takes
    it over. ``timeout``: seconds a socket may stay silent (None: no limit).
    Run :meth:`run` in a task for the deadlines; :meth:`close` closes every
    socket still waiting.
    """

    def __init__(self, admit: Callable[[socket.socket], None], timeout: float | None, tasks: TaskGroup) -> None:
        self._admit = admit
        self.timeout = timeout
        self._tasks = tasks
        self._waiting: dict[socket.socket, _Entry] = {}
        #: asyncio: every entry in order of arrival, hence of deadline (one
        #: timeout), for :meth:`run`; admitted ones are skipped there.
        self._deadlines: deque[_Entry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        if sniffio.current_async_library() == "asyncio":
            self._loop = asyncio.get_running_loop()
        self._wake: anyio.Event | None = None
        #: Sockets closed silent at their deadline, since the start.
        self.timed_out = 0
        #: Called after a socket leaves without being admitted.
        self.on_drop: Callable[[], None] | None = None
        self._move: Callable[[socket.socket], None] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def hold(self, sock: socket.socket) -> None:
        """Keep ``sock`` (connected, non-blocking) until it is readable."""
        entry = _Entry(sock, math.inf if self.timeout is None else anyio.current_time() + self.timeout)
        if self._loop is None:
            self._waiting[sock] = entry
            self._tasks.start_soon(self._wait, entry, name="first bytes")
            return
        self._loop.add_reader(sock.fileno(), self._readable, entry)  # may raise: then it is not held
        self._waiting[sock] = entry
        if self.timeout is not None:
            deadlines = self._deadlines
            deadlines.append(entry)
            if len(deadlines) > 2 * len(self._waiting) + 1024:  # admitted ones pile up: keep the waiting
                self._deadlines = deque(e for e in deadlines if e.fate is None)
            if self._wake is not None:
                self._wake.set()  # the deadline task sleeps without a deadline

    # -- asyncio: a reader callback per socket, one task for the deadlines --

    def _readable(self, entry: _Entry) -> None:
        self._settle(entry, _ADMIT)

    def _settle(self, entry: _Entry, fate: str) -> None:
        """Decide a waiting socket's fate: admitted, closed, timed out."""
        if entry.fate is not None or self._waiting.pop(entry.sock, None) is not entry:
            return
        entry.fate = fate
        if self._loop is None:  # its task acts once its wait ends (trio must not
            if entry.scope is not None:  # see a descriptor closed under it)
                entry.scope.cancel()
            return
        self._loop.remove_reader(entry.sock.fileno())
        self._act(entry)

    def _act(self, entry: _Entry) -> None:
        if entry.fate == _ADMIT:
            self._admit(entry.sock)
            return
        if entry.fate == _MOVE and self._move is not None:
            self._move(entry.sock)
            return
        if entry.fate == _TIMEOUT:
            self.timed_out += 1
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
                while deadlines and (deadlines[0].fate is not None or deadlines[0].deadline <= now):
                    self._settle(deadlines.popleft(), _TIMEOUT)
                if deadlines:
                    await anyio.sleep(deadlines[0].deadline - now)
                else:
                    self._wake = anyio.Event()
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

    def move_all(self, move: Callable[[socket.socket], None]) -> None:
        """Give every waiting socket to ``move`` (a hand-off to another
        process, where it waits again), which takes it over."""
        self._move = move
        for entry in list(self._waiting.values()):
            self._settle(entry, _MOVE)

    def close(self) -> None:
        """Close every waiting socket: they owe nothing and are owed nothing."""
        for entry in list(self._waiting.values()):
            self._settle(entry, _CLOSE)
