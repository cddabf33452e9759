"""Hot restart: a new supervisor takes the listening sockets of the running one.

Envoy's hot restart, over a Unix socket whose path both are given
(``--restart-socket``). The new process connects; the old one sends every
listening socket it holds (SCM_RIGHTS) with its restart epoch; the new one
starts its workers on them, and once they are ready tells the old one to
retire: its workers stop accepting and keep serving their open connections
(up to ``--restart-drain-time``), then drain and exit. The sockets never
close in between, so a client is never refused. The new process then
serves the path itself (bound beside it and renamed over it, so there is
no moment without one), ready for the next restart.

Only a process of the same user may take over (the socket file is 0600 and
the peer's credentials are checked where the OS tells them): whoever gets
the sockets gets the traffic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskStatus, UNIXSocketStream

from ..cli.build import ServicePlan
from ..errors import ProtocolError
from ..logs import plural
from .channel import Channel, Message
from .sockets import ListenSocket
from .view import SupervisorView

__all__ = ["ADMIN_KEY", "Predecessor", "RestartSocket", "listener_keys"]

log = logging.getLogger("sota_dispatch.restart")

#: The admin endpoint's socket key prefix (listeners use their names).
ADMIN_KEY = "admin"
#: Seconds a successor has to start its workers before we give up on it.
_SUCCESSOR_TIMEOUT = 120.0


def listener_keys(plan: ServicePlan) -> dict[str, str]:
    """``{key: address}`` of every socket a plan listens on. A key names the
    listener and its configured address, so a socket is taken over only by
    the listener it was bound for, on the address it was bound to."""
    keys = {f"{name}@{address}": address for name, address in plan.addresses.items()}
    if plan.admin_address is not None:
        keys[f"{ADMIN_KEY}@{plan.admin_address}"] = plan.admin_address
    return keys


class Predecessor:
    """The running process we take over from."""

    def __init__(self, channel: Channel, epoch: int, sockets: list[ListenSocket]) -> None:
        self.channel = channel
        self.epoch = epoch
        self.sockets = sockets

    @classmethod
    async def find(cls, path: str) -> Predecessor | None:
        """Connect to the process serving ``path`` and take its sockets;
        None if no process serves it (a first start)."""
        try:
            channel = await Channel.connect(path)
        except OSError:
            return None
        try:
            await channel.send({"type": "hello", "pid": os.getpid()})
            message, _ = await channel.receive()
            if message.get("type") != "sockets":
                raise ProtocolError(f"the running process refused the hot restart: {message.get('reason', message)}")
            sockets = await channel.receive_sockets(message)
            bound = [
                ListenSocket(key, int(slot), sock)
                for key, slot, sock in zip(message["keys"], message["slots"], sockets, strict=True)
            ]
        except BaseException:
            await channel.aclose()
            raise
        log.info("hot restart: took %d listening sockets from epoch %d", len(bound), message["epoch"])
        return cls(channel, int(message["epoch"]), bound)

    async def retire(self, handoff: bool) -> None:
        """Our workers accept now: the old process stops accepting, and
        with ``handoff`` sends us the connections that can move."""
        try:
            await self.channel.send({"type": "retire", "handoff": handoff})
            with anyio.move_on_after(5):
                await self.channel.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ProtocolError, OSError) as exc:
            log.warning("hot restart: the old process did not confirm it retires: %r", exc)

    async def forward(self, adopt: Callable[[Message, list[socket.socket]], Awaitable[None]]) -> None:
        """Take the connections the old process hands over (each to
        ``adopt``) until it has exited."""
        moved = 0
        try:
            while True:
                message, sockets = await self.channel.receive()
                if message.get("type") == "connection":
                    moved += 1
                    await adopt(message, sockets)
                else:
                    for sock in sockets:
                        sock.close()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ProtocolError, OSError):
            pass  # the old process has exited
        finally:
            log.info("hot restart: %s taken over from epoch %d", plural(moved, "connection"), self.epoch)
            with anyio.CancelScope(shield=True):
                await self.channel.aclose()

    async def abandon(self) -> None:
        """We failed to start: the old process keeps serving."""
        with anyio.CancelScope(shield=True):
            await self.channel.aclose()


class RestartSocket:
    """Serves ``path`` for a successor, on behalf of ``supervisor``."""

    def __init__(self, path: str, supervisor: SupervisorView) -> None:
        self.path = path
        self.supervisor = supervisor
        self._busy = False
        self._inode: int | None = None
        self._listener: SocketListener | None = None
        self._temporary: str | None = None

    async def bind(self) -> None:
        """Listen beside the path (``PATH.<pid>``, 0600) before anything is
        handed over: a path we cannot serve fails the start while the old
        process still serves. Raises :class:`OSError`."""
        temporary = f"{self.path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        self._listener = await anyio.create_unix_listener(temporary)
        os.chmod(temporary, 0o600)
        self._inode = os.stat(temporary).st_ino
        self._temporary = temporary

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take the path over (renamed into place: never a moment without a
        process serving it) and serve successors until cancelled."""
        if self._listener is None:
            await self.bind()
        listener = self._listener
        assert listener is not None
        assert self._temporary is not None
        os.replace(self._temporary, self.path)
        try:
            async with listener:
                task_status.started()
                await listener.serve(self._successor)
        finally:
            self._unlink()

    def _unlink(self) -> None:
        """Remove the path if it is still ours (a successor renames its own over it)."""
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    async def _successor(self, stream: SocketStream) -> None:
        assert isinstance(stream, UNIXSocketStream)
        channel = Channel(stream)
        try:
            with anyio.fail_after(10):
                hello, _ = await channel.receive()
            refusal = _refusal(stream, hello, self.supervisor.draining or self._busy)
            if refusal is not None:
                log.warning("hot restart refused: %s", refusal)
                await channel.send({"type": "refused", "reason": refusal})
                return
            self._busy = True
            try:
                await self._hand_over(channel, hello)
            finally:
                self._busy = False
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ProtocolError, OSError) as exc:
            log.warning("hot restart: the new process went away (%r); still serving", exc)
        finally:
            await channel.aclose()

    async def _hand_over(self, channel: Channel, hello: dict[str, Any]) -> None:
        supervisor = self.supervisor
        sockets = supervisor.sockets
        log.info("hot restart: handing %d listening sockets to pid %s", len(sockets), hello.get("pid"))
        message = {
            "type": "sockets",
            "epoch": supervisor.epoch,
            "keys": [s.key for s in sockets],
            "slots": [s.slot for s in sockets],
        }
        await channel.send_sockets(message, [s.sock for s in sockets])
        with anyio.fail_after(_SUCCESSOR_TIMEOUT):
            reply, _ = await channel.receive()
        if reply.get("type") == "retire":
            log.info("hot restart: pid %s serves now; retiring", hello.get("pid"))
            supervisor.retire(channel if reply.get("handoff") else None)
            await channel.send({"type": "retiring"})
            await supervisor.wait_stopped()  # the channel carries our connections until then


def _refusal(stream: UNIXSocketStream, hello: dict[str, Any], busy: bool) -> str | None:
    """Why a would-be successor is refused (None: it is not)."""
    if hello.get("type") != "hello":
        return f"expected hello, got {hello.get('type')!r}"
    if busy:
        return "this process is already handing over or draining"
    raw = stream.extra(SocketAttribute.raw_socket)
    if hasattr(socket, "SO_PEERCRED"):
        creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            return f"the new process runs as uid {uid}, not {os.getuid()}"
    return None
