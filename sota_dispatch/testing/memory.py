"""In-memory streams and the conformance checks a protocol author runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import anyio
import attrs
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import ProtocolError
from ..protocol.context import ConnectionContext
from ..protocol.registry import DispatcherFactory, Match
from ..proxy.listener import auto_candidates

__all__ = [
    "Exchange",
    "MemoryByteStream",
    "check_clean_shutdown",
    "check_garbage",
    "check_sniff",
    "check_split_invariance",
    "exchange",
    "memory_stream_pair",
]


class MemoryByteStream(ByteStream):
    """One end of an in-memory byte pipe; see :func:`memory_stream_pair`.

    Each ``send()`` arrives as one ``receive()`` on the other end (split only
    if larger than ``max_bytes``), so tests choose the chunking.
    """

    def __init__(self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._leftover:
            self._leftover = await self._receive.receive()
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        if item:
            await self._send.send(bytes(item))

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair(max_chunks: float = 64) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected streams; each direction buffers up to ``max_chunks`` sends.

    A full direction makes ``send()`` wait, like a socket whose peer does not
    read, so backpressure can be tested too.
    """
    a_send, b_receive = anyio.create_memory_object_stream[bytes](max_chunks)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](max_chunks)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


@attrs.frozen
class Exchange:
    """What a dispatcher did with one connection's input."""

    #: Every byte the dispatcher wrote, in order.
    output: bytes
    #: The dispatcher's :attr:`~sota_dispatch.Dispatcher.close_reason`.
    close_reason: BaseException | None


async def exchange(
    factory: DispatcherFactory,
    chunks: Iterable[bytes],
    *,
    options: Mapping[str, str] | None = None,
    protocol: str = "",
    close_input: bool = True,
    timeout: float = 10.0,
) -> Exchange:
    """Run one dispatcher on an in-memory connection.

    Sends each chunk as a separate receive, then (``close_input``) closes the
    input; collects the output until the dispatcher closes the connection.
    Raises :class:`TimeoutError` if it does not finish within ``timeout``.
    """
    client, server = memory_stream_pair(max_chunks=float("inf"))
    dispatcher = factory(server, ConnectionContext(protocol=protocol, options=dict(options or {})))
    output = bytearray()

    async def collect() -> None:
        try:
            while True:
                output.extend(await client.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            tg.start_soon(collect)
            try:
                for chunk in chunks:
                    await client.send(chunk)
                if close_input:
                    await client.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the dispatcher closed early (e.g. an over-long line)
    return Exchange(bytes(output), dispatcher.close_reason)


async def check_split_invariance(
    factory: DispatcherFactory,
    data: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> bytes:
    """Assert that splitting ``data`` at any offset yields the same output.

    Returns that output. Costs one dispatcher run per byte of ``data``.
    """
    whole = await exchange(factory, [data], options=options)
    for cut in range(1, len(data)):
        split = await exchange(factory, [data[:cut], data[cut:]], options=options)
        assert split.output == whole.output, f"output differs when the input is split at offset {cut}"
        assert type(split.close_reason) is type(whole.close_reason), (
            f"close reason differs when the input is split at offset {cut}: "
            f"{split.close_reason!r} vs {whole.close_reason!r}"
        )
    return whole.output


async def check_garbage(
    factory: DispatcherFactory,
    data: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> Exchange:
    """Assert that ``data`` ends the connection in order or with a ProtocolError.

    Anything else (a ``KeyError`` from a parser, a hang) is a defect.
    """
    result = await exchange(factory, [data], options=options)
    reason = result.close_reason
    assert reason is None or isinstance(reason, ProtocolError), f"garbage raised {reason!r}, not a ProtocolError"
    return result


async def check_clean_shutdown(
    factory: DispatcherFactory,
    requests: bytes,
    *,
    options: Mapping[str, str] | None = None,
) -> Exchange:
    """Assert that complete requests followed by EOF close with no error."""
    result = await exchange(factory, [requests], options=options)
    assert result.close_reason is None, f"clean EOF closed with {result.close_reason!r}"
    return result


def check_sniff(protocol: str, data: bytes) -> int:
    """Assert that ``auto`` detection picks ``protocol`` for a connection
    that starts with ``data``, however its first bytes arrive.

    The proxy peeks one byte more each time no protocol has claimed the
    prefix, so the verdicts on every prefix decide it: among the protocols
    ``auto`` chooses from (installed or registered, proxiable, with a
    sniffer), ``protocol`` must be the only one to claim the first prefix
    anyone claims, and must ask for more until then. Returns the length of
    that prefix.
    """
    candidates = dict(auto_candidates())
    assert protocol in candidates, (
        f"{protocol!r} is not one auto chooses from ({', '.join(candidates) or 'none'}): "
        "not registered, not proxiable or without a sniffer"
    )
    for size in range(1, len(data) + 1):
        verdicts = {name: info.sniff(data[:size]) for name, info in candidates.items()}
        claimed = [name for name, verdict in verdicts.items() if verdict is Match.YES]
        if claimed:
            assert claimed == [protocol], f"the first {size} bytes are claimed by {claimed}: {verdicts}"
            return size
        # Nothing claimed yet: the right one must still be waiting for more.
        assert verdicts[protocol] is Match.NEED_MORE, f"{protocol!r} gave up after {size} bytes: {verdicts}"
    raise AssertionError(f"{protocol!r} never claimed the {len(data)} bytes")
