"""One proxy's admin endpoint: a server of admin connections on its own address.

Loopback only unless the config says ``allow_remote`` (which is logged as
a warning at start); at most :data:`MAX_CONNECTIONS` served at once, of
which at most :data:`~.server.MAX_WAITING` may wait for a request head.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskStatus

from ..config.model import AdminConfig
from ..errors import ConfigError
from ..io.address import is_loopback
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from ..protocol.server import Server
from .server import AdminConnection, WaitingConnections
from .view import ProxyView

__all__ = ["MAX_CONNECTIONS", "AdminEndpoint"]

log = logging.getLogger(__name__)

#: Admin connections served at once (a scrape or a curl needs one).
MAX_CONNECTIONS = 64


class AdminEndpoint:
    """An admin endpoint on ``config.address``: ``connection(stream,
    context, waiting)`` builds the dispatcher of each admin connection (an
    :class:`~.server.AdminConnection` for a proxy). ``sockets``: a listening
    socket to accept on instead of binding (a supervisor's)."""

    def __init__(
        self,
        config: AdminConfig,
        connection: Callable[[ByteStream, ConnectionContext, WaitingConnections], Dispatcher],
        *,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.config = config
        self._connection = connection
        #: Connections waiting for their request head (the oldest give way).
        self.waiting = WaitingConnections()
        self.server = Server(
            self.connection, config.address, max_connections=MAX_CONNECTIONS, timeouts=None, sockets=sockets
        )
        #: The bound ``HOST:PORT`` once serving.
        self.address: str | None = None

    @classmethod
    def for_proxy(cls, proxy: ProxyView, config: AdminConfig, metrics: Any) -> AdminEndpoint:
        """A proxy's admin endpoint; ``metrics``: the registry ``/metrics`` renders."""

        def connection(stream: ByteStream, context: ConnectionContext, waiting: WaitingConnections) -> Dispatcher:
            return AdminConnection(stream, context, proxy=proxy, waiting=waiting, metrics=metrics)

        return cls(config, connection)

    def connection(self, stream: ByteStream, context: ConnectionContext) -> Dispatcher:
        return self._connection(stream, context, self.waiting)

    async def serve(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, then serve until cancelled; raises :class:`~sota_dispatch.ConfigError`
        if the address cannot be bound."""
        async with anyio.create_task_group() as tg:
            try:
                self.address = await tg.start(self.server.serve)
            except OSError as exc:
                raise ConfigError(
                    "admin.address", f"cannot listen on {self.config.address}: {exc.strerror or exc}"
                ) from None
            if not is_loopback(self.server.host):
                log.warning(
                    "the admin endpoint listens on %s, beyond this machine: anyone who can reach it "
                    "can drain the proxy and read its config",
                    self.address,
                )
            task_status.started(self.address)
