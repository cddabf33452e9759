"""A worker process: the whole service, on sockets its supervisor hands it.

The supervisor starts ``python -m sota_dispatch.serve <its own arguments>
--worker-control FD``; FD is one end of a Unix socket pair. Over it the
worker receives its slot, the restart epoch and its listening sockets,
reports ``ready`` with its addresses, answers ``stats`` (metrics text,
clusters, connection counts), obeys ``drain``, ``retire`` (stop accepting,
hand the connections that can move to the successor as ``connection``
messages, keep serving the others, drain them after the given time),
``adopt`` (serve a connection the old process handed over) and
``reload_certificates``, and sends a last ``stats`` as it exits. When the
channel ends (the supervisor died) the worker drains and exits: a worker
never outlives its supervisor for long.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..cli.build import SERVICE_KEY, ServicePlan
from ..cli.running import run
from ..errors import ConfigError, ProtocolError
from ..logs import plural, set_worker
from ..protocol.handoff import HandOff
from ..protocol.server import Server
from ..proxy.proxy import Proxy
from .channel import Channel, Message

__all__ = ["Worker", "run_worker", "service_stats"]

log = logging.getLogger("sota_dispatch.worker")


def service_stats(service: Proxy | Server) -> Message:
    """What a worker reports: its metrics text (a proxy), clusters and counts."""
    if isinstance(service, Proxy):
        from prometheus_client import generate_latest

        servers = [listener.server for listener in service.listeners]
        return {
            "metrics": generate_latest(service.metrics).decode(),
            "clusters": service.describe_clusters(),
            "connections_active": sum(s.active_connections for s in servers),
            "connections_total": sum(s.connections_total for s in servers),
            "requests": sum(listener.stats.requests for listener in service.listeners),
        }
    return {
        "metrics": "",
        "clusters": {},
        "connections_active": service.active_connections,
        "connections_total": service.connections_total,
        "requests": None,
    }


class Worker:
    """Runs ``service`` and answers its supervisor over ``channel``."""

    def __init__(self, service: Proxy | Server, channel: Channel, slot: int, epoch: int) -> None:
        self.service = service
        self.channel = channel
        self.slot = slot
        self.epoch = epoch
        self._retiring = False

    @property
    def drain_timeout(self) -> float:
        return self.service.drain_timeout

    def shutdown(self) -> None:
        self.service.shutdown()

    def reload_certificates(self) -> list[ConfigError]:
        return self.service.reload_certificates()

    async def serve(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def serve_then_stop(*, task_status: TaskStatus[Any]) -> None:
                    await self.service.serve(task_status=task_status)
                    tg.cancel_scope.cancel()  # every connection is closed: stop listening to the supervisor

                addresses = await tg.start(serve_then_stop)
                await self.channel.send({"type": "ready", "pid": os.getpid(), "addresses": addresses})
                tg.start_soon(self._obey, tg)
                task_status.started(addresses)
        finally:
            with anyio.move_on_after(2, shield=True):
                try:
                    await self.channel.send({"type": "exit", **service_stats(self.service)})
                    await self.channel.aclose()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass  # the supervisor has gone

    async def _obey(self, tg: anyio.abc.TaskGroup) -> None:
        """Carry out the supervisor's requests until the channel ends; then
        drain (a worker does not outlive its supervisor for long)."""
        try:
            while True:
                message, sockets = await self.channel.receive()
                await self._carry_out(message, sockets, tg)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ProtocolError, OSError) as exc:
            log.warning("worker %d: supervisor gone (%s); draining", self.slot, exc or type(exc).__name__)
            self.service.shutdown()

    async def _carry_out(self, message: Message, sockets: list[socket.socket], tg: anyio.abc.TaskGroup) -> None:
        kind = message.get("type")
        if kind != "adopt":
            for sock in sockets:  # only an adoption carries a descriptor
                sock.close()
        if kind == "stats":
            await self.channel.send({"type": "stats", "id": message.get("id"), **service_stats(self.service)})
        elif kind == "drain":
            if message.get("drain_timeout") == 0 and isinstance(self.service, Proxy):
                self.service.quit()  # the admin's /quitquitquit
            else:
                self.service.shutdown()
        elif kind == "drain_listeners":
            if isinstance(self.service, Proxy):
                await self.service.drain_listeners()
            await self.channel.send({"type": "listeners_drained", "id": message.get("id")})
        elif kind == "retire":
            if not self._retiring:
                self._retiring = True
                tg.start_soon(self._retire, float(message.get("after", 60.0)), bool(message.get("handoff")))
        elif kind == "adopt":
            self._adopt(message, sockets)
        elif kind == "reload_config":
            await self.channel.send({"type": "config_reloaded", "id": message.get("id"), **await self._reload()})
        elif kind == "reload_certificates":
            problems = self.service.reload_certificates()
            reply = {"type": "reloaded", "id": message.get("id"), "problems": [str(p) for p in problems]}
            await self.channel.send(reply)
        else:
            log.warning("worker %d: unknown control message %r", self.slot, kind)

    async def _reload(self) -> dict[str, Any]:
        if not isinstance(self.service, Proxy):
            return {"error": "a local service has no config file"}
        try:
            report = await self.service.reload_config()
        except ConfigError as exc:
            return {"error": str(exc), "version": self.service.config_state.version}
        return {"version": report["version"], "changed": report["changed"]}

    async def _retire(self, after: float, handoff: bool) -> None:
        """Stop accepting (a successor accepts on the same sockets); with
        ``handoff``, move every connection that can move to the successor;
        serve the others for ``after`` seconds at most, then drain them."""
        self.service.stop_accepting()
        if handoff:
            if isinstance(self.service, Proxy):
                moving = self.service.hand_off(self._send_connection)
            else:
                moving = self.service.hand_off(partial(self._send_connection, SERVICE_KEY))
            log.info("worker %d: moving %s to the new process", self.slot, plural(moving, "connection"))
        await anyio.sleep(after)
        self.service.shutdown()

    async def _send_connection(self, listener: str, moving: HandOff) -> None:
        """One connection to the supervisor, on its way to the successor."""
        message = {
            "type": "connection",
            "listener": listener,
            "unread": base64.b64encode(moving.unread).decode(),
            "state": dict(moving.state),
            "peer": moving.remote_address,
        }
        await self.channel.send(message, [moving.fd])

    def _adopt(self, message: Message, sockets: list[socket.socket]) -> None:
        """Serve a connection a worker of the old process handed over."""
        if len(sockets) != 1:
            for sock in sockets:
                sock.close()
            return
        sock = sockets[0]
        try:
            unread = base64.b64decode(str(message.get("unread", "")))
            state = message.get("state")
            if not isinstance(state, dict):
                raise ValueError("no state")
            if isinstance(self.service, Proxy):
                taken = self.service.adopt(str(message.get("listener")), sock, unread, state)
            else:
                taken = self.service.adopt(sock, unread, state)
        except (ValueError, TypeError) as exc:
            log.warning("worker %d: a handed-over connection was malformed: %s", self.slot, exc)
            taken = False
        if not taken:
            log.warning("worker %d: could not take over a connection (listener %s)", self.slot, message.get("listener"))
            sock.close()


async def run_worker(plan: ServicePlan, control_fd: int) -> int:
    """The worker's main: take the sockets, build the service, run it."""
    channel = await Channel.from_socket(socket.socket(fileno=control_fd))
    message, _ = await channel.receive()
    if message.get("type") != "start":
        raise ProtocolError(f"a worker starts with 'start', not {message.get('type')!r}")
    sockets = await channel.receive_sockets(message)
    by_key: dict[str, list[socket.socket]] = {}
    for key, sock in zip(message["keys"], sockets, strict=True):
        by_key.setdefault(key, []).append(sock)
    slot, epoch = int(message["slot"]), int(message["epoch"])
    set_worker(slot)
    worker = Worker(plan.build(by_key, admin=False), channel, slot, epoch)

    def started(addresses: Any) -> None:
        log.debug("worker %d (epoch %d, pid %d) serving %s", slot, epoch, os.getpid(), addresses)

    return await run(worker, started, plan.where)
