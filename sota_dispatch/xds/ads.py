"""An xDS client: Envoy's Aggregated Discovery Service over gRPC, state of the world.

One bidirectional stream to the control plane carries every subscription
(today: EDS, the ``ClusterLoadAssignment`` of each ``eds`` cluster). The
client sends a ``DiscoveryRequest`` naming its node and the resources it
wants; each ``DiscoveryResponse`` is handed to the proxy, and answered with
an ACK (the response's ``version_info`` and ``nonce``) when applied, or a
NACK (the last version applied, the nonce, and an ``error_detail`` saying
what was wrong) when it is refused, in which case what ran before stays.
A broken stream is opened again with backoff (0.5 s doubling to 30 s,
reset by a response), re-sending the subscriptions; until then the
endpoints stay as they were.

grpcio's asyncio API runs only on asyncio; the proxy also runs on trio. So
the stream is the synchronous one, in a worker thread: requests go to it
through a queue, responses come to the event loop one call at a time (with
the loop's token), and the answer to each goes back on the queue. Closing
the channel ends the thread when the proxy stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ..config.discovery import XdsConfig
from ..errors import ConfigError

__all__ = ["EDS_TYPE", "AdsClient", "EdsSource", "check_xds"]

log = logging.getLogger(__name__)

#: The resource type of endpoint assignments.
EDS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0


def check_xds(path: str) -> None:
    """Raise a :class:`~sota_dispatch.ConfigError` at ``path`` if grpcio or the Envoy API messages are missing."""
    try:
        import grpc  # noqa: F401
        from envoy.service.discovery.v3 import ads_pb2_grpc  # noqa: F401
    except ImportError:
        raise ConfigError(path, "xDS needs grpcio and xds-protos: pip install 'sota-dispatch[xds]'") from None


#: Applies one response's resources (decoded messages) of a type; raises
#: ConfigError to refuse them (the NACK's detail).
Handler = Callable[[str, Sequence[Any]], Awaitable[None]]


class AdsClient:
    """The proxy's one ADS stream. ``subscribe(type_url, names)`` says what
    it wants (sent at once if the stream is up); :meth:`run` keeps the stream
    up until cancelled, handing each response to ``handle``."""

    def __init__(self, config: XdsConfig, handle: Handler) -> None:
        self.config = config
        self._handle = handle
        self._wanted: dict[str, tuple[str, ...]] = {}
        #: The last nonce received per type: a change of subscription names it.
        self._nonces: dict[str, str] = {}
        #: The version last applied, per type (sent back with every request).
        self.versions: dict[str, str] = {}
        #: ``connecting``, ``connected`` or ``stopped``, and since when.
        self.state = "connecting"
        self.state_since = time.time()
        self.acks = 0
        self.nacks = 0
        self.last_error: str | None = None
        self._requests: queue.Queue[Any] | None = None
        self._channel: Any = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {
            "type": "xds",
            "address": self.config.address,
            "state": self.state,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.state_since)),
            "versions": dict(self.versions),
            "acks": self.acks,
            "nacks": self.nacks,
            "last_error": self.last_error,
            "stale": self.state != "connected",
        }

    def subscribe(self, type_url: str, names: Sequence[str]) -> None:
        wanted = tuple(sorted(set(names)))
        with self._lock:  # the stream's thread reads the subscriptions too
            if self._wanted.get(type_url) == wanted:
                return
            self._wanted[type_url] = wanted
            if self._requests is not None:
                self._requests.put(self._request(type_url))

    def _request(self, type_url: str, nonce: str | None = None, error: str | None = None) -> Any:
        from envoy.config.core.v3 import base_pb2
        from envoy.service.discovery.v3 import discovery_pb2
        from google.rpc import status_pb2

        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(
                id=self.config.node_id, cluster=self.config.node_cluster, user_agent_name="sota-dispatch"
            ),
            type_url=type_url,
            resource_names=list(self._wanted.get(type_url, ())),  # a tuple, replaced whole: safe to read
            version_info=self.versions.get(type_url, ""),
            response_nonce=self._nonces.get(type_url, "") if nonce is None else nonce,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error[:4000]))  # INVALID_ARGUMENT
        return request

    async def run(self) -> None:
        """Keep the stream up until cancelled."""
        token = anyio.lowlevel.current_token()
        backoff = _BACKOFF_FIRST
        try:
            while True:
                started = time.monotonic()
                try:
                    answered = await anyio.to_thread.run_sync(self._stream, token, abandon_on_cancel=True)
                except Exception as exc:  # noqa: BLE001 - grpc's errors: the stream is opened again
                    answered = False
                    message = getattr(exc, "details", lambda: None)() or str(exc) or type(exc).__name__
                    level = logging.WARNING if self.state == "connected" else logging.DEBUG
                    log.log(level, "xDS stream to %s ended: %s", self.config.address, message)
                self._set_state("connecting")
                if answered or time.monotonic() - started > _BACKOFF_MAX:
                    backoff = _BACKOFF_FIRST
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        finally:
            self._set_state("stopped")
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._requests is not None:
                self._requests.put(None)
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()  # ends the thread's stream

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = time.time()

    def _stream(self, token: Any) -> bool:
        """One stream, in a worker thread; True if it got a response."""
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc

        requests: queue.Queue[Any] = queue.Queue()
        with self._lock:
            if self.state == "stopped":
                return False
            channel = self._channel = grpc.insecure_channel(self.config.address)
            self._requests = requests
            self._nonces.clear()  # a new stream: nonces of the old one mean nothing
            for type_url in self._wanted:
                requests.put(self._request(type_url))

        def outgoing() -> Iterator[Any]:
            while (request := requests.get()) is not None:
                yield request

        answered = False
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            for response in stub.StreamAggregatedResources(outgoing()):
                if not answered:
                    answered = True
                    anyio.from_thread.run_sync(self._connected, token=token)
                self._nonces[response.type_url] = response.nonce
                error = anyio.from_thread.run(self._apply, response, token=token)
                requests.put(self._request(response.type_url, response.nonce, error))
        finally:
            with self._lock:
                self._requests = None
                if self._channel is channel:
                    self._channel = None
            requests.put(None)
            channel.close()
        return answered

    def _connected(self) -> None:
        log.info("xDS: connected to %s as node %s", self.config.address, self.config.node_id)
        self._set_state("connected")

    async def _apply(self, response: Any) -> str | None:
        """Apply one response in the loop; the NACK's detail, or None to ACK."""
        type_url = response.type_url
        if type_url not in self._wanted:
            error: str | None = f"not subscribed to {type_url}"
        else:
            error = None
            try:
                resources = [_unpack(any_, type_url) for any_ in response.resources]
                await self._handle(type_url, resources)
            except ConfigError as exc:
                error = str(exc)
        if error is None:
            self.versions[type_url] = response.version_info
            self.acks += 1
            self.last_error = None
            log.info("xDS: %s version %s applied", type_url.rpartition(".")[2], response.version_info)
        else:
            self.nacks += 1
            self.last_error = error
            log.error("xDS: %s version %s refused: %s", type_url.rpartition(".")[2], response.version_info, error)
        return error


