"""Messages of one client reach one upstream in the order they were sent.

A DEALER client behind a broker with one service expects its replies in the
order of its requests, as libzmq's ``zmq.proxy`` keeps them. The proxy's
upstream connection refuses new requests while its send buffer is above the
high-water mark (a slow upstream) and queues them; requests that arrived
later must queue behind those, not overtake them once the buffer drains
(seen: a block of ~250 1 KiB replies a few hundred places late).

The stall is made certain, not left to the machine's speed: the service
answers nothing until the client's first window is out, and its socket takes
little (a 4 KiB kernel receive buffer, a receive queue of one message). The
window is 8 MiB (1,000 messages of 8 KiB): Linux lets the proxy's socket
buffer grow to 4 MiB (``tcp_wmem``), so the proxy's own send buffer passes
its high-water mark (256 KiB) by megabytes. With 1 KiB messages nothing
queued behind a full buffer any more, and the test passed without the fix.

The service is a libzmq ROUTER with ``ROUTER_MANDATORY``: without it,
libzmq drops replies silently once its queue towards the proxy looks full,
and it looks full early, since the count it checks is refreshed only every
500 messages read (half the default high-water mark). While the client
thread is slow to read, the proxy rightly stops reading from the service:
a run on a busy machine lost a block of 35 replies starting at number
12,500, every one of which the service had sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import zmq
from test_zmtp_proxy import Context, document, proxy_for, zmq_backend
from zmtp_support import in_thread, zsocket

pytestmark = pytest.mark.anyio

MESSAGES = 5_000
WINDOW = 1000
SIZE = 8192
GATE_TIMEOUT = 10.0


def echo_after(gate: threading.Event) -> Callable[[list[bytes]], list[bytes] | None]:
    """Echo with a tag, the first answer only once ``gate`` is set."""

    def handle(message: list[bytes]) -> list[bytes]:
        if not gate.is_set() and not gate.wait(GATE_TIMEOUT):
            raise ConnectionAbortedError("the client never sent its first window")
        return [*message, b"A"]

    return handle


def pipelined_in_order(address: str, first_window_out: threading.Event) -> list[tuple[int, int]]:
    """Send MESSAGES numbered messages of SIZE bytes, WINDOW in flight; return the
    (position, number) of every reply that came out of order."""
    ctx: Context = zmq.Context()
    try:
        sock = zsocket(ctx, zmq.DEALER, address, SNDHWM=100_000, RCVHWM=100_000)
        sent = received = 0
        wrong: list[tuple[int, int]] = []
        while received < MESSAGES:
            while sent < MESSAGES and sent - received < WINDOW:
                sock.send(sent.to_bytes(4, "big") + bytes(SIZE - 4))
                sent += 1
            first_window_out.set()
            number = int.from_bytes(sock.recv_multipart()[0][:4], "big")
            if number != received:
                wrong.append((received, number))
            received += 1
        return wrong[:5]
    finally:
        ctx.destroy(0)


async def test_a_slow_upstream_does_not_reorder_one_clients_messages() -> None:
    gate = threading.Event()
    small = {"ROUTER_MANDATORY": 1, "RCVHWM": 1, "RCVBUF": 4096}
    with zmq_backend(zmq.ROUTER, echo_after(gate), **small) as backend:
        doc = document([backend])
        doc["listeners"][0]["limits"] = {"max_in_flight": 2 * WINDOW}  # the client's whole window
        async with proxy_for(doc) as address:
            assert await in_thread(lambda: pipelined_in_order(address, gate)) == []
