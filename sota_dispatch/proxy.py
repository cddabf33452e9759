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
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskStatus

from .config import ClusterConfig, ConfigError, ListenerConfig, ProxyConfig
from .dispatcher import ConnectionContext, Dispatcher
from .errors import ProtocolError, SotaError
from .exchange import Exchange, start_try
from .proxy_hooks import Failure, ProxyCodec, ProxyHooks
from .registry import Match, ProtocolInfo, available_protocols, get_protocol
from .routing import Route
from .server import Server
from .timers import TimerQueue
from .upstream import Cluster

__all__ = ["AUTO", "Listener", "Proxy", "ProxyConnection", "check_protocols"]

log = logging.getLogger(__name__)

#: The listener protocol that detects each connection's protocol.
AUTO = "auto"
#: Bytes read at most while detecting a connection's protocol.
MAX_SNIFF = 64 * 1024


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
        self._draining = False

    # -- life cycle -------------------------------------------------------------

    def drain(self) -> None:
        """Stop reading at the next frame boundary, answer what is in flight, close."""
        self._draining = True
        codec = self._codec
        if self._read_scope is not None and self.reader.idle and (codec is None or not codec.buffered):
            self._read_scope.cancel()

    async def on_close(self, reason: BaseException | None) -> None:
        self._abandon()

    def _abandon(self) -> None:
        self.closed = True
        for exchange in list(self._exchanges):
            exchange.abandon()
        self._exchanges.clear()

    async def _wait_in_flight(self, limit: int) -> None:
        while self.in_flight > limit:
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _sniff(self) -> ProxyHooks[Any] | None:
        candidates = self.listener.candidates
        want = 1
        with anyio.CancelScope() as self._read_scope:  # drain() may end the wait
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
        at_eof = False
        try:
            # Draining stops at a frame boundary: a frame half received is
            # read to its end first (the server's drain timeout bounds that).
            while not (self._draining and not codec.buffered):
                data = b""
                with anyio.CancelScope() as self._read_scope:
                    try:
                        data = await reader.read_some()
                    except anyio.EndOfStream:
                        at_eof = True
                self._read_scope = None
                if not data:
                    break  # the end of input, or drain() ended the wait
                frames = codec.feed(data)
                out = codec.data_to_send()
                if out:
                    writer.write(out)
                if frames:
                    now = anyio.current_time()  # once per batch: a clock read costs ~1 µs
                    for frame in frames:
                        self._request(hooks, frame, now)
                        if self.in_flight >= max_in_flight:  # the codec holds the rest meanwhile
                            await self._wait_in_flight(max_in_flight - 1)
                            now = anyio.current_time()
                codec.check()
        except ProtocolError:
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

    def _request(self, hooks: ProxyHooks[Any], frame: Any, now: float) -> None:
        if hooks.is_heartbeat(frame):
            if hooks.is_request(frame):
                self.writer.write(hooks.heartbeat_reply(frame))
            return
        if not hooks.is_request(frame):
            log.debug("conn %d: dropped a response frame from a client", self.context.connection_id)
            return
        oneway = hooks.is_oneway(frame)
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
            if not oneway:
                self._reply_now(hooks.error_reply(frame, Failure.CODEC_ERROR, str(exc)))
            return
        except Exception:  # a plugin's bug: this request fails, not the connection
            log.exception("conn %d: reading the routing attributes failed", self.context.connection_id)
            if not oneway:
                self._reply_now(hooks.error_reply(frame, Failure.CODEC_ERROR))
            return
        if chosen is None:
            if not oneway:
                self._reply_now(hooks.error_reply(frame, Failure.NO_ROUTE))
            return
        timeout = chosen.timeout
        own = hooks.timeout(frame)
        if own is not None and own < timeout:
            timeout = own
        deadline = now + timeout
        exchange = Exchange(self, frame, chosen, key, deadline, oneway)
        if not oneway:
            self.in_flight += 1
            self._exchanges.add(exchange)
            if self._ordered is not None:
                self._ordered.append(exchange)
            self.proxy.timers.call_at(deadline, exchange, 0)
        start_try(exchange, now)

    def _reply_now(self, data: bytes) -> None:
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
            self._woken()

    def _woken(self) -> None:
        wake = self._wake
        if wake is not None:
            wake.set()

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
        if self._ordered is not None:
            exchange.reply = data
            self._write_ordered()
        else:
            self.in_flight -= 1
            self._woken()
            self.writer.write(data)
        self.flush_soon()


class Listener:
    """A listener at run time: its protocol's hooks, routes and server."""

    def __init__(self, config: ListenerConfig, proxy: Proxy, info: ProtocolInfo | None) -> None:
        self.config = config
        self.name = config.name
        self.proxy = proxy
        self.info = info
        self.hooks = info.proxy_hooks if info is not None else None
        self.candidates = auto_candidates() if info is None else []
        self.routes = tuple(Route(route, proxy.clusters[route.cluster]) for route in config.routes)
        self.server = Server(
            self.connection,
            config.address,
            protocol=config.protocol,
            options=config.options,
            drain_timeout=proxy.config.drain_timeout,
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
        self.clusters = {c.name: Cluster(c) for c in config.clusters}
        self.listeners = [Listener(c, self, protocols[c.name]) for c in config.listeners]
        self.addresses: dict[str, str] = {}
        self._shutdown = False

    async def serve(self, *, task_status: TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, serve until :meth:`shutdown`, drain, return."""
        async with anyio.create_task_group() as upstream:
            for cluster in self.clusters.values():
                cluster.task_group = upstream
            upstream.start_soon(self.timers.run, name="proxy timers")
            async with anyio.create_task_group() as listeners:
                for i, listener in enumerate(self.listeners):
                    try:
                        self.addresses[listener.name] = await listeners.start(listener.server.serve)
                    except OSError as exc:
                        raise ConfigError(
                            f"listeners[{i}].address",
                            f"cannot listen on {listener.config.address}: {exc.strerror or exc}",
                        ) from None
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

    @property
    def drain_timeout(self) -> float:
        return self.config.drain_timeout
