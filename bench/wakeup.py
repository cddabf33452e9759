"""What one wake-up costs on this machine: two processes bounce a byte.

Every pipelined benchmark here is a chain of processes that sleep until the
one before them writes. How much CPU the kernel spends to put one to sleep
and wake it decides how those ratios read across machines. On the 2-vCPU VM
these benchmarks were recorded on (KVM, nested), a wake-up across CPUs cost
25-29 µs of CPU and one on the same CPU 2.8-3.1 µs (both figures include
Python's own ``send`` and ``recv``, about 1 µs): a process that sleeps once
per 40 requests pays over half a µs per request for it, and the hop that
does no work (``relay.py``) got as little as 0.59x of the direct rate. Expect
a few µs for both on bare metal (not measured here).

Two processes, pinned to two CPUs (then both to one), send one byte back
and forth over a socket pair; each round trip is two wake-ups. The figure
is both processes' CPU time (user + system, from ``getrusage``) per
wake-up. ``harness.machine_lines`` runs this as a child process (a fresh
single-threaded interpreter, so ``fork`` is safe) and puts the result in
every report's machine section.

Run alone: ``python bench/wakeup.py`` prints the two figures (``--json``:
one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys

#: Round trips per measurement: about 0.3 s across CPUs where a wake-up
#: costs 25-29 µs, enough for a stable mean (runs agree within a few percent).
ROUNDS = 5_000
#: A peer that has not answered in this long is gone: the measurement fails
#: instead of hanging.
TIMEOUT = 10.0


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def bounce(rounds: int, here: int, there: int) -> float:
    """CPU seconds per wake-up with this process on CPU ``here`` and its
    forked peer on CPU ``there`` (the same CPU when equal)."""
    mine, peers = socket.socketpair()
    mine.settimeout(TIMEOUT)
    peers.settimeout(TIMEOUT)
    before = os.sched_getaffinity(0)
    children_before = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
    pid = os.fork()
    if pid == 0:  # the peer: answer every byte; it never returns into the parent's code
        code = 1
        try:
            mine.close()
            os.sched_setaffinity(0, {there})
            for _ in range(rounds):
                peers.recv(1)
                peers.sendall(b"x")
            code = 0
        finally:
            os._exit(code)
    peers.close()
    try:
        os.sched_setaffinity(0, {here})
        start = _cpu(resource.getrusage(resource.RUSAGE_SELF))
        for _ in range(rounds):
            mine.sendall(b"x")
            if not mine.recv(1):
                raise RuntimeError("the peer left early")
        own = _cpu(resource.getrusage(resource.RUSAGE_SELF)) - start
    finally:
        os.sched_setaffinity(0, before)
        mine.close()
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("the peer failed")
    peer = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - children_before
    return (own + peer) / (2 * rounds)


def measure(rounds: int = ROUNDS) -> dict[str, float | None]:
    """µs of CPU per wake-up across two CPUs (None with one usable CPU) and on one."""
    cpus = sorted(os.sched_getaffinity(0))
    across = bounce(rounds, cpus[0], cpus[1]) * 1e6 if len(cpus) > 1 else None
    same = bounce(rounds, cpus[0], cpus[0]) * 1e6
    return {"across_us": across, "same_us": same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="round trips per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = measure(args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        across = result["across_us"]
        where = "n/a (one usable CPU)" if across is None else f"{across:.1f} µs of CPU per wake-up"
        print(f"across two CPUs: {where}")
        print(f"on one CPU: {result['same_us']:.1f} µs of CPU per wake-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
