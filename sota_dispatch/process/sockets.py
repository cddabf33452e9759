"""The listening sockets a supervisor holds for its workers.

Each listener gets one socket per worker slot, all bound to the same
address with SO_REUSEPORT, so the kernel spreads new connections over the
workers (and no accept wakes every worker). The supervisor keeps every
socket open for its whole life: a worker that dies leaves its socket's
queued connections waiting for the worker that replaces it, and a process
taking over (hot restart) gets the very same sockets, so no connection is
ever refused. Where the OS has no SO_REUSEPORT, every worker accepts on
one shared socket.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import attrs

from ..io.address import parse_address

__all__ = ["BACKLOG", "HAS_REUSEPORT", "ListenSocket", "bind_group", "slot_sockets"]

#: The accept queue asked for (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096

HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT")


@attrs.define(frozen=True)
class ListenSocket:
    """A bound, listening socket: which listener (``key``) and worker slot it is for."""

    key: str
    slot: int
    sock: socket.socket = attrs.field(eq=False)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def _bind(info: tuple[socket.AddressFamily, tuple[object, ...]], port: int, reuseport: bool) -> socket.socket:
    family, address = info
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address[0], port, *address[2:]))
        sock.listen(BACKLOG)
        sock.set_inheritable(False)
        return sock
    except BaseException:
        sock.close()
        raise


def bind_group(key: str, address: str, slots: range, existing: Sequence[ListenSocket] = ()) -> list[ListenSocket]:
    """Sockets for ``slots`` of listener ``key`` on ``address``.

    ``existing`` are the sockets already bound for this listener (taken
    over from a predecessor): new slots join their port. Port 0 picks a
    free port for the first socket; the others join it. Raises
    :class:`OSError` when the address cannot be bound.
    """
    host, port = parse_address(address)
    if existing:
        port = existing[0].port
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos = sorted({(family, sockaddr) for family, _, _, _, sockaddr in found}, key=repr)
    result: list[ListenSocket] = []
    try:
        for slot in slots:
            if result and not HAS_REUSEPORT:
                break  # one shared socket: every worker accepts on it
            for info in infos:
                sock = _bind(info, port, HAS_REUSEPORT)
                if port == 0:
                    port = int(sock.getsockname()[1])
                result.append(ListenSocket(key, slot, sock))
    except BaseException:
        for bound in result:
            bound.sock.close()
        raise
    return result


def slot_sockets(sockets: list[ListenSocket], slot: int, workers: int) -> list[ListenSocket]:
    """The sockets worker ``slot`` of ``workers`` accepts on: those of its
    own slot and of every slot beyond the worker count (a predecessor with
    more workers left them); all of them where there is no SO_REUSEPORT."""
    if not HAS_REUSEPORT:
        return list(sockets)
    return [s for s in sockets if s.slot % workers == slot]
