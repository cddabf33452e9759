"""The bundled proxy: listeners, client connections, and the whole process.

:class:`Proxy` runs a :class:`~sota_dispatch.ProxyConfig`: one
:class:`~sota_dispatch.Server` per listener, the clusters and their
upstream connections, and one timer task. Each client connection is a
:class:`ProxyConnection`: it decodes the requests of a read batch with the
protocol's codec, answers heartbeats itself, routes every request and
starts its first try, all without awaiting; the upstream connections'
readers write the answers back. It knows the protocol only through its
:class:`~sota_dispatch.ProxyHooks`.

Errors are replies: no route, no healthy upstream, overflow, timeout, an
upstream reset each end the request with the protocol's own error reply,
and the client connection stays up. On shutdown, listeners stop accepting,
client connections stop reading and finish their requests in flight, up to
the drain timeout.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskStatus

from ..cluster.balancers import Endpoint
from ..cluster.checks import run_health_checks
from ..cluster.cluster import Cluster, Pool
from ..cluster.stats import ListenerStats
from ..config.model import ClusterConfig, ListenerConfig, ProxyConfig
from ..errors import ConfigError, ProtocolError, SotaError
from ..io.address import is_loopback
from ..io.budget import BufferBudget
from ..io.outbox import Outbox
from ..io.transport import input_queued
from ..logs import RateLimitedLog
from ..protocol.codec import Failure, ProxyCodec, ProxyHooks
from ..protocol.dispatcher import ConnectionContext, Dispatcher
from ..protocol.registry import ProtocolInfo, available_protocols, get_protocol
from ..protocol.server import Server
from ..protocol.sniff import Match
from .exchange import Exchange, start_try
from .routing import Route
from .timers import TimerQueue

__all__ = ["AUTO", "Listener", "Proxy", "ProxyConnection", "check_protocols"]

log = logging.getLogger(__name__)

#: The listener protocol that detects each connection's protocol.
AUTO = "auto"
#: Bytes read at most while detecting a connection's protocol.
MAX_SNIFF = 64 * 1024

#: Admin connections served at once (a scrape or a curl needs one); of
#: these, at most ``admin.MAX_WAITING`` may wait for their request head.
ADMIN_MAX_CONNECTIONS = 64


def check_protocols(config: ProxyConfig) -> dict[str, ProtocolInfo | None]:
    """Each listener's protocol, checked against what is installed.

    The protocol must exist and have proxy hooks; the listener's options
    and the options and pool mode of every cluster it routes to must suit
    the protocol (for ``auto``, every protocol it may detect). Returns
    ``{listener name: ProtocolInfo}`` (None for ``auto``); raises
    :class:`~sota_dispatch.ConfigError` naming the field.
    """
    result: dict[str, ProtocolInfo | None] = {}
    cluster_index = {cluster.name: j for j, cluster in enumerate(config.clusters)}
    for i, listener in enumerate(config.listeners):
        path = f"listeners[{i}]"
        if listener.protocol == AUTO:
            candidates = auto_candidates()
            if not candidates:
                raise ConfigError(f"{path}.protocol", "auto needs an installed protocol with proxy hooks; none is")
            if listener.options:
                raise ConfigError(f"{path}.options", "options need a named protocol, not auto")
            result[listener.name] = None
            infos = [info for _, info in candidates]
        else:
            try:
                info = get_protocol(listener.protocol)
            except SotaError as exc:
                raise ConfigError(f"{path}.protocol", str(exc)) from None
            if info.proxy_hooks is None:
                proxiable = ", ".join(name for name, _ in auto_candidates()) or "none"
                raise ConfigError(
                    f"{path}.protocol",
                    f"protocol {info.name!r} cannot be proxied (no proxy hooks); proxiable: {proxiable}",
                )
            for name, problem in info.proxy_hooks.option_errors(listener.options).items():
                raise ConfigError(f"{path}.options.{name}", problem)
            result[listener.name] = info
            infos = [info]
        for route in listener.routes:
            j = cluster_index[route.cluster]
            _check_cluster(config.clusters[j], f"clusters[{j}]", infos, listener.name)
    return result


def _check_cluster(cluster: ClusterConfig, path: str, infos: list[ProtocolInfo], listener: str) -> None:
    for info in infos:
        hooks = info.proxy_hooks
        assert hooks is not None
        mode = cluster.pool.mode
        if mode is not None and mode not in hooks.pool_modes:
            modes = ", ".join(sorted(hooks.pool_modes))
            raise ConfigError(
                f"{path}.pool.mode", f"{info.name} (listener {listener}) cannot use {mode} pools; it can use {modes}"
            )
        for name, problem in hooks.option_errors(cluster.options, upstream=True).items():
            raise ConfigError(f"{path}.options.{name}", f"{problem} (for {info.name}, listener {listener})")


def auto_candidates() -> list[tuple[str, ProtocolInfo]]:
    """Installed protocols with proxy hooks and a sniffer, for ``auto``."""
    found = []
    for name in available_protocols():
        try:
            info = get_protocol(name)
        except SotaError as exc:
            log.warning("protocol %s is not available for auto-detection: %s", name, exc)
            continue
        if info.proxy_hooks is not None and info.sniffer is not None:
            found.append((name, info))
    return found


def _shed(holder: object) -> None:
    """Close a connection the buffer budget sheds (it holds the most)."""
    assert isinstance(holder, Dispatcher)
    holder.abort()


class _Reply:
    """An answer made by the proxy itself, queued behind earlier requests."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply: bytes | None = reply


