"""The I/O steps every ZMTP connection shares, on the core's codec loop.

The handshake, large reads, PONGs and ERRORs written for the engine, the
frame timeout and the drain at a message boundary are the core's
:class:`~sota_dispatch.CodecLoop`; here is what only ZMTP has: delivering
messages to a ROUTER or DEALER, and heartbeats (our PINGs, the peer's TTL).
The ROUTER and DEALER roles differ only in what they do with a message.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from sota_dispatch import CodecLoop, Dispatcher, ProtocolError
from sota_dispatch.protocol.serving import EARLY_REPLIES

from .engine import ZmtpEngine

__all__ = ["Heartbeat", "Liveness", "keepalive", "open_loop", "pump", "start_keepalive"]

K = TypeVar("K")


def open_loop(dispatcher: Dispatcher, engine: ZmtpEngine, timeout: float) -> CodecLoop[list[bytes]]:
    """The core's loop over ``engine`` on ``dispatcher``'s connection: the
    handshake within ``timeout`` seconds (``await loop.handshake()`` returns
    the messages that came with it), then every read batch, even one that
    completed no message (the heartbeat watcher counts any input)."""
    loop: CodecLoop[list[bytes]] = dispatcher.codec_loop(engine, handshake_timeout=timeout, empty_batches=True)
    return loop


@attrs.frozen
class Heartbeat:
    """Our side of ZMTP 3.1 heartbeats (libzmq's ``HEARTBEAT_*`` options).

    Every ``interval`` seconds we send a PING announcing ``ttl`` (the peer
    may close if it hears nothing from us for that long); a peer silent for
    ``timeout`` seconds (default: three intervals), or for the TTL of its own
    last PING if shorter, is closed. Only 3.1 peers have PING, so only they
    are pinged and timed out: a 2.0 or 3.0 peer cannot show it is alive
    while idle, and libzmq keeps it (see :func:`start_keepalive`).
    """

    interval: float
    timeout: float | None = None
    ttl: float | None = None

    def __attrs_post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("the heartbeat interval must be positive")


@attrs.define
class Liveness:
    """What the heartbeat watcher needs to know of the connection's input."""

    #: When input last arrived (:func:`anyio.current_time`), per read batch.
    last_input: float = 0.0
    #: True while the connection delivers messages: it is not reading, so
    #: the peer cannot look silent meanwhile.
    busy: bool = False
    #: True once a watcher runs (ours, or one started for the peer's TTL).
    watched: bool = False


async def pump(
    dispatcher: Dispatcher,
    loop: CodecLoop[list[bytes]],
    deliver: Callable[[K, list[bytes]], Awaitable[None]],
    key: K,
    liveness: Liveness,
) -> None:
    """Deliver every message as ``deliver(key, frames)`` until the peer
    closes or the connection drains (the loop's handshake must be done).

    One read serves every message in it; PONGs the engine queued go out with
    the next flush, which the reader does before it waits for more input. A
    peer whose PING carries a TTL gets a watcher even if we configured no
    heartbeat: libzmq arms that timer from any PING.
    """
    engine = loop.codec
    assert isinstance(engine, ZmtpEngine)
    writer = dispatcher.writer
    async for messages in loop:
        liveness.last_input = anyio.current_time()
        if messages:
            liveness.busy = True
            for delivered, message in enumerate(messages, 1):
                await deliver(key, message)
                if delivered == EARLY_REPLIES and writer.pending:
                    # What the handlers answered this peer so far goes now,
                    # the rest with the batch, as a local service's replies
                    # do (see EARLY_REPLIES): a pipelining DEALER reads and
                    # sends again meanwhile.
                    writer.flush_nowait()
            liveness.busy = False
        if engine.peer_ttl is not None and not liveness.watched:
            liveness.watched = True
            dispatcher.start_soon(keepalive, dispatcher, engine, None, liveness)


def start_keepalive(
    dispatcher: Dispatcher, engine: ZmtpEngine, heartbeat: Heartbeat | None, liveness: Liveness
) -> None:
    """Start :func:`keepalive` after the handshake if our heartbeat applies.

    It applies to ZMTP 3.1 peers only. A 2.0 or 3.0 peer has no PING to
    answer, so an idle one would look silent and be closed every timeout;
    it reconnects, and requests in flight meanwhile are lost. libzmq keeps
    such peers. A PING with a TTL still gets a watcher from :func:`pump`
    (``liveness.watched`` stays false for it).
    """
    if heartbeat is None or engine.version != (3, 1):
        return
    liveness.watched = True
    dispatcher.start_soon(keepalive, dispatcher, engine, heartbeat, liveness)


async def keepalive(
    dispatcher: Dispatcher, engine: ZmtpEngine, heartbeat: Heartbeat | None, liveness: Liveness
) -> None:
    """Send our PINGs (3.1 peers) and close a silent peer; a connection helper task.

    Silent means no input for our timeout, or for the TTL of the peer's last
    PING if that is shorter. Our timeout counts only for a peer we PING (it
    has something to answer); otherwise only the peer's TTL counts.
    """
    liveness.watched = True
    pings = heartbeat is not None and engine.version == (3, 1)
    interval = heartbeat.interval if heartbeat is not None and pings else math.inf
    ttl = 0 if heartbeat is None or heartbeat.ttl is None else min(0xFFFF, round(heartbeat.ttl * 10))
    timeout = math.inf
    if heartbeat is not None and pings:
        timeout = heartbeat.timeout if heartbeat.timeout is not None else 3 * heartbeat.interval
    next_ping = anyio.current_time() + interval if pings else math.inf
    while True:
        now = anyio.current_time()
        limit = timeout if engine.peer_ttl is None else min(timeout, engine.peer_ttl)
        if liveness.busy:
            liveness.last_input = now  # delivering, not reading: not the peer's silence
        silent_until = liveness.last_input + limit
        if now >= silent_until:
            raise ProtocolError(f"peer silent for {now - liveness.last_input:.1f}s (heartbeat timeout {limit:.1f}s)")
        if now >= next_ping:
            engine.ping(ttl)
            dispatcher.writer.write(engine.data_to_send())
            dispatcher.flush_soon()
            next_ping = now + interval
        await anyio.sleep_until(min(next_ping, silent_until))
