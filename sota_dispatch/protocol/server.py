"""A TCP listener that runs one dispatcher per accepted connection.

Connections live in their own task group, apart from the accept loop, so that
shutting down can stop accepting first, let every dispatcher drain (finish the
requests it already read), and only cancel what is still running when the
drain timeout is over.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from anyio.streams.stapled import MultiListener

from ..errors import ConfigError
from ..io.address import format_address, parse_address
from ..io.budget import BufferBudget
from ..io.timeouts import ReadTimeouts
from ..io.tls import ServerTLS
from ..io.transport import pause_reading
from ..logs import plural
from .dispatcher import ConnectionContext, Dispatcher
from .doorstep import Doorstep, wait_readable
from .handoff import HandOffSink
from .moving import Moving
from .parking import Parking
from .registry import DispatcherFactory

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_PARK_IDLE_AFTER", "DEFAULT_TIMEOUTS", "Server", "park_idle_after"]

#: Connections a listener serves at once unless told otherwise: a bound
#: every server needs (idle connections cost memory and descriptors), far
#: above what one Python process serves well.
DEFAULT_MAX_CONNECTIONS = 10_000
#: The read timeouts of a listener unless told otherwise (30 s to send each
#: request, 1 h idle), as the proxy's listeners have by default.
DEFAULT_TIMEOUTS = ReadTimeouts()
#: Seconds idle before a connection parks where the serve command and the
#: proxy's listeners park unless told otherwise (a :class:`Server` of your
#: own parks only when given ``park_idle_after``). A served connection costs
#: 19-25 KiB and a parked one 3-4 (bench/IDLE_RESULTS.md); 30 s keeps the
#: cost of a park and of taking the connection back (a new task, stream
#: and buffers: 0.14-0.22 ms more on the first round trip after, measured
#: on a local simple_line service) off any client that calls more often
#: than twice a minute.
DEFAULT_PARK_IDLE_AFTER = 30.0


def park_idle_after(value: float | None, can_park: bool) -> float | None:
    """A configured ``park_idle_after`` as a :class:`Server` takes it: unset
    (None), the default where connections can park; 0, never; where they
    cannot park, never (refusing or warning about a value set there is the
    caller's: the serve command refuses, a proxy listener warns)."""
    if not can_park:
        return None
    return DEFAULT_PARK_IDLE_AFTER if value is None else value or None


log = logging.getLogger(__name__)

#: accept() errors that mean "out of resources for now", not "listener broken".
_ACCEPT_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
#: Sockets accepted per wake-up of the listener before others get a turn.
_ACCEPT_BATCH = 64


class Server(Moving):
    """Serve a protocol on a TCP address.

    ``factory`` builds the dispatcher of each connection (a
    :class:`~sota_dispatch.Dispatcher` subclass, or
    :attr:`ProtocolInfo.factory <sota_dispatch.ProtocolInfo.factory>`).
    Start it with ``await task_group.start(server.serve)``, which returns once
    the socket is bound, with the bound ``HOST:PORT``. Raises
    :class:`ValueError` at once for options the factory rejects.

    Guards against peers that hold connections without using them:
    ``max_connections`` (one more is closed as soon as it is accepted) and
    ``timeouts`` (:class:`~sota_dispatch.ReadTimeouts`: first bytes and
    every frame within the frame timeout, closed after the idle timeout),
    enforced by each dispatcher's reader. None turns either off.

    ``tls``: terminate TLS (:class:`~sota_dispatch.ServerTLS`); the
    handshake runs in the connection's task within its timeout, and a
    connection counts against ``max_connections`` from its accept.

    ``sockets``: listening sockets to accept on instead of binding
    ``listen`` (a worker process's, handed over by its supervisor).

    ``wait_for_first_bytes``: hold an accepted connection as its bare
    socket, without a task, stream or dispatcher, until the client sends
    (see :mod:`~sota_dispatch.protocol.doorstep`). None (the default): when
    the factory's class says its clients speak first
    (:attr:`~sota_dispatch.FrameSemantics.speaks_first` False).
    Meanwhile ``first_bytes_timeout`` applies (None: the frame timeout of
    ``timeouts``, else its idle timeout, else none); settable.

    ``park_idle_after``: seconds after which an idle connection whose
    dispatcher can say how to go on goes back to waiting there, its task
    and buffers freed (see :mod:`~sota_dispatch.protocol.parking`; None,
    the default here: never; the serve command and the proxy's listeners
    pass ``DEFAULT_PARK_IDLE_AFTER``, 30 s). Needs ``wait_for_first_bytes``.
    """

    def __init__(
        self,
        factory: DispatcherFactory,
        listen: str | tuple[str, int] = "127.0.0.1:0",
        *,
        protocol: str = "",
        options: Mapping[str, str] | None = None,
        drain_timeout: float = 10.0,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        timeouts: ReadTimeouts | None = DEFAULT_TIMEOUTS,
        budget: BufferBudget | None = None,
        tls: ServerTLS | None = None,
        sockets: Sequence[socket.socket] | None = None,
        wait_for_first_bytes: bool | None = None,
        first_bytes_timeout: float | None = None,
        park_idle_after: float | None = None,
    ) -> None:
        self.factory = factory
        if wait_for_first_bytes is None:
            wait_for_first_bytes = getattr(factory, "speaks_first", None) is False
        self.wait_for_first_bytes = wait_for_first_bytes
        self._parking: Parking | None = None
        self.park_idle_after = park_idle_after
        if first_bytes_timeout is None and timeouts is not None:
            first_bytes_timeout = timeouts.idle if timeouts.frame is None else timeouts.frame
        self._first_bytes_timeout = first_bytes_timeout
        #: Listening sockets to accept on instead of binding ``listen``
        #: (a worker's, from its supervisor); the server owns them.
        self.sockets = None if sockets is None else list(sockets)
        self.tls = tls
        self.host, self.port = parse_address(listen)
        self.protocol = protocol or getattr(factory, "protocol_name", "") or ""
        self.options = dict(options or {})
        validate = getattr(factory, "validate_options", None)
        if validate is not None:
            validate(self.options)  # a bad option fails here, not per connection
        self.drain_timeout = drain_timeout
        #: Connections served at once; one more is closed as soon as it is
        #: accepted (None: no limit).
        self.max_connections = max_connections
        self.timeouts = timeouts
        #: The process's buffer budget: while it is exceeded, this server
        #: stops accepting.
        self.budget = budget
        self.connections_refused = 0
        #: The bound ``HOST:PORT`` once :meth:`serve` has started.
        self.address: str | None = None
        self.connections_total = 0
        self._dispatchers: set[Dispatcher] = set()
        self._starting = 0  # accepted, not yet running (for max_connections)
        #: Set by :meth:`hand_off`: a connection accepted before it, still
        #: starting then, follows the others to the new process.
        self._handoff_sink: HandOffSink | None = None
        self._accept_scope: anyio.CancelScope | None = None
        #: Set once the listening sockets are closed (see :meth:`wait_not_accepting`).
        self._not_accepting: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._shutdown_requested = False
        self._accept_requested_stop = False
        self._connections: TaskGroup | None = None
        self._doorstep: Doorstep | None = None
        #: Connections handed over by another process (hot restart).
        self.connections_adopted = 0
        #: Connections this server handed to another process.
        self.connections_handed_off = 0

    @property
    def active_connections(self) -> int:
        """Connections being served right now."""
        return len(self._dispatchers)

    @property
    def waiting_connections(self) -> int:
        """Accepted connections that have sent nothing yet (see ``wait_for_first_bytes``)."""
        return 0 if self._doorstep is None else len(self._doorstep) - self._doorstep.parked

    @property
    def park_idle_after(self) -> float | None:
        """Seconds idle before a connection parks (None: never); settable."""
        # Once serving, the parking's own (a hot-restart hand-off turns it off there).
        return self._park_idle_after if self._parking is None else self._parking.after

    @park_idle_after.setter
    def park_idle_after(self, seconds: float | None) -> None:
        if seconds is not None and (seconds <= 0 or not self.wait_for_first_bytes):
            raise ValueError("park_idle_after must be positive, for a server that waits for first bytes")
        self._park_idle_after = seconds
        if self._parking is not None:
            self._parking.after = seconds

    @property
    def parked_connections(self) -> int:
        """Idle connections parked now, without a task (see ``park_idle_after``)."""
        return 0 if self._doorstep is None else self._doorstep.parked

    @property
    def connections_parked(self) -> int:
        """Times a connection was parked, since the start."""
        return 0 if self._parking is None else self._parking.parked_total

    @property
    def parked_idle_timeouts(self) -> int:
        """Parked connections closed at the end of their idle timeout."""
        return 0 if self._doorstep is None else self._doorstep.parked_timed_out

    @property
    def first_byte_timeouts(self) -> int:
        """Connections closed because they sent nothing in time, while waiting."""
        return 0 if self._doorstep is None else self._doorstep.timed_out

    @property
    def first_bytes_timeout(self) -> float | None:
        """Seconds a connection may wait silent (``wait_for_first_bytes``)."""
        return self._first_bytes_timeout

    @first_bytes_timeout.setter
    def first_bytes_timeout(self, seconds: float | None) -> None:
        # For those accepted from now on (one queue: a shorter one may wait behind older ones).
        self._first_bytes_timeout = seconds
        if self._doorstep is not None:
            self._doorstep.timeout = seconds

    def _over_the_limit(self) -> bool:
        """Count an accepted connection; True (counted refused) if over ``max_connections``."""
        self.connections_total += 1
        if self.max_connections is not None and self._held() >= self.max_connections:
            self.connections_refused += 1
            return True
        return False

    def _held(self) -> int:
        """Connections that count against ``max_connections``."""
        return len(self._dispatchers) + self._starting + (0 if self._doorstep is None else len(self._doorstep))

    async def serve(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, accept until :meth:`shutdown`, then drain and return.

        Raises :class:`OSError` if the address cannot be bound.
        """
        listener: MultiListener[SocketStream]
        self._not_accepting = anyio.Event()
        if self.sockets is not None:
            listener = MultiListener([await SocketListener.from_socket(sock) for sock in self.sockets])
        else:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener, anyio.create_task_group() as connections:
            self._connections = connections
            if self.wait_for_first_bytes:
                self._doorstep = Doorstep(self._admit, self._first_bytes_timeout, connections)
                self._doorstep.on_drop = self._maybe_idle
                connections.start_soon(self._doorstep.run, name="first-byte deadlines")
                self._parking = Parking(self._park_idle_after, self._doorstep, self._admit_with)
                connections.start_soon(self._parking.run, self._dispatchers, name="parking")
            self.address = format_address(listener.extra(SocketAttribute.local_address))
            task_status.started(self.address)
            with anyio.CancelScope() as self._accept_scope:
                if self._accept_requested_stop:
                    self._accept_scope.cancel()
                async with anyio.create_task_group() as accepting:
                    for sub in listener.listeners:  # one per resolved address
                        assert isinstance(sub, SocketListener)
                        if self._doorstep is not None:
                            accepting.start_soon(self._accept_sockets, sub, self._doorstep)
                        else:
                            accepting.start_soon(self._accept_loop, sub, connections)
            await listener.aclose()
            self._not_accepting.set()
            if not self._shutdown_requested:
                # stop_accepting(): the connections go on until their
                # clients close them or shutdown() drains them.
                log.info(
                    "%s: no longer accepting; serving %s on", self.address, plural(len(self._dispatchers), "connection")
                )
                # Starting and waiting ones count too: served (or moved), not cut.
                while self._held() and not self._shutdown_requested:
                    self._idle = anyio.Event()
                    await self._idle.wait()
            # Draining: give in-flight requests the drain timeout.
            log.info("%s: no longer accepting; draining %s", self.address, plural(len(self._dispatchers), "connection"))
            with anyio.move_on_after(self.drain_timeout):
                while self._dispatchers or self._starting:
                    self._idle = anyio.Event()
                    await self._idle.wait()
            if self._dispatchers:
                log.warning("drain timeout: closing %s", plural(len(self._dispatchers), "connection"))
                # Each answers what it still owes (an error reply, say) into
                # its writer now; the close that follows still sends it.
                for dispatcher in list(self._dispatchers):
                    try:
                        dispatcher.drain_expired()
                    except Exception:
                        log.exception("drain_expired() failed", extra={"conn": dispatcher.context.connection_id})
            connections.cancel_scope.cancel()

    async def _accept_loop(self, listener: SocketListener, connections: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                await self._pause_accepting(exc)
                continue
            if self._over_the_limit():
                await anyio.aclose_forcefully(stream)  # at once: no greeting, no drain
                continue
            self._starting += 1
            connections.start_soon(self._handle, stream)
            if self.budget is not None and not self.budget.accepting:
                await self.budget.wait_for_room()  # stop accepting: the next ones wait in the backlog

    async def _pause_accepting(self, exc: OSError) -> None:
        """Out of resources for now (EMFILE, ...): pause; else the listener is broken: raise."""
        if exc.errno not in _ACCEPT_TRANSIENT:
            raise exc
        log.warning("accept failed on %s: %s; pausing accepts", self.address, exc)
        await anyio.sleep(0.1)

    async def _accept_sockets(self, listener: SocketListener, doorstep: Doorstep) -> None:
        """Accept bare sockets into ``doorstep``, where they wait for their
        first bytes (a stream and a dispatcher come then: :meth:`_admit`)."""
        raw: socket.socket = listener.extra(SocketAttribute.raw_socket)
        while True:
            await wait_readable(raw)
            for _ in range(_ACCEPT_BATCH):  # then the others get a turn
                try:
                    sock, _ = raw.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    await self._pause_accepting(exc)
                    break
                if self._over_the_limit():
                    sock.close()
                    continue
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    doorstep.hold(sock)
                except OSError as exc:  # reset already: that connection only, never the accept loop
                    log.debug("%s: an accepted connection was gone at once: %r", self.address, exc)
                    sock.close()
            if self.budget is not None and not self.budget.accepting:
                await self.budget.wait_for_room()

    def _admit(self, sock: socket.socket, state: Mapping[str, Any] | None, connection_id: int) -> None:
        """A waiting socket turned readable: serve it (see :meth:`_accept_sockets`);
        a parked one from its ``state``, under its id."""
        self._admit_with(sock, b"", state, connection_id)

    def _admit_with(self, sock: socket.socket, unread: bytes, state: Mapping[str, Any] | None, cid: int) -> None:
        assert self._connections is not None
        self._starting += 1
        self._connections.start_soon(self._first_bytes, sock, unread, state, cid)

    async def _first_bytes(self, sock: socket.socket, unread: bytes, state: Mapping[str, Any] | None, cid: int) -> None:
        try:
            stream = await SocketStream.from_socket(sock)
            if state is not None:
                pause_reading(stream)
        except Exception as exc:  # noqa: BLE001 - reset meanwhile: that connection only
            log.debug("%s: a connection was gone before it was served: %r", self.address, exc)
            sock.close()
            self._starting -= 1
            self._maybe_idle()
            return
        if state is None:
            await self._handle(stream)
            return
        self._starting -= 1  # a parked one: no TLS (it could not have parked), its dispatcher next
        await self._run(stream, unread, state, cid)

    def _maybe_idle(self) -> None:
        if not self._held() and self._idle is not None:
            self._idle.set()

    async def _handle(self, accepted: SocketStream) -> None:
        stream: ByteStream = accepted
        early = b""
        # Nothing about one connection may reach the accept loop's task
        # group: a peer that resets at once, fails its TLS handshake, or a
        # factory that fails, costs that connection only.
        try:
            pause_reading(accepted)
            if self.tls is not None:
                secured = await self.tls.accept(accepted, self.address)
                if secured is None:
                    return
                stream, early = secured
        except Exception:
            log.exception("%s: setting up a new connection failed", self.address)
            await anyio.aclose_forcefully(accepted)
            return
        finally:
            self._starting -= 1  # once accepted and set up (handshake included): counted until here
            self._maybe_idle()  # a wait for the last one re-checks: _run counts this one next, if it goes on
        await self._run(stream, early, None)

    async def _run(self, stream: ByteStream, early: bytes, handoff: Mapping[str, Any] | None, cid: int = 0) -> None:
        """Build the connection's dispatcher and run it to its end."""
        try:
            context = ConnectionContext.for_stream(stream, protocol=self.protocol, options=self.options)
            if handoff is not None:
                context = attrs.evolve(context, handoff=handoff, connection_id=cid or context.connection_id)
            dispatcher = self.factory(stream, context)
            if early:
                dispatcher.reader.push_back(early)
            if self.timeouts is not None:
                dispatcher.reader.set_timeouts(self.timeouts)
        except Exception:
            log.exception("the dispatcher factory of %r failed for a new connection", self.protocol)
            await anyio.aclose_forcefully(stream)
            return
        self._dispatchers.add(dispatcher)
        try:
            if self._shutdown_requested:
                dispatcher.drain()
            elif self._handoff_sink is not None and dispatcher.can_hand_off():
                dispatcher.hand_off(self._handoff_sink)  # accepted as the others were moved: it follows them
            await dispatcher.run()
        finally:
            parked = self._parking is not None and self._parking.done(dispatcher)
            if dispatcher.handed_off and not parked:
                self.connections_handed_off += 1
            self._dispatchers.discard(dispatcher)
            if not self._dispatchers and self._idle is not None:
                self._idle.set()

    def reload_certificates(self) -> list[ConfigError]:
        """Read the TLS files again (SIGHUP): new connections get the new
        certificates, open ones keep theirs; a problem is logged and
        returned, and the old certificates stay."""
        if self.tls is None:
            return []
        try:
            self.tls.reload()
        except ConfigError as exc:
            log.error("%s: TLS not reloaded (the old certificates stay): %s", self.address, exc)
            return [exc]
        log.info("%s: TLS reloaded (generation %d)", self.address, self.tls.generation)
        return []

    def shutdown(self) -> None:
        """Stop accepting and drain every connection (see :attr:`drain_timeout`)."""
        self._shutdown_requested = True
        if self._parking is not None:
            self._parking.stopped = True
        self.stop_accepting()
        if self._doorstep is not None:
            self._doorstep.close()  # silent so far: nothing to drain
        if self._idle is not None:
            self._idle.set()  # wake a server that stopped accepting: its drain starts now
        for dispatcher in list(self._dispatchers):
            dispatcher.drain()

    async def wait_not_accepting(self) -> None:
        """Return once the listening sockets are closed, after
        :meth:`stop_accepting` or :meth:`shutdown` (at once if not serving):
        a connect from then on is refused."""
        if self._not_accepting is not None:
            await self._not_accepting.wait()

    def stop_accepting(self) -> None:
        """Stop accepting, and keep serving the open connections until
        their clients close them or :meth:`shutdown` drains them: what a
        process does once its successor accepts on the same sockets (hot
        restart). :meth:`serve` returns when the last one is closed."""
        self._accept_requested_stop = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