class ProxyConnection(Dispatcher):
    """A client connection: requests in, answers (or error replies) out."""

    def __init__(self, stream: ByteStream, context: ConnectionContext, *, listener: Listener) -> None:
        super().__init__(stream, context)
        self.listener = listener
        self.proxy = listener.proxy
        self.hooks: ProxyHooks[Any] | None = listener.hooks
        self.in_flight = 0
        self.closed = False
        self._exchanges: set[Exchange] = set()
        self._ordered: deque[Exchange | _Reply] | None = None
        self._wake: anyio.Event | None = None
        self._read_scope: anyio.CancelScope | None = None
        self._codec: ProxyCodec[Any] | None = None
        self._idle_timeout: float | None = None
        self._streams = 0  # requests decoded so far (a request's number is its stream id)
        #: The cluster that let this connection in after a wait for room,
        #: for the rest of the read batch (see Cluster.has_room).
        self._turn: Cluster | None = None
        self._room_scope: anyio.CancelScope | None = None
        #: Set when the drain timeout passed: whatever is decoded from now on
        #: gets a timeout reply at once.
        self._expired = False
        #: What this connection holds, as last told to the buffer budget: its
        #: partial frame, the loop's read-ahead and its requests in flight.
        self._held = 0
        self._partial = 0
        self._inflight_bytes = 0
        #: This connection's part of the references its error replies carry.
        self._ref: str | None = None
        self._read_ahead = input_queued(stream)
        self._draining = False
        #: This client's own upstream pools (clusters that do not share
        #: connections between clients), closed with it.
        self.upstream_pools: dict[tuple[Cluster, Endpoint], Pool] = {}

    # -- life cycle -------------------------------------------------------------

    def drain(self) -> None:
        """Stop reading at the next frame boundary, answer what is in flight, close."""
        self._draining = True
        codec = self._codec
        if self._read_scope is not None and self.reader.idle and (codec is None or not codec.buffered):
            self._read_scope.cancel()

    async def on_close(self, reason: BaseException | None) -> None:
        self._abandon()

    def drain_expired(self) -> None:
        """Shutdown cut the drain short: every request still in flight gets
        a timeout reply now (in order, for an ordered protocol), instead of
        a close without an answer."""
        self._expired = True
        detail = f"the proxy shut down first (drain timeout {self.proxy.drain_timeout:g}s)"
        for exchange in list(self._exchanges):
            exchange.fail(Failure.TIMEOUT, "drain timeout", public=detail)
        if self._room_scope is not None:
            self._room_scope.cancel()

    def _abandon(self) -> None:
        self.closed = True
        self.proxy.budget.release(self)
        self._codec = None  # a partial frame it held goes now, not at the next collection
        for exchange in list(self._exchanges):
            exchange.abandon()
        self._exchanges.clear()
        for pool in self.upstream_pools.values():
            pool.close()
        self.upstream_pools.clear()

    async def _wait_in_flight(self, limit: int) -> None:
        while self.in_flight > limit:
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _sniff(self) -> ProxyHooks[Any] | None:
        candidates = self.listener.candidates
        want = 1
        timeout = self.listener.config.limits.frame_timeout
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        # drain() may end the wait; a client silent past frame_timeout is closed.
        with anyio.CancelScope(deadline=deadline) as self._read_scope:
            while True:
                prefix = await self.reader.peek(want)
                verdicts = [(info, info.sniff(prefix)) for _, info in candidates]
                for info, verdict in verdicts:
                    if verdict is Match.YES:
                        return info.proxy_hooks
                if not prefix:
                    return None  # closed before saying anything
                if len(prefix) < want or all(v is Match.NO for _, v in verdicts):
                    raise ProtocolError(f"no proxied protocol starts with {prefix[:16]!r}")
                if len(prefix) >= MAX_SNIFF:
                    raise ProtocolError(f"no protocol recognised in the first {MAX_SNIFF} bytes")
                want = len(prefix) + 1
        return None

    async def serve(self) -> None:
        hooks = self.hooks
        if hooks is None:
            hooks = await self._sniff()
            self._read_scope = None
            if hooks is None:
                return
            self.hooks = hooks
        if hooks.ordered:
            self._ordered = deque()
        limits = self.listener.config.limits
        codec = self._codec = hooks.downstream_codec(self.context.options, limits.max_frame_size)
        reader, writer = self.reader, self.writer
        writer.write(codec.data_to_send())
        max_in_flight = limits.max_in_flight
        stats = self.listener.stats
        outbox = self.proxy.outbox
        frame_timeout, self._idle_timeout = limits.frame_timeout, limits.idle_timeout
        connected = anyio.current_time()
        frame_started: float | None = None  # when the partial frame in the codec began
        got_bytes = False
        at_eof = False
        try:
            # Draining stops at a frame boundary: a frame half received is
            # read to its end first (the server's drain timeout bounds that).
            while not (self._draining and not codec.buffered):
                data = b""
                # A handshake or first bytes, then every frame, must arrive
                # within frame_timeout (no slowloris); a connection with
                # nothing in flight may sit idle for idle_timeout.
                deadline, slow = math.inf, False
                if frame_timeout is not None and not (got_bytes and codec.ready):
                    deadline, slow = connected + frame_timeout, True
                elif frame_timeout is not None and frame_started is not None:
                    deadline, slow = frame_started + frame_timeout, True
                elif self._idle_timeout is not None and not self.in_flight:
                    deadline = anyio.current_time() + self._idle_timeout
                with anyio.CancelScope(deadline=deadline) as scope:
                    self._read_scope = scope
                    try:
                        data = await reader.read_some()
                    except anyio.EndOfStream:
                        at_eof = True
                self._read_scope = None
                if scope.cancelled_caught and not self._draining:
                    if slow:
                        raise ProtocolError(f"no complete request within {frame_timeout:g}s")
                    log.debug("idle for %gs; closing", self._idle_timeout)
                    break
                if not data:
                    break  # the end of input, or drain() ended the wait
                got_bytes = True
                stats.bytes_in += len(data)
                frames = codec.feed(data)
                out = codec.data_to_send()
                if out:
                    writer.write(out)
                now = anyio.current_time()  # once per batch: a clock read costs ~1 µs
                # A partial frame's clock starts with its first byte; bytes that
                # complete nothing (a handshake in pieces) do not restart it.
                if not codec.buffered:
                    frame_started = None
                elif frames or frame_started is None:
                    frame_started = now
                if frames:
                    stats.requests += len(frames)
                    self._turn = None
                    outbox.begin()  # each upstream written to gets one send, at the end
                    try:
                        for frame in frames:
                            full = self._request(hooks, frame, now)
                            if full is not None:
                                # Its cluster is at max_requests: this client is
                                # not read from until its turn comes (or the
                                # request's deadline passes).
                                cluster, deadline = full
                                outbox.end()
                                room = False
                                try:
                                    with anyio.CancelScope() as self._room_scope:
                                        room = await cluster.wait_for_room(deadline)
                                finally:
                                    self._room_scope = None
                                    outbox.begin()
                                now = anyio.current_time()
                                if frame_started is not None:
                                    frame_started = now  # the proxy, not the client, was slow
                                self._request(
                                    hooks, frame, now, admission="admitted" if room else "refused", deadline=deadline
                                )
                            if self.in_flight >= max_in_flight:  # the codec holds the rest meanwhile
                                outbox.end()  # a batch never spans an await
                                try:
                                    await self._wait_in_flight(max_in_flight - 1)
                                finally:
                                    outbox.begin()
                                now = anyio.current_time()
                                if frame_started is not None:
                                    frame_started = now  # the proxy, not the client, was slow
                    finally:
                        outbox.end()
                codec.check()
                # The process's buffer budget, once per batch: the partial
                # frame, what the loop read ahead, and the requests in flight
                # (an average share of the bytes their frames took).
                partial = codec.buffered
                if self.in_flight:
                    self._inflight_bytes += len(data) + self._partial - partial
                held = partial + self._inflight_bytes
                if self._read_ahead is not None:
                    held += self._read_ahead()
                if held != self._held:
                    large = self.proxy.budget.large_frame
                    new_large = self._partial < large <= partial
                    self._held, self._partial = held, partial
                    self.proxy.budget.hold(self, held, new_large_frame=new_large)  # may refuse it
                else:
                    self._partial = partial
                if writer.pending >= writer.high_water:
                    await writer.flush()  # a client that does not read is not read from
                    if frame_started is not None:
                        frame_started = anyio.current_time()
        except ProtocolError:
            stats.decode_errors += 1
            # The requests before the bad bytes still get their answers,
            # then whatever the codec says about the bad bytes.
            with anyio.move_on_after(self.linger_timeout):
                await self._wait_in_flight(0)
            writer.write(codec.data_to_send())
            raise
        if at_eof:
            # The client half-closed, or is gone: answers arriving within
            # the linger time still go out, the rest is abandoned (on_close).
            with anyio.move_on_after(self.linger_timeout):
                await self._wait_in_flight(0)
        else:
            await self._wait_in_flight(0)  # a drain: the server's drain timeout bounds it

    # -- requests ---------------------------------------------------------------

    def _request(
        self,
        hooks: ProxyHooks[Any],
        frame: Any,
        now: float,
        admission: str = "check",
        deadline: float | None = None,
    ) -> tuple[Cluster, float] | None:
        """Answer, refuse or start one request, without awaiting.

        Returns ``(cluster, deadline)`` instead, with nothing done, when the
        route's cluster has no room under ``max_requests`` (``admission``
        ``check``); the caller waits for room, then calls again with that
        deadline and ``admitted`` (room was found: start it) or ``refused``
        (the deadline passed first: an overflow reply).
        """
        if admission == "check":
            self._streams += 1
        stream = self._streams
        if hooks.is_heartbeat(frame):
            if hooks.is_request(frame):
                reply = hooks.heartbeat_reply(frame)
                self.listener.stats.bytes_out += len(reply)
                self.writer.write(reply)
            return None
        if not hooks.is_request(frame):
            log.debug("dropped a response frame from a client", extra={"stream": stream})
            return None
        oneway = hooks.is_oneway(frame)
        if self._expired:
            if not oneway:
                public = f"the proxy shut down first (drain timeout {self.proxy.drain_timeout:g}s)"
                self._reply_now(self.error_reply(frame, Failure.TIMEOUT, stream, public), Failure.TIMEOUT)
            return None
        attributes: Mapping[str, str] | None = None
        chosen: Route | None = None
        try:
            for route in self.listener.routes:
                if route.matchers:
                    if attributes is None:
                        attributes = hooks.routing_attributes(frame)
                    if not route.matches(attributes):
                        continue
                chosen = route
                break
            key = None
            if chosen is not None and chosen.hash_key is not None:
                if attributes is None:
                    attributes = hooks.routing_attributes(frame)
                key = attributes.get(chosen.hash_key)
        except ProtocolError as exc:
            if not oneway:  # what is wrong with the client's own request is the client's to know
                self._reply_now(self.error_reply(frame, Failure.CODEC_ERROR, stream, str(exc)), Failure.CODEC_ERROR)
            return None
        except Exception:  # a plugin's bug: this request fails, not the connection
            log.exception("reading the routing attributes failed", extra={"stream": stream})
            if not oneway:
                self._reply_now(self.error_reply(frame, Failure.CODEC_ERROR, stream), Failure.CODEC_ERROR)
            return None
        if chosen is None:
            if not oneway:
                self._reply_now(self.error_reply(frame, Failure.NO_ROUTE, stream), Failure.NO_ROUTE)
            return None
        if deadline is None:
            timeout = chosen.timeout
            own = hooks.timeout(frame)
            if own is not None and own < timeout:
                timeout = own
            deadline = now + timeout
        cluster = chosen.cluster
        if admission == "admitted":
            self._turn = cluster  # the rest of this batch may use the room there is
        elif not cluster.has_room(self._turn is cluster):
            if admission == "check":
                return cluster, deadline
            cluster.overflows += 1
            if not oneway:
                detail = f"cluster {cluster.name}: max_requests reached, and stayed so until the request's deadline"
                self._reply_now(self.error_reply(frame, Failure.OVERFLOW, stream, "", detail), Failure.OVERFLOW)
            return None
        exchange = Exchange(self, frame, chosen, key, deadline, oneway, now, stream)
        if not oneway:
            self.in_flight += 1
            self._exchanges.add(exchange)
            if self._ordered is not None:
                self._ordered.append(exchange)
            self.proxy.timers.call_at(deadline, exchange, 0)
        start_try(exchange, now)
        return None

    def error_reply(self, frame: Any, failure: Failure, stream: int, public: str = "", detail: str = "") -> bytes:
        """The protocol's error reply to request ``stream`` for ``failure``,
        logged (rate-limited) with ``detail``, which stays in the log: the
        client gets the kind, ``public`` and a reference to quote."""
        if self._ref is None:
            # Random, not the connection id: that counter would tell clients
            # how many connections the proxy has opened.
            self._ref = secrets.token_hex(3)
        ref = f"{self._ref}.{stream}"
        ids = {"conn": self.context.connection_id, "stream": stream}
        listener = self.listener
        if failure is Failure.OVERFLOW:
            listener.overflow_log.log(failure, "request %s overflowed: %s", ref, detail or "-", extra=ids)
        else:
            listener.failure_log.log(
                failure,
                "request %s failed: %s: %s",
                ref,
                failure.value,
                detail or public or "-",
                extra=ids,
            )
        hooks = self.hooks
        assert hooks is not None
        return hooks.error_reply(frame, failure, f"{public}; ref {ref}" if public else f"ref {ref}")

    def _reply_now(self, data: bytes, failure: Failure) -> None:
        stats = self.listener.stats
        stats.local_replies[failure.name.lower()] = stats.local_replies.get(failure.name.lower(), 0) + 1
        stats.bytes_out += len(data)
        if self._ordered:  # answers before it are still pending: keep the order
            self._ordered.append(_Reply(data))
            self.in_flight += 1  # held replies count against max_in_flight too
        else:
            self.writer.write(data)

    def _write_ordered(self) -> None:
        ordered = self._ordered
        assert ordered is not None
        write = self.writer.write
        written = 0
        while ordered:
            reply = ordered[0].reply
            if reply is None:
                break
            write(reply)
            ordered.popleft()
            written += 1
        if written:
            self.in_flight -= written
            self._woken(written)

    def _woken(self, released: int) -> None:
        """``released`` requests left flight: wake the reader if it waits,
        and give their share of bytes back to the buffer budget."""
        if self._inflight_bytes:
            if self.in_flight <= 0:
                self._inflight_bytes = 0
            else:
                self._inflight_bytes -= self._inflight_bytes * released // (self.in_flight + released)
            held = self._partial + self._inflight_bytes
            if held < self._held - 65536 or (held == 0 and self._held):  # not per small answer
                self._held = held
                self.proxy.budget.hold(self, held, new_large_frame=False)
        wake = self._wake
        if wake is not None:
            wake.set()
        scope = self._read_scope
        if not self.in_flight and scope is not None and scope.deadline == math.inf and self._idle_timeout is not None:
            scope.deadline = anyio.current_time() + self._idle_timeout  # idle from now on

    def exchange_done(self, exchange: Exchange, data: bytes) -> None:
        """An exchange of this connection ended with ``data`` for the client.

        In an ordered connection the exchange stays in flight until its
        reply is written (it may wait for earlier ones): held replies count
        against ``max_in_flight``, so they cannot pile up without bound.
        """
        if exchange.oneway:
            return
        self._exchanges.discard(exchange)
        if self.closed:
            return  # the client is gone: a late answer is dropped
        self.listener.stats.bytes_out += len(data)
        if self._ordered is not None:
            exchange.reply = data
            self._write_ordered()
        else:
            self.in_flight -= 1
            self._woken(1)
            self.writer.write(data)
        self.proxy.outbox.add(self)


