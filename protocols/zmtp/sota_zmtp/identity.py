"""Routing ids for peers that announce none, shaped as libzmq makes them.

A ROUTER needs an id for every peer; a peer that sends an empty identity
(or none) gets a generated one. The engine only reports what the peer sent,
so generating ids is the router's business and lives here, not in the
engine, with the process-wide counter it needs.
"""

from __future__ import annotations

import itertools
import random

__all__ = ["generate_identity"]

_id_counter = itertools.count(random.getrandbits(32))


def generate_identity() -> bytes:
    """A routing id for a peer that chose none: ``00`` + a 32-bit counter.

    libzmq's shape: 5 bytes, the leading zero marking it as generated.
    """
    return b"\x00" + (next(_id_counter) & 0xFFFFFFFF).to_bytes(4, "big")
