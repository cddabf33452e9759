"""The DEALER role: one outgoing connection that comes back after failures.

A :class:`Dealer` connects to a ROUTER or REP (libzmq's, or ours), performs
the handshake, and reconnects with exponential backoff when the connection
fails, the way a libzmq socket does (starting at ``reconnect_interval``,
doubling up to ``reconnect_interval_max``, reset by a successful handshake).
A peer's ERROR command is final: the dealer stops instead of reconnecting
into the same refusal, and :meth:`Dealer.send` raises it. So is a ZMTP 2.0
peer when the dealer was given PLAIN credentials: 2.0 has no mechanism, and
talking on would send messages without the authentication asked for
(:class:`~sota_zmtp.DowngradeRefused`).

Incoming messages go to :meth:`Dealer.on_message`, in the connection's task;
the default keeps them for :meth:`Dealer.receive`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from types import TracebackType

import anyio
from anyio.abc import ByteStream, TaskGroup, TaskStatus

from sota_dispatch import ConnectionContext, ConnectionLost, parse_address

from .connection import Heartbeat, Liveness, open_loop, pump, start_keepalive
from .curve import CurveClientKeys
from .dispatcher import ZmtpDispatcher
from .engine import DowngradeRefused, Limits, PeerError, ZmtpEngine
from .wire import SocketType

__all__ = ["Dealer", "DealerConnection"]

log = logging.getLogger(__name__)


class DealerConnection(ZmtpDispatcher):
    """The connection a :class:`Dealer` currently uses."""

    def __init__(self, stream: ByteStream, context: ConnectionContext | None = None, *, dealer: Dealer) -> None:
        super().__init__(stream, context)
        self.dealer = dealer
        self.engine = ZmtpEngine(
            dealer.socket_type,
            identity=dealer.identity,
            limits=dealer.limits,
            plain_credentials=dealer.plain_credentials,
            curve_client=dealer.curve,
        )

    async def serve(self) -> None:
        loop = open_loop(self, self.engine, self.dealer.limits.handshake_timeout)
        await loop.handshake()
        self.dealer._attach(self)
        liveness = Liveness(anyio.current_time())
        start_keepalive(self, self.engine, self.dealer.heartbeat, liveness)
        try:
            await pump(self, loop, _deliver, self.dealer, liveness)
        finally:
            self.dealer._detach(self)


async def _deliver(dealer: Dealer, frames: list[bytes]) -> None:
    await dealer.on_message(frames)


class Dealer:
    """A DEALER (or REQ-free client) socket connected to ``address``.

    Use it as an async context manager, or run :meth:`run` in a task group.
    ``socket_type`` may be DEALER (default) or ROUTER/REQ-compatible types
    the peer accepts; ``identity`` is the routing id announced to the peer;
    ``plain_credentials`` ``(username, password)`` selects the PLAIN mechanism,
    ``curve`` (:class:`~sota_zmtp.curve.CurveClientKeys`: the server's public
    key, our key pair) CURVE; with either, a peer offering ZMTP 2.0 or
    another mechanism is refused, never talked to;
    ``heartbeat`` sends PINGs to a ZMTP 3.1 peer and drops it if it falls
    silent (then reconnects); an older peer has no PING and is kept.
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        *,
        identity: bytes = b"",
        socket_type: SocketType = SocketType.DEALER,
        limits: Limits | None = None,
        reconnect_interval: float = 0.1,
        reconnect_interval_max: float = 5.0,
        connect_timeout: float = 10.0,
        plain_credentials: tuple[bytes, bytes] | None = None,
        curve: CurveClientKeys | None = None,
        heartbeat: Heartbeat | None = None,
        receive_hwm: int = 1000,
    ) -> None:
        self.curve = curve
        if receive_hwm < 1:
            raise ValueError("receive_hwm must be at least 1")
        self.receive_hwm = receive_hwm
        self.address = parse_address(address)
        self.heartbeat = heartbeat
        self.plain_credentials = plain_credentials
        self.identity = identity
        self.socket_type = socket_type
        self.limits = limits or Limits()
        self.reconnect_interval = reconnect_interval
        self.reconnect_interval_max = reconnect_interval_max
        self.connect_timeout = connect_timeout
        #: The live, handshaken connection, if any.
        self.connection: DealerConnection | None = None
        #: Connection attempts, and successful handshakes (1 + the reconnects).
        self.attempts = 0
        self.connects = 0
        #: Set when the peer refused us with ERROR; no reconnect after it.
        self.error: BaseException | None = None
        self._ready: anyio.Event | None = None
        self._inbox: deque[list[bytes]] = deque()
        self._inbox_event: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self._closed = False
        self._task_group: TaskGroup | None = None

    # -- the connection loop ---------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect with backoff, until cancelled or refused."""
        self._ready = anyio.Event()
        self._closed = False
        task_status.started()
        try:
            await self._connect_loop()
        finally:
            # Cancelled or refused: nobody may wait for a connection forever.
            self._closed = True
            self._wake_all()

    async def _connect_loop(self) -> None:
        delay = self.reconnect_interval
        while self.error is None:
            self.attempts += 1
            try:
                connection = await DealerConnection.connect(self.address, timeout=self.connect_timeout, dealer=self)
            except (OSError, TimeoutError) as exc:
                log.debug("zmtp dealer: connect to %s:%d failed: %s", *self.address, exc)
            else:
                await connection.run()
                reason = connection.close_reason
                if isinstance(reason, PeerError):
                    self.error = reason
                    log.warning("zmtp dealer: %s:%d refused us: %s; not reconnecting", *self.address, reason.reason)
                    return
                if isinstance(reason, DowngradeRefused):
                    # We asked for PLAIN; a 2.0 peer cannot give it, and will
                    # not learn to by the next attempt.
                    self.error = reason
                    log.error("zmtp dealer: %s:%d: %s; not reconnecting", *self.address, reason)
                    return
                if connection.engine.ready:
                    delay = self.reconnect_interval
            await anyio.sleep(delay)  # backoff before the next attempt
            delay = min(delay * 2, self.reconnect_interval_max)

    async def __aenter__(self) -> Dealer:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._task_group.start(self.run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        assert group is not None
        group.cancel_scope.cancel()
        return await group.__aexit__(exc_type, exc, tb)

    def _attach(self, connection: DealerConnection) -> None:
        self.connection = connection
        self.connects += 1
        assert self._ready is not None
        self._ready.set()

    def _detach(self, connection: DealerConnection) -> None:
        if self.connection is connection:
            self.connection = None
            self._ready = anyio.Event()

    def _wake_all(self) -> None:
        for event in (self._ready, self._inbox_event, self._space):
            if event is not None:
                event.set()

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error.with_traceback(None)
        if self._closed:
            raise anyio.ClosedResourceError("the dealer is closed")

    # -- messages ----------------------------------------------------------------

    async def wait_connected(self) -> DealerConnection:
        """Wait until a connection is handshaken; raise if the peer refused us."""
        while True:
            self._check_open()
            connection = self.connection
            if connection is not None:
                return connection
            if self._ready is None:
                raise RuntimeError("the dealer is not running (use it as an async context manager)")
            if self._ready.is_set():  # fired for a connection that is gone again
                self._ready = anyio.Event()
            await self._ready.wait()

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one message, waiting for a connection if there is none.

        Raises :class:`~sota_dispatch.ConnectionLost` if the connection drops
        while the message is being sent (it may or may not have arrived).
        """
        connection = await self.wait_connected()
        try:
            await connection.writer.send(connection.engine.encode(list(frames)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(exc) from exc

    async def on_message(self, frames: list[bytes]) -> None:
        """Handle a message from the peer; the default queues it for :meth:`receive`.

        With ``receive_hwm`` messages queued it waits for :meth:`receive` to
        take one, and meanwhile the connection stops reading, so the peer
        feels TCP backpressure (libzmq's receive high-water mark).
        """
        while len(self._inbox) >= self.receive_hwm:
            if self._closed:
                return
            if self._space is None or self._space.is_set():
                self._space = anyio.Event()
            await self._space.wait()
        self._inbox.append(frames)
        if self._inbox_event is not None:
            self._inbox_event.set()

    async def receive(self) -> list[bytes]:
        """The next message kept by the default :meth:`on_message`.

        Raises the peer's refusal, or :class:`anyio.ClosedResourceError`
        once the dealer has stopped and its queue is empty.
        """
        while not self._inbox:
            self._check_open()
            # Shared by concurrent receivers; replaced only once it fired.
            if self._inbox_event is None or self._inbox_event.is_set():
                self._inbox_event = anyio.Event()
            await self._inbox_event.wait()
        if self._space is not None:
            self._space.set()
        return self._inbox.popleft()