def _unpack(any_: Any, type_url: str) -> Any:
    if any_.type_url != type_url:
        raise ConfigError("resources", f"a {any_.type_url} in a {type_url} response")
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.generic_proxy.v3 import route_pb2

    kinds = {
        EDS_TYPE: endpoint_pb2.ClusterLoadAssignment,
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": cluster_pb2.Cluster,
        "type.googleapis.com/envoy.config.listener.v3.Listener": listener_pb2.Listener,
        "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.v3.RouteConfiguration": (
            route_pb2.RouteConfiguration
        ),
    }
    kind = kinds.get(type_url)
    if kind is None:
        raise ConfigError("type_url", f"{type_url} is not supported")
    message = kind()
    if not any_.Unpack(message):
        raise ConfigError("resources", f"cannot decode a {type_url}")
    return message


class EdsSource:
    """What an ``eds`` cluster shows of its control plane (``/clusters``):
    the assignment it takes and the last endpoints it got."""

    def __init__(self, client: AdsClient, name: str) -> None:
        self.client = client
        self.name = name
        #: The last endpoints the control plane gave (None: none yet).
        self.endpoints: tuple[Any, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **self.client.describe(),
            "resource": self.name,
            "endpoints": None if self.endpoints is None else len(self.endpoints),
        }
