"""A load client for any proxiable protocol, for tests through a proxy.

:func:`pipelined` speaks a protocol through its own class (its client
codec, handshake included, and its frame semantics), so one helper drives
simple_line, bolt, dubbo, ZMTP or a plugin's protocol the same way: a
window of requests in flight on one connection, optionally paced at a rate,
and every answer matched to its request, by id where the protocol has ids
and by order where it has none.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ..io.writer import encoded_bytes
from ..protocol.semantics import FrameSemantics
from .sockets import connect

__all__ = ["pipelined"]


async def pipelined(
    address: str,
    protocol: type[FrameSemantics],
    requests: Sequence[Any],
    *,
    window: int = 100,
    rate: float | None = None,
    options: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Any]:
    """Send ``requests`` (request frames; the class encodes each under an id
    of its own) on one connection to ``address``, at most ``window`` in
    flight, and at most ``rate`` a second if given (sent in 10 ms ticks).
    Returns the response frames in the order of their requests. Raises
    :class:`TimeoutError` after ``timeout`` seconds, and
    :class:`AssertionError` for an answer that matches no request."""
    codec = protocol.client_codec(protocol.option_values(options or {}, "cluster"), 1 << 24)
    responses: list[Any] = [None] * len(requests)
    waiting: dict[int, int] = {}  # id -> request index
    in_order: deque[int] = deque()  # request indexes, for protocols without ids
    received = 0
    with anyio.fail_after(timeout):
        async with await connect(address) as stream:
            hello = codec.data_to_send()
            if hello:
                await stream.send(hello)
            while not codec.ready:
                codec.feed(await stream.receive())
                out = codec.data_to_send()
                if out:
                    await stream.send(out)
            sent = 0
            start = anyio.current_time()
            while received < len(requests):
                allowed = len(requests) if rate is None else int((anyio.current_time() - start) * rate) + 1
                batch = []
                while sent < min(allowed, len(requests)) and sent - received < window:
                    waiting[sent + 1] = sent
                    in_order.append(sent)
                    batch.append(encoded_bytes(protocol.encode_request(requests[sent], sent + 1)))
                    sent += 1
                if batch:
                    await stream.send(b"".join(batch))
                data = b""
                if received < sent:
                    if rate is not None and sent < len(requests):
                        with anyio.move_on_after(0.01):  # the next tick's requests are due
                            data = await stream.receive()
                    else:
                        data = await stream.receive()
                elif rate is not None:
                    await anyio.sleep(0.01)  # pacing: the next tick
                for frame in codec.feed(data) if data else ():
                    if protocol.is_heartbeat(frame):
                        continue
                    answer_id = protocol.response_id(frame)
                    if answer_id is None:
                        assert in_order, f"an answer to no request: {frame!r}"
                        index = in_order.popleft()
                    else:
                        assert answer_id in waiting, f"an answer to no request (id {answer_id}): {frame!r}"
                        index = waiting.pop(answer_id)
                    responses[index] = frame
                    received += 1
    return responses
