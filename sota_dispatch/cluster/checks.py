"""Active health checks: probe every endpoint of a cluster, on a timer.

One task per checked cluster; each round probes every endpoint at once, on
a fresh connection (never one that carries requests): connect, for a
``protocol`` check run the core's codec loop through the protocol's
handshake and send its probe
(:meth:`~sota_dispatch.FrameSemantics.health_probe`), then judge the first
answer. ``unhealthy_threshold`` failures in a row take an endpoint out of
the balancing; ``healthy_threshold`` successes in a row bring it back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from ..config.health import HealthCheckConfig
from ..errors import ProtocolError
from ..io.address import parse_address
from ..io.reader import BufferedReader
from ..io.tls import ClientTLS, open_connection
from ..io.writer import BufferedWriter
from ..protocol.loop import CodecLoop
from ..protocol.semantics import FrameSemantics

if TYPE_CHECKING:
    from .balancers import Endpoint
    from .cluster import Cluster

__all__ = ["probe", "run_health_checks"]

log = logging.getLogger(__name__)


async def probe(
    address: str,
    check: HealthCheckConfig,
    protocol: type[FrameSemantics] | None,
    options: Any = None,
    max_frame_size: int = 1 << 20,
    tls: ClientTLS | None = None,
) -> bool:
    """One check of ``address``: True if it passed within ``check.timeout``.

    ``options``: the cluster's options (text), for the protocol's client
    codec; ``max_frame_size``: the cluster's, for the answers; ``tls``: the
    cluster's TLS (a handshake that fails fails the check).
    """
    host, port = parse_address(address)
    with anyio.move_on_after(check.timeout):
        try:
            async with await open_connection(host, port, tls) as stream:
                if check.kind == "tcp" or protocol is None:
                    return True
                codec = protocol.client_codec(protocol.option_values(options or {}, "cluster"), max_frame_size)
                writer = BufferedWriter(stream)
                loop = CodecLoop(BufferedReader(stream, writer=writer), writer, codec, empty_batches=True)
                early = await loop.handshake()  # frames sent before the probe answer nothing
                request = protocol.health_probe(check.send, codec)
                if request is None:
                    return True  # connected (and shook hands): all the protocol can tell
                writer.write(request)
                await writer.flush()
                async for frames in loop:
                    if frames and frames is not early:
                        return protocol.health_probe_ok(frames[0])
                    verdict = protocol.health_probe_verdict(codec)
                    if verdict is not None:
                        return verdict
                return False  # closed without an answer
        except (OSError, ProtocolError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False
    return False


async def run_health_checks(cluster: Cluster, protocol: type[FrameSemantics] | None) -> None:
    """Check ``cluster``'s endpoints every interval, until cancelled."""
    check = cluster.config.health_check
    assert check is not None
    # By endpoint; the set may change between rounds (a reload, discovery).
    successes: dict[Endpoint, int] = {}
    failures: dict[Endpoint, int] = {}

    async def one(endpoint: Endpoint) -> None:
        try:
            ok = await probe(
                endpoint.address, check, protocol, cluster.config.options, cluster.config.max_frame_size, cluster.tls
            )
        except Exception:  # a plugin's bug fails the check, not the proxy
            log.exception("cluster %s: the health check of %s failed", cluster.name, endpoint.address)
            ok = False
        cluster.stats.health_checks += 1
        if endpoint not in cluster.endpoints:
            return  # it left the cluster during the probe
        if ok:
            successes[endpoint] = successes.get(endpoint, 0) + 1
            failures[endpoint] = 0
            if endpoint in cluster.unhealthy and successes[endpoint] >= check.healthy_threshold:
                cluster.unhealthy.discard(endpoint)
                log.info("cluster %s: %s passes its health checks again", cluster.name, endpoint.address)
        else:
            cluster.stats.health_check_failures += 1
            failures[endpoint] = failures.get(endpoint, 0) + 1
            successes[endpoint] = 0
            if endpoint not in cluster.unhealthy and failures[endpoint] >= check.unhealthy_threshold:
                cluster.unhealthy.add(endpoint)
                log.warning(
                    "cluster %s: %s failed %d health checks in a row; no traffic until it passes",
                    cluster.name,
                    endpoint.address,
                    failures[endpoint],
                )

    while True:
        for known in (successes, failures):
            for gone in [e for e in known if e not in cluster.endpoints]:
                del known[gone]
        async with anyio.create_task_group() as round_:
            for endpoint in cluster.endpoints:
                round_.start_soon(one, endpoint)
        await cluster.clock.sleep_until(cluster.clock.now() + check.interval)
