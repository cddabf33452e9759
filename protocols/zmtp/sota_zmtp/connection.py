"""The I/O steps every ZMTP connection shares: handshake, then the message pump.

Both take the dispatcher and its :class:`~sota_zmtp.ZmtpEngine`; the ROUTER
and DEALER roles differ only in what they do with a message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from sota_dispatch import Dispatcher, ProtocolError

from .engine import ZmtpEngine

__all__ = ["handshake", "pump"]

K = TypeVar("K")


async def handshake(dispatcher: Dispatcher, engine: ZmtpEngine, timeout: float) -> list[list[bytes]]:
    """Exchange greetings and READY within ``timeout`` seconds.

    Returns the messages that arrived together with the handshake. On a
    protocol error the engine's ERROR command (if it queued one) is written
    before the error propagates, so the dispatcher flushes it before closing.
    """
    reader, writer = dispatcher.reader, dispatcher.writer
    messages: list[list[bytes]] = []
    writer.write(engine.data_to_send())
    try:
        with anyio.fail_after(timeout):
            while not engine.handshake_done:
                await writer.flush()
                messages = engine.feed(await reader.read_some())
                writer.write(engine.data_to_send())
    except TimeoutError:
        raise ProtocolError(f"no ZMTP handshake within {timeout}s") from None
    except ProtocolError:
        writer.write(engine.data_to_send())
        raise
    await writer.flush()
    return messages


async def pump(
    dispatcher: Dispatcher,
    engine: ZmtpEngine,
    messages: list[list[bytes]],
    deliver: Callable[[K, list[bytes]], Awaitable[None]],
    key: K,
) -> None:
    """Deliver every message as ``deliver(key, frames)`` until the peer closes.

    One read serves every message in it; PONGs the engine queued go out with
    the next flush, which the reader does before it waits for more input.
    """
    reader, writer = dispatcher.reader, dispatcher.writer
    while True:
        for message in messages:
            await deliver(key, message)
        messages = engine.feed(await reader.read_some())
        out = engine.data_to_send()
        if out:
            writer.write(out)
