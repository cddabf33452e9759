"""Messages of one client reach one upstream in the order they were sent.

A DEALER client behind a broker with one service expects its replies in the
order of its requests, as libzmq's ``zmq.proxy`` keeps them. The proxy's
upstream connection refuses new requests while its send buffer is above the
high-water mark (a slow upstream) and queues them; requests that arrived
later must queue behind those, not overtake them once the buffer drains
(seen: a block of ~250 1 KiB replies a few hundred places late).
"""

from __future__ import annotations

import pytest
import zmq
from test_zmtp_proxy import Context, document, proxy_for, router_echo, zmq_backend
from zmtp_support import in_thread, zsocket

pytestmark = pytest.mark.anyio

MESSAGES = 20_000
WINDOW = 1000


def pipelined_in_order(address: str) -> list[tuple[int, int]]:
    """Send MESSAGES numbered 1 KiB messages, WINDOW in flight; return the
    (position, number) of every reply that came out of order."""
    ctx: Context = zmq.Context()
    try:
        sock = zsocket(ctx, zmq.DEALER, address, SNDHWM=100_000, RCVHWM=100_000)
        sent = received = 0
        wrong: list[tuple[int, int]] = []
        while received < MESSAGES:
            while sent < MESSAGES and sent - received < WINDOW:
                sock.send(sent.to_bytes(4, "big") + bytes(1020))
                sent += 1
            number = int.from_bytes(sock.recv_multipart()[0][:4], "big")
            if number != received:
                wrong.append((received, number))
            received += 1
        return wrong[:5]
    finally:
        ctx.destroy(0)


async def test_a_slow_upstream_does_not_reorder_one_clients_messages() -> None:
    with zmq_backend(zmq.ROUTER, router_echo(b"A")) as backend:
        doc = document([backend])
        doc["listeners"][0]["limits"] = {"max_in_flight": 2 * WINDOW}  # the client's whole window
        async with proxy_for(doc) as address:
            assert await in_thread(lambda: pipelined_in_order(address)) == []
