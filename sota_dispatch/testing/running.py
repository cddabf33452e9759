"""A server or a whole proxy on 127.0.0.1 for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import attrs

from ..config.model import EndpointConfig, ProxyConfig
from ..io.clock import SYSTEM_CLOCK, Clock
from ..io.tls import ServerTLS
from ..protocol.registry import DispatcherFactory
from ..protocol.server import Server
from ..proxy.proxy import Proxy

__all__ = ["running_proxy", "running_with_backends", "serving"]


@asynccontextmanager
async def serving(
    factory: DispatcherFactory,
    listen: str = "127.0.0.1:0",
    *,
    options: Mapping[str, str] | None = None,
    drain_timeout: float = 2.0,
    tls: ServerTLS | None = None,
) -> AsyncIterator[Server]:
    """Serve ``factory`` for the block; ``server.address`` is the bound
    ``HOST:PORT``. Leaving the block drains (up to ``drain_timeout``).
    ``tls``: serve over TLS."""
    server = Server(factory, listen, options=options, drain_timeout=drain_timeout, tls=tls)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


@asynccontextmanager
async def running_proxy(config: ProxyConfig, *, clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[Proxy]:
    """Run a proxy for the block; ``proxy.addresses`` maps each listener's
    name to its bound ``HOST:PORT``. Leaving the block drains it. ``clock``:
    a :class:`ManualClock` lets the test move the proxy's time."""
    proxy = Proxy(config, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            proxy.shutdown()


@asynccontextmanager
async def running_with_backends(config: ProxyConfig, backends: Mapping[str, DispatcherFactory]) -> AsyncIterator[Proxy]:
    """Run ``config`` on this machine alone, whatever addresses it names:
    each listener (and the admin endpoint) on a free port of 127.0.0.1, and
    each endpoint of cluster ``name`` a local server of ``backends[name]``
    (see :func:`serving`). For running a shipped example config in a test;
    ``proxy.addresses`` maps each listener's name to its bound address."""
    async with AsyncExitStack() as stack:
        clusters = []
        for cluster in config.clusters:
            endpoints: list[EndpointConfig] = []
            for endpoint in cluster.endpoints:
                server = await stack.enter_async_context(serving(backends[cluster.name]))
                assert server.address is not None
                endpoints.append(attrs.evolve(endpoint, address=server.address))
            clusters.append(attrs.evolve(cluster, endpoints=tuple(endpoints)))
        listeners = tuple(attrs.evolve(listener, address="127.0.0.1:0") for listener in config.listeners)
        admin = None if config.admin is None else attrs.evolve(config.admin, address="127.0.0.1:0")
        local = attrs.evolve(config, listeners=listeners, clusters=tuple(clusters), admin=admin)
        yield await stack.enter_async_context(running_proxy(local))
