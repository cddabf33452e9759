"""The supervisor: worker processes on shared listening sockets, restarted when they die.

It binds every listener's sockets (one per worker slot, SO_REUSEPORT; see
:mod:`.sockets`) or takes them over from the process it replaces (hot
restart, :mod:`.restart`), starts the workers, hands each its sockets,
restarts a worker that exits unasked (with a backoff when one keeps dying),
forwards SIGTERM/SIGINT (drain), a second signal (stop now) and SIGHUP
(certificates), and serves the admin endpoint for all workers
(:mod:`.admin`). What each worker holds on its own (health checks,
breakers, outlier ejection, pools) is per worker; counters are summed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskGroup, TaskStatus

from ..admin.endpoint import AdminEndpoint
from ..admin.server import WaitingConnections
from ..cli.args import UsageError
from ..cli.build import ServicePlan
from ..config.model import ProxyConfig
from ..errors import ConfigError, ProtocolError
from ..logs import plural
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from ..proxy.reload import ConfigState
from .admin import SupervisorAdminConnection
from .channel import Channel, Message
from .child import WorkerProcess
from .merge import MetricsSum
from .operations import AdminOperations
from .restart import ADMIN_KEY, Predecessor, RestartSocket, listener_keys
from .sockets import HAS_REUSEPORT, ListenSocket, bind_group, slot_sockets

__all__ = ["READY_TIMEOUT", "Supervisor"]

log = logging.getLogger("sota_dispatch.supervisor")

#: Seconds a new worker has to report ready.
READY_TIMEOUT = 30.0
#: Seconds between the supervisor's polls of its workers' counters (what a
#: worker that crashes loses from the summed counters at most).
POLL_INTERVAL = 2.0
#: A worker that dies within this many seconds of its start is restarted
#: after a growing delay (0.5 s, doubling, at most 30 s).
_SHORT_LIFE = 5.0


class Supervisor(AdminOperations):
    """Runs ``plan`` in ``workers`` processes (see the module docstring).

    ``argv`` are the command's own arguments: each worker runs the same
    command with ``--worker-control``. ``restart_socket``: take over from
    the process serving that Unix socket, then serve it for the next one.
    """

    def __init__(
        self,
        plan: ServicePlan,
        argv: Sequence[str],
        *,
        workers: int = 1,
        restart_socket: str | None = None,
        restart_drain_time: float = 60.0,
        handoff: bool = True,
    ) -> None:
        self.plan = plan
        self.argv = list(argv)
        self.workers = workers
        self.restart_socket = restart_socket
        self.restart_drain_time = restart_drain_time
        #: Whether, when this process replaces another, it asks for the
        #: other's open connections (see :mod:`sota_dispatch.protocol.handoff`).
        self.handoff = handoff
        #: The process that replaced this one, while connections move to it.
        self.successor: Channel | None = None
        self._adopter = 0
        #: 0 for a fresh start, one more than its predecessor's after a hot restart.
        self.epoch = 0
        self.started_at = time.time()
        self.sockets: list[ListenSocket] = []
        self.live: dict[int, WorkerProcess] = {}
        #: Workers started again after one exited unasked.
        self.restarts = 0
        #: Counters of workers that have exited.
        self.retired = MetricsSum()
        self.admin: AdminEndpoint | None = None
        self.state = "starting"
        #: Reloads, as the workers reported them.
        self.config_state = ConfigState(source=plan.args.config if plan.config is not None else None)
        self._draining = False
        self._stopped = anyio.Event()
        self._tg: TaskGroup | None = None
        self._failed_start: str | None = None
        #: Set when a worker gets ready or fails to start (what _wait_ready waits for).
        self._changed = anyio.Event()
        #: Set once draining or retiring begins.
        self._drained = anyio.Event()

    # -- what the runner (cli.running.run) and the admin need ------------

    @property
    def config(self) -> ProxyConfig | None:
        return self.plan.config

    @property
    def drain_timeout(self) -> float:
        return self.plan.drain_timeout

    @property
    def draining(self) -> bool:
        return self._draining or self._listeners_drained

    def shutdown(self) -> None:
        """Drain every worker, then exit."""
        self._stop_workers({"type": "drain"}, "draining")

    def retire(self, successor: Channel | None = None) -> None:
        """A successor accepts on our sockets now: workers stop accepting,
        move the connections that can move to ``successor`` (if given),
        serve the others up to the restart drain time, then drain."""
        self.successor = successor
        message = {"type": "retire", "after": self.restart_drain_time, "handoff": successor is not None}
        self._stop_workers(message, "retiring")

    async def wait_stopped(self) -> None:
        """Until every worker has exited after a drain or a retire."""
        await self._stopped.wait()

    async def _forward(self, message: Message, sockets: list[socket.socket]) -> None:
        """A connection one of our workers handed off: on to the successor."""
        try:
            name = message.get("listener")
            keys = [key for key in listener_keys(self.plan) if key.partition("@")[0] == name]
            if self.successor is None or len(sockets) != 1 or not keys:
                log.warning("a handed-off connection has nowhere to go (listener %s); closing it", name)
                return
            await self.successor.send({**message, "type": "connection", "key": keys[0]}, sockets)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            log.warning("the new process went away; a handed-off connection is lost: %r", exc)
            self.successor = None
        finally:
            for sock in sockets:
                sock.close()

    async def adopt_connection(self, message: Message, sockets: list[socket.socket]) -> None:
        """A connection the old process handed over: to one of our workers, in turn."""
        try:
            key = message.get("key")
            ready = [w for w in sorted(self.live.values(), key=lambda w: w.slot) if w.state == "ready"]
            if key not in listener_keys(self.plan) or len(sockets) != 1 or not ready:
                log.warning("cannot take over a connection of %s; closing it", key)
                return
            self._adopter += 1
            worker = ready[self._adopter % len(ready)]
            listener = str(key).partition("@")[0]
            await worker.channel.send({**message, "type": "adopt", "listener": listener}, sockets)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            log.warning("a worker went away; a handed-over connection is lost: %r", exc)
        finally:
            for sock in sockets:
                sock.close()

    def reload_certificates(self) -> list[ConfigError]:
        """Ask every worker to read its TLS files again (each logs its problems)."""
        if self._tg is not None:
            for worker in list(self.live.values()):
                self._tg.start_soon(worker.ask, {"type": "reload_certificates"})
        return []

    @property
    def reloadable(self) -> bool:
        return self.plan.reloadable

    async def reload_config(self) -> dict[str, Any]:
        """Every worker reads the config file again and applies it (SIGHUP,
        ``POST /reload``). Each checks it the same way, so a file one
        refuses, all refuse; raises :class:`~sota_dispatch.ConfigError`
        naming each worker's problem."""
        if not self.plan.reloadable:
            raise ConfigError("", "this proxy was not started from a config file: there is nothing to reload")
        applied: list[dict[str, Any]] = []
        problems: list[ConfigError] = []
        for worker in list(self.live.values()):
            reply = await worker.ask({"type": "reload_config"}, timeout=10.0)
            if reply is None:
                problems.append(ConfigError("", f"worker {worker.slot} (pid {worker.pid}) did not answer"))
            elif reply.get("error"):
                problems.append(ConfigError("", f"worker {worker.slot}: {reply['error']}"))
            else:
                applied.append(
                    {"worker": worker.slot, "version": reply.get("version"), "changed": reply.get("changed")}
                )
        if problems:
            error = ConfigError.combine(problems)
            self.config_state.failed(error)
            log.error("config not reloaded everywhere: %s", error)
            raise error
        changed = applied[0]["changed"] if applied else "no worker running"
        self.config_state.applied(str(changed))
        workers = plural(len(applied), "worker")
        log.info("config version %d applied in %s: %s", self.config_state.version, workers, changed)
        return {"version": self.config_state.version, "changed": changed, "workers": applied}

    def config_status(self) -> dict[str, Any]:
        return self.config_state.describe()

    async def reload_everywhere(self) -> list[str]:
        """As :meth:`reload_certificates`, waiting for the workers' answers."""
        problems: list[str] = []
        for worker in list(self.live.values()):
            reply = await worker.ask({"type": "reload_certificates"})
            if reply is None:
                problems.append(f"worker {worker.slot} (pid {worker.pid}) did not answer")
            else:
                problems += [f"worker {worker.slot}: {p}" for p in reply.get("problems", [])]
        return problems

    def started(self, addresses: Any) -> None:
        items = addresses.items() if isinstance(addresses, dict) else [("", addresses)]
        for name, address in items:
            log.info("listening on %s%s", address, f" (listener {name})" if name else "")
        pids, workers = ", ".join(str(w.pid) for w in self.live.values()), plural(self.workers, "worker")
        log.info("supervisor %d: %s (pids %s), restart epoch %d", os.getpid(), workers, pids, self.epoch)
        if self.admin is not None:
            log.info("admin endpoint on http://%s/", self.admin.address)

    # -- running ---------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        predecessor = None
        if self.restart_socket is not None:
            predecessor = await Predecessor.find(self.restart_socket)
        try:
            if predecessor is not None:
                self.epoch = predecessor.epoch + 1
                self.sockets = predecessor.sockets
            self._bind_missing()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._start_admin(tg)
                for slot in range(self.workers):
                    tg.start_soon(self._keep, slot)
                addresses = await self._wait_ready()
                offer = None
                if self.restart_socket is not None:
                    offer = RestartSocket(self.restart_socket, self)
                    try:
                        await offer.bind()  # before the old process retires: failing now leaves it serving
                    except OSError as exc:
                        raise UsageError(f"--restart-socket {self.restart_socket}: {exc.strerror or exc}") from None
                if predecessor is not None:
                    await predecessor.retire(self.handoff)
                    tg.start_soon(predecessor.forward, self.adopt_connection)
                    predecessor = None  # the forwarding task closes it
                if offer is not None:
                    await tg.start(offer.serve)
                self.state = "live"
                task_status.started(addresses)
                tg.start_soon(self._poll)
                await self._stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            if predecessor is not None:
                await predecessor.abandon()  # we failed: it keeps serving
            with anyio.CancelScope(shield=True):
                await self._kill_all()
            for bound in self.sockets:
                bound.sock.close()

    def _bind_missing(self) -> None:
        """Bind every socket not taken over; close the taken-over sockets
        this configuration no longer has (their listener is gone)."""
        wanted = listener_keys(self.plan)
        for gone in (s for s in self.sockets if s.key not in wanted):
            log.info("hot restart: closing %s (not in this configuration)", gone.key)
            gone.sock.close()
        self.sockets = [s for s in self.sockets if s.key in wanted]
        for key, address in wanted.items():
            have = [s for s in self.sockets if s.key == key]
            if have and not HAS_REUSEPORT:
                continue  # one shared socket serves every worker
            slots = 1 if key.startswith(ADMIN_KEY) else self.workers
            missing = sorted(set(range(slots)) - {s.slot for s in have})
            try:
                for slot in missing:
                    have += bind_group(key, address, range(slot, slot + 1), have)
            except OSError as exc:
                raise UsageError(f"cannot listen on {address}: {exc.strerror or exc}") from None
            finally:
                self.sockets += [s for s in have if s not in self.sockets]

    async def _start_admin(self, tg: TaskGroup) -> None:
        if self.plan.config is None or self.plan.config.admin is None:
            return
        key = next(k for k in listener_keys(self.plan) if k.startswith(ADMIN_KEY))
        sockets = [s.sock.dup() for s in self.sockets if s.key == key]

        def connection(stream: ByteStream, context: ConnectionContext, waiting: WaitingConnections) -> Dispatcher:
            return SupervisorAdminConnection(stream, context, supervisor=self, waiting=waiting)

        self.admin = AdminEndpoint(self.plan.config.admin, connection, sockets=sockets)
        await tg.start(self.admin.serve)

    def describe_clusters(self) -> dict[str, Any]:
        """``/clusters``: each worker's view (from its last report)."""
        return {
            "workers": [
                {"slot": w.slot, "pid": w.pid, "clusters": w.last.get("clusters", {})}
                for w in sorted(self.live.values(), key=lambda w: w.slot)
            ]
        }

    async def _wait_ready(self) -> Any:
        """Wait for every worker's first ``ready``; its addresses. A worker
        that exits first fails the start (UsageError: the reason is in its log)."""
        with anyio.move_on_after(READY_TIMEOUT):
            while len(self.live) < self.workers or not all(w.ready.is_set() for w in self.live.values()):
                if self._failed_start is not None:
                    raise UsageError(self._failed_start)
                self._changed = anyio.Event()
                await self._changed.wait()  # a worker got ready, or failed
            return next(iter(self.live.values())).addresses
        raise UsageError(f"the workers did not start within {READY_TIMEOUT:.0f}s")

    async def _keep(self, slot: int) -> None:
        """Run worker ``slot``, again and again until draining."""
        delay = 0.5
        while not self._draining:
            began = time.monotonic()
            code = await self._run_worker(slot)
            if self._draining:
                break
            last = self.live.get(slot)
            if self.state == "starting" and (last is None or not last.ready.is_set()):
                self._failed_start = f"worker {slot} exited with code {code} before it was ready (see its log above)"
                self._changed.set()
                return
            self.restarts += 1
            if time.monotonic() - began < _SHORT_LIFE:
                log.error("worker %d exited with code %s soon after its start; restarting in %.1fs", slot, code, delay)
                with anyio.move_on_after(delay):
                    await self._drained.wait()  # a drain ends the wait
                delay = min(delay * 2, 30.0)
            else:
                log.error("worker %d exited with code %s; restarting it", slot, code)
                delay = 0.5
        self.live.pop(slot, None)
        if not self.live and self._draining:
            self._stopped.set()

    async def _run_worker(self, slot: int) -> int | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "sota_dispatch.serve", *self.argv, "--worker-control", str(theirs.fileno())]
        try:
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
        finally:
            theirs.close()
        channel = await Channel.from_socket(ours)
        worker = WorkerProcess(slot, self.epoch, process, channel)
        self.live[slot] = worker
        mine = slot_sockets(self.sockets, slot, self.workers)
        mine = [s for s in mine if not s.key.startswith(ADMIN_KEY)]
        try:
            message = {
                "type": "start",
                "slot": slot,
                "epoch": self.epoch,
                "keys": [s.key.partition("@")[0] for s in mine],
            }
            await channel.send_sockets(message, [s.sock for s in mine])
            await self._listen(worker)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            log.warning("worker %d: control channel failed: %s", slot, exc)
        finally:
            with anyio.CancelScope(shield=True):
                await channel.aclose()
                code = await process.wait()
                self.retired.add(worker.last.get("metrics", ""), gauges=False)
                worker.state = "exited"
        return code

    async def _listen(self, worker: WorkerProcess) -> None:
        """A worker's messages until its channel ends."""
        while True:
            try:
                message, sockets = await worker.channel.receive()
            except (anyio.EndOfStream, ProtocolError):
                return
            kind = message.get("type")
            if kind == "connection":
                await self._forward(message, sockets)
                continue
            for sock in sockets:  # nothing else carries descriptors
                sock.close()
            if kind == "ready":
                if self.state != "starting":
                    log.info("worker %d ready again (pid %d)", worker.slot, worker.pid)
                worker.addresses = message.get("addresses")
                worker.state = "ready" if not self._draining else worker.state
                worker.ready.set()
                self._changed.set()
            elif kind == "exit":
                worker.last = message
            elif kind == "stats":
                worker.last = message
                worker.answered(message)
            else:
                worker.answered(message)

    async def _poll(self) -> None:
        """Keep each worker's last counters fresh (see :data:`POLL_INTERVAL`)."""
        while True:
            await anyio.sleep(POLL_INTERVAL)
            for worker in list(self.live.values()):
                if worker.ready.is_set():
                    await worker.ask({"type": "stats"})

    async def gather(self) -> list[WorkerProcess]:
        """Ask every live worker for fresh stats; the workers (each with its last report)."""
        workers = list(self.live.values())
        async with anyio.create_task_group() as tg:
            for worker in workers:
                if worker.ready.is_set():
                    tg.start_soon(worker.ask, {"type": "stats"})
        return workers

    async def metrics(self) -> bytes:
        """``/metrics``: every worker's metrics summed, and the supervisor's own."""
        workers = await self.gather()
        total = self.retired.copy()
        for worker in workers:
            if worker.state != "exited":
                total.add(worker.last.get("metrics", ""))
        own = "\n".join(
            [
                "# HELP sota_workers Worker processes running",
                "# TYPE sota_workers gauge",
                f"sota_workers {len(self.live)}",
                "# HELP sota_worker_restarts_total Workers started again after one exited unasked",
                "# TYPE sota_worker_restarts_total counter",
                f"sota_worker_restarts_total {self.restarts}",
                "# HELP sota_restart_epoch Hot restarts since the first process (0: none)",
                "# TYPE sota_restart_epoch gauge",
                f"sota_restart_epoch {self.epoch}",
                "",
            ]
        )
        total.add(own)
        return total.render()

    def _stop_workers(self, message: Message, state: str) -> None:
        if self._draining:
            return
        self._draining = True
        self._drained.set()
        self.state = state
        if self.admin is not None and state == "retiring":
            self.admin.server.stop_accepting()  # the successor's admin answers now
        if not self.live:
            self._stopped.set()
        if self._tg is not None:
            for worker in list(self.live.values()):
                worker.state = state
                self._tg.start_soon(_send_quietly, worker.channel, message)

    async def _kill_all(self) -> None:
        for worker in list(self.live.values()):
            if worker.process.returncode is None:
                log.warning("worker %d (pid %d): stopping now", worker.slot, worker.pid)
                worker.process.kill()


async def _send_quietly(channel: Channel, message: Message) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await channel.send(message)  # failing: it has exited, nothing to tell
