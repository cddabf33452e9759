"""A libzmq 4.3.4 peer (pyzmq 25.1.2) for the 35-second handshake-interval test.

Run by test_old_libzmq.py with an interpreter that has pyzmq 25.1.2. It
connects a DEALER to our ROUTER and binds a ROUTER for our DEALER, keeps
traffic going for DURATION seconds, and reports as JSON what its socket
monitors saw. libzmq 4.3.3-4.3.4 drop a connection negotiated as ZMTP 2.0
every HANDSHAKE_IVL (30 s by default); a 3.x connection must stay up.
"""

from __future__ import annotations

import json
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message


def drain_events(monitor: zmq.Socket[bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    while True:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except zmq.Again:
            return counts
        name = str(zmq.Event(event["event"]).name)
        counts[name] = counts.get(name, 0) + 1


def main() -> None:
    our_router, duration = sys.argv[1], float(sys.argv[2])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"old-dealer")
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer_events = dealer.get_monitor_socket()
    dealer.connect("tcp://" + our_router)
    router = ctx.socket(zmq.ROUTER)
    router_events = router.get_monitor_socket()
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(json.dumps({"port": port, "libzmq": zmq.zmq_version()}), flush=True)

    dealer_counts: dict[str, int] = {}
    router_counts: dict[str, int] = {}
    rounds = served = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        dealer.send(b"%d" % rounds)
        assert dealer.recv() == b"%d" % rounds
        rounds += 1
        while router.poll(0):
            router.send_multipart(router.recv_multipart())
            served += 1
        for counts, monitor in ((dealer_counts, dealer_events), (router_counts, router_events)):
            for name, n in drain_events(monitor).items():
                counts[name] = counts.get(name, 0) + n
        time.sleep(0.25)  # pacing the traffic, not waiting for a state
    report = {"rounds": rounds, "served": served, "dealer": dealer_counts, "router": router_counts}
    print(json.dumps(report), flush=True)
    dealer.disable_monitor()
    router.disable_monitor()
    ctx.destroy(0)


if __name__ == "__main__":
    main()