class Listener:
    """A listener at run time: its protocol's hooks, routes and server."""

    def __init__(self, config: ListenerConfig, proxy: Proxy, info: ProtocolInfo | None) -> None:
        self.config = config
        self.name = config.name
        self.proxy = proxy
        self.info = info
        self.hooks = info.proxy_hooks if info is not None else None
        self.candidates = auto_candidates() if info is None else []
        self.stats = ListenerStats()
        #: Requests that end in an error reply: at most 20 lines a second per
        #: kind (a dead upstream fails thousands a second), at INFO; overflow,
        #: a sign of overload, at WARNING, once per 10 s.
        self.failure_log = RateLimitedLog(log, logging.INFO, interval=1.0, burst=20)
        self.overflow_log = RateLimitedLog(log, logging.WARNING, interval=10.0, burst=1)
        self.routes = tuple(Route(route, proxy.clusters[route.cluster]) for route in config.routes)
        self.server = Server(
            self.connection,
            config.address,
            protocol=config.protocol,
            options=config.options,
            drain_timeout=proxy.config.drain_timeout,
            max_connections=config.limits.max_connections,
            timeouts=None,  # ProxyConnection keeps the listener's limits itself
            budget=proxy.budget,
        )

    def connection(self, stream: ByteStream, context: ConnectionContext) -> ProxyConnection:
        return ProxyConnection(stream, context, listener=self)


class Proxy:
    """A whole proxy process: listeners, clusters, timers.

    ``await task_group.start(proxy.serve)`` returns ``{listener name: bound
    HOST:PORT}`` once every listener is bound; :meth:`shutdown` drains.
    Raises :class:`~sota_dispatch.ConfigError` at once for a protocol that
    is not installed or cannot be proxied.
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        protocols = check_protocols(config)
        self.timers = TimerQueue()
        #: Connections written to during a batch, flushed at its end.
        self.outbox = Outbox()
        overload = config.overload
        #: What all connections hold of partial frames, against the budget.
        self.budget = BufferBudget(overload.buffer_budget, large_frame=overload.large_frame, shed=_shed)
        self.clusters = {c.name: Cluster(c, outbox=self.outbox, budget=self.budget) for c in config.clusters}
        self.listeners = [Listener(c, self, protocols[c.name]) for c in config.listeners]
        self.addresses: dict[str, str] = {}
        #: The admin endpoint's bound ``HOST:PORT`` once serving (None: no admin).
        self.admin_address: str | None = None
        self._admin = (
            None
            if config.admin is None
            else Server(
                self._admin_connection, config.admin.address, max_connections=ADMIN_MAX_CONNECTIONS, timeouts=None
            )
        )
        self._metrics: Any = None
        self._admin_waiting: Any = None
        self._shutdown = False

    async def serve(self, *, task_status: TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until :meth:`shutdown`, drain, return."""
        async with anyio.create_task_group() as upstream:
            for cluster in self.clusters.values():
                cluster.task_group = upstream
            upstream.start_soon(self.timers.run, name="proxy timers")
            for cluster in self.clusters.values():
                if cluster.config.health_check is not None:
                    upstream.start_soon(run_health_checks, cluster, self._checked_protocol(cluster.name))
            async with anyio.create_task_group() as listeners:
                for i, listener in enumerate(self.listeners):
                    try:
                        self.addresses[listener.name] = await listeners.start(listener.server.serve)
                    except OSError as exc:
                        raise ConfigError(
                            f"listeners[{i}].address",
                            f"cannot listen on {listener.config.address}: {exc.strerror or exc}",
                        ) from None
                if self._admin is not None:  # in the outer group: it answers while the listeners drain
                    try:
                        self.admin_address = await upstream.start(self._admin.serve)
                    except OSError as exc:
                        assert self.config.admin is not None
                        raise ConfigError(
                            "admin.address", f"cannot listen on {self.config.admin.address}: {exc.strerror or exc}"
                        ) from None
                    if not is_loopback(self._admin.host):
                        log.warning(
                            "the admin endpoint listens on %s, beyond this machine: anyone who can reach it "
                            "can drain the proxy and read its config",
                            self.admin_address,
                        )
                task_status.started(dict(self.addresses))
                if self._shutdown:
                    self.shutdown()
            # Every client connection is closed: late upstream answers have
            # nobody to go to, so the upstream connections go too.
            upstream.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Stop accepting; let in-flight requests finish (up to the drain timeout)."""
        self._shutdown = True
        for listener in self.listeners:
            listener.server.shutdown()

    def _checked_protocol(self, cluster: str) -> ProxyHooks[Any] | None:
        """The hooks a cluster's health check speaks: the protocol of the
        first named listener routing to it (None: only auto ones, so TCP)."""
        for listener in self.listeners:
            if listener.hooks is not None and any(route.cluster.name == cluster for route in listener.routes):
                return listener.hooks
        return None

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._shutdown

    @property
    def metrics(self) -> Any:
        """A prometheus-client ``CollectorRegistry`` with this proxy's metrics."""
        if self._metrics is None:
            from prometheus_client import CollectorRegistry

            from ..admin.server import ProxyCollector

            self._metrics = CollectorRegistry(auto_describe=False)
            self._metrics.register(ProxyCollector(self))
        return self._metrics

    def _admin_connection(self, stream: ByteStream, context: ConnectionContext) -> Dispatcher:
        from ..admin.server import AdminConnection, WaitingConnections

        if self._admin_waiting is None:
            self._admin_waiting = WaitingConnections()
        return AdminConnection(stream, context, proxy=self, waiting=self._admin_waiting)

    @property
    def drain_timeout(self) -> float:
        return self.config.drain_timeout
