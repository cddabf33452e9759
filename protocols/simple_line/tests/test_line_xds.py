"""A cluster's endpoints from an xDS control plane (ADS, EDS), against a control plane built on grpcio.

The control plane here speaks Envoy's real API messages
(``envoy.service.discovery.v3.AggregatedDiscoveryService``,
``ClusterLoadAssignment``), as Istio's or go-control-plane's does: it
records every ``DiscoveryRequest`` (subscriptions, ACKs and NACKs) and
sends the responses the test pushes. Traffic runs throughout.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import anyio
import pytest
from simple_line_support import backends, client, config, proxy_for, tags

from sota_dispatch.testing import free_port

pytestmark = pytest.mark.anyio

pytest.importorskip("grpc")  # the xds extra
pytest.importorskip("envoy.service.discovery.v3.ads_pb2_grpc")
import grpc  # noqa: E402
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.core.v3 import address_pb2  # noqa: E402
from envoy.config.core.v3 import extension_pb2 as core_extension_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2  # noqa: E402
from envoy.extensions.filters.network.generic_proxy.action.v3 import action_pb2  # noqa: E402
from envoy.extensions.filters.network.generic_proxy.matcher.v3 import matcher_pb2 as inputs_pb2  # noqa: E402
from envoy.extensions.filters.network.generic_proxy.v3 import generic_proxy_pb2, route_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2  # noqa: E402
from xds.core.v3 import extension_pb2  # noqa: E402
from xds.type.matcher.v3 import matcher_pb2, string_pb2  # noqa: E402

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.extensions.filters.network.generic_proxy.v3.RouteConfiguration"


def packed(message: Any) -> Any:
    value = any_pb2.Any()
    value.Pack(message)
    return value


def eds_cluster(name: str, lb_policy: int = 0) -> Any:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name=name),
        connect_timeout=duration_pb2.Duration(seconds=1),
        lb_policy=lb_policy,
    )


def typed(name: str, message: Any) -> Any:
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=packed(message))


def route_action(cluster: str) -> Any:
    return matcher_pb2.Matcher.OnMatch(action=typed("route", action_pb2.RouteAction(cluster=cluster)))


def routes(name: str, when_c_is_1: str, otherwise: str) -> Any:
    """Generic proxy routes: ``c=1`` to one cluster, the rest to another."""
    predicate = matcher_pb2.Matcher.MatcherList.Predicate(
        single_predicate=matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate(
            input=typed("c", inputs_pb2.PropertyMatchInput(property_name="c")),
            value_match=string_pb2.StringMatcher(exact="1"),
        )
    )
    matcher = matcher_pb2.Matcher(
        matcher_list=matcher_pb2.Matcher.MatcherList(
            matchers=[
                matcher_pb2.Matcher.MatcherList.FieldMatcher(predicate=predicate, on_match=route_action(when_c_is_1))
            ]
        ),
        on_no_match=route_action(otherwise),
    )
    return route_pb2.RouteConfiguration(name=name, routes=matcher)


def generic_listener(name: str, port: int, *, inline: Any = None, rds: str | None = None) -> Any:
    proxy = generic_proxy_pb2.GenericProxy(
        stat_prefix=name, codec_config=core_extension_pb2.TypedExtensionConfig(name="simple_line")
    )
    if inline is not None:
        proxy.route_config.CopyFrom(inline)
    else:
        proxy.generic_rds.route_config_name = rds
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.generic_proxy", typed_config=packed(proxy)
                    )
                ]
            )
        ],
    )


def assignment(name: str, endpoints: list[tuple[str, int]]) -> Any:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(address=host, port_value=port)
                            )
                        ),
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                    )
                    for host, port in endpoints
                ]
            )
        ],
    )


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """One ADS server: what the proxy asked, and a queue of what to answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: queue.Queue[Any] = queue.Queue()
        self.streams: list[queue.Queue[Any]] = []
        self.nonces = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def StreamAggregatedResources(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        out: queue.Queue[Any] = queue.Queue()
        self.streams.append(out)

        def read() -> None:
            try:
                for request in requests:
                    self.requests.put(request)
            except grpc.RpcError:
                pass
            out.put(None)

        threading.Thread(target=read, daemon=True).start()
        while (response := out.get()) is not None:
            yield response

    def push(self, version: str, assignments: dict[str, list[tuple[str, int]]]) -> str:
        """Send every assignment as one response, on the latest stream; its nonce."""
        self.nonces += 1
        resources = []
        for name, endpoints in assignments.items():
            packed = any_pb2.Any()
            packed.Pack(assignment(name, endpoints))
            resources.append(packed)
        nonce = f"n{self.nonces}"
        response = discovery_pb2.DiscoveryResponse(version_info=version, resources=resources, type_url=EDS, nonce=nonce)
        self.streams[-1].put(response)
        return nonce

    def send(self, type_url: str, version: str, messages: list[Any]) -> str:
        """One response of ``type_url`` on the latest stream; its nonce."""
        self.nonces += 1
        nonce = f"n{self.nonces}"
        resources = [packed(message) for message in messages]
        response = discovery_pb2.DiscoveryResponse(
            version_info=version, resources=resources, type_url=type_url, nonce=nonce
        )
        self.streams[-1].put(response)
        return nonce

    def answer_to(self, nonce: str, timeout: float = 10.0) -> Any:
        """The proxy's ACK or NACK of the response ``nonce``."""
        while True:
            request = self.requests.get(timeout=timeout)
            if request.response_nonce == nonce:
                return request

    def subscription(self, type_url: str = EDS, timeout: float = 20.0) -> Any:
        """The next request for ``type_url`` that is not an answer (a new stream's first of that type)."""
        while True:
            request = self.requests.get(timeout=timeout)
            if request.type_url == type_url and not request.response_nonce:
                return request

    def stop(self) -> None:
        for out in self.streams:
            out.put(None)
        self.server.stop(0).wait(5)


class Traffic:
    """Clients that call through the proxy one line at a time until
    stopped, every answer kept; :meth:`more` waits for answers to come."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.answers: list[bytes] = []
        self.stop = anyio.Event()
        self._arrived = anyio.Event()

    async def run(self, listener: str = "lines", line: bytes = b"t=1") -> None:
        async with client(self.proxy, listener) as own:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                self.answers.extend(await own.call(line + b"&i=%d" % i))
                self._arrived.set()

    async def more(self, count: int = 20) -> int:
        """Until ``count`` more answers came (each change lands under traffic); how many there are then."""
        target = len(self.answers) + count
        with anyio.fail_after(10):
            while len(self.answers) < target:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return len(self.answers)


def address_of(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def test_endpoints_come_from_the_control_plane_with_acks_nacks_and_its_restart() -> None:
    port = free_port()
    plane = ControlPlane(port)
    try:
        async with backends("A", "B", "C") as ((_, a), (_, b), (_, c)):
            document = config([], eds="up")
            document["xds"] = {"address": f"127.0.0.1:{port}", "node_id": "proxy-1", "node_cluster": "edge"}
            async with proxy_for(document) as proxy, client(proxy) as calls:
                first = await anyio.to_thread.run_sync(plane.subscription)
                assert (first.node.id, first.node.cluster, first.type_url) == ("proxy-1", "edge", EDS)
                assert list(first.resource_names) == ["up"]
                assert first.version_info == ""

                async def push(version: str, endpoints: list[str]) -> Any:
                    nonce = plane.push(version, {"up": [address_of(e) for e in endpoints]})
                    return await anyio.to_thread.run_sync(plane.answer_to, nonce)

                ack = await push("1", [a])
                assert (ack.version_info, ack.HasField("error_detail")) == ("1", False)
                assert tags(await calls.call(b"x=1", b"x=2")) == [b"A", b"A"]
                ack = await push("2", [a, b])
                assert ack.version_info == "2"
                assert sorted(tags(await calls.call(b"y=1", b"y=2"))) == [b"A", b"B"]

                traffic = Traffic(proxy)
                answers, more = traffic.answers, traffic.more
                async with anyio.create_task_group() as tg:
                    tg.start_soon(traffic.run)
                    await more(20)
                    ack = await push("3", [b])  # A removed while the traffic runs
                    assert ack.version_info == "3"
                    settled = await more(5)  # one call at a time: at most one was on its way to A
                    nack = await push("4", [b, "127.0.0.1:0"])  # a port of 0: refused, B stays
                    assert nack.version_info == "3"  # the last version applied
                    assert nack.error_detail.code == 3
                    assert "resources[0] (up).endpoints[0].lb_endpoints[1]" in nack.error_detail.message
                    assert "port" in nack.error_detail.message
                    plane.stop()  # the control plane goes away, and comes back on the same port
                    after_stop = await more(50)  # traffic goes on meanwhile
                    plane = ControlPlane(port)
                    again = await anyio.to_thread.run_sync(plane.subscription)
                    assert again.version_info == "3"  # it says what it runs
                    assert list(again.resource_names) == ["up"]
                    ack = await push("5", [c])
                    assert ack.version_info == "5"
                    while b"C" not in tags(await calls.call(b"z=1")):
                        pass
                    traffic.stop.set()
                assert all(answer[:2] in (b"A:", b"B:", b"C:") for answer in answers), answers[:3]
                assert len(answers) > after_stop >= settled
                assert set(tags(answers[settled:after_stop])) == {b"B"}
                source = proxy.clusters["backends"].discovery
                described = source.describe()
                assert (described["state"], described["nacks"], described["resource"]) == ("connected", 1, "up")
                assert described["versions"] == {EDS: "5"}
    finally:
        plane.stop()


async def test_a_control_plane_sending_nonsense_is_nacked_and_a_silent_one_changes_nothing() -> None:
    """Resources of another type, and a type never asked for: NACKed, the
    config's endpoints stay. A control plane that never answers: the
    config's endpoints serve, and the proxy still stops at once."""
    port = free_port()
    plane = ControlPlane(port)
    try:
        async with backends("A") as ((_, a),):
            document = config([a], eds="up")
            document["xds"] = {"address": f"127.0.0.1:{port}"}
            async with proxy_for(document) as proxy, client(proxy) as calls:
                await anyio.to_thread.run_sync(plane.subscription)
                assert tags(await calls.call(b"x=1")) == [b"A"]  # nothing assigned yet: the config's
                plane.nonces += 1
                wrong = any_pb2.Any()
                wrong.Pack(discovery_pb2.DiscoveryRequest())  # not an assignment
                plane.streams[-1].put(
                    discovery_pb2.DiscoveryResponse(version_info="1", resources=[wrong], type_url=EDS, nonce="bad1")
                )
                nack = await anyio.to_thread.run_sync(plane.answer_to, "bad1")
                assert "DiscoveryRequest in a" in nack.error_detail.message
                unasked = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
                plane.streams[-1].put(discovery_pb2.DiscoveryResponse(version_info="1", type_url=unasked, nonce="bad2"))
                nack = await anyio.to_thread.run_sync(plane.answer_to, "bad2")
                assert f"not subscribed to {unasked}" in nack.error_detail.message
                assert nack.version_info == ""  # nothing applied yet
                assert tags(await calls.call(b"x=2")) == [b"A"]
                assert proxy.xds is not None
                assert proxy.xds.nacks == 2
    finally:
        plane.stop()
    # Silent: a socket that accepts and never speaks HTTP/2.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host, silent_port = silent.getsockname()
        async with backends("A") as ((_, a),):
            document = config([a], eds="up")
            document["xds"] = {"address": f"{host}:{silent_port}"}
            async with proxy_for(document) as proxy, client(proxy) as calls:
                assert tags(await calls.call(b"y=1", b"y=2")) == [b"A", b"A"]
                assert proxy.xds is not None
                assert proxy.xds.state == "connecting"
                closing = anyio.current_time()
            assert anyio.current_time() - closing < 5


async def test_clusters_listeners_and_routes_from_the_control_plane_under_traffic() -> None:
    """CDS adds a cluster, LDS a listener (which waits for its cluster's
    endpoints), RDS changes its routes, a second cluster joins; an invalid
    cluster is NACKed: all under continuous traffic (on the file's listener
    from the start, on the new one once it is up), every request answered
    by a backend."""
    port, more_port = free_port(), free_port()
    plane = ControlPlane(port)
    try:
        async with backends("A", "B", "C") as ((_, a), (_, b), (_, c)):
            document = config([a])
            document["xds"] = {"address": f"127.0.0.1:{port}"}
            async with proxy_for(document) as proxy, client(proxy) as calls:
                await anyio.to_thread.run_sync(plane.subscription, CDS)

                async def send(type_url: str, version: str, messages: list[Any]) -> Any:
                    nonce = plane.send(type_url, version, messages)
                    return await anyio.to_thread.run_sync(plane.answer_to, nonce)

                def assignment_response(assignments: dict[str, list[str]]) -> list[Any]:
                    return [
                        assignment(name, [address_of(e) for e in endpoints]) for name, endpoints in assignments.items()
                    ]

                traffic = Traffic(proxy)
                answers, flowing = traffic.answers, traffic.more
                async with anyio.create_task_group() as tg:
                    tg.start_soon(traffic.run, "lines", b"c=1")
                    await flowing()
                    assert (await send(CDS, "1", [eds_cluster("dyn")])).version_info == "1"
                    await flowing()
                    inline = routes("inline", when_c_is_1="dyn", otherwise="backends")
                    assert (
                        await send(LDS, "1", [generic_listener("more", more_port, inline=inline)])
                    ).version_info == "1"
                    assert "more" not in proxy.addresses  # warming: dyn has no endpoints yet
                    await flowing()
                    assert (await send(EDS, "1", assignment_response({"dyn": [b]}))).version_info == "1"
                    assert "more" in proxy.addresses  # joined once its cluster had endpoints
                    async with client(proxy, "more") as probe:
                        assert tags(await probe.call(b"c=1", b"c=2")) == [b"B", b"A"]
                        tg.start_soon(traffic.run, "more", b"c=1")
                        tg.start_soon(traffic.run, "more", b"c=2")
                        await flowing()
                        # Routes move to RDS, and c=1 goes to the file's cluster now.
                        rds = routes("r1", when_c_is_1="backends", otherwise="dyn")
                        assert (await send(RDS, "1", [rds])).version_info == "1"
                        listener = generic_listener("more", more_port, rds="r1")
                        assert (await send(LDS, "2", [listener])).version_info == "2"
                        assert tags(await probe.call(b"c=1", b"c=2")) == [b"A", b"B"]
                        await flowing()
                        # A cluster joins and the route takes it.
                        both = [eds_cluster("dyn"), eds_cluster("dyn2")]
                        assert (await send(CDS, "2", both)).version_info == "2"
                        assert (
                            await send(EDS, "2", assignment_response({"dyn": [b], "dyn2": [c]}))
                        ).version_info == "2"
                        assert (await send(RDS, "2", [routes("r1", "dyn2", "dyn")])).version_info == "2"
                        assert tags(await probe.call(b"c=1", b"c=2")) == [b"C", b"B"]
                        await flowing()
                        # An invalid cluster: NACKed, nothing changes.
                        nack = await send(
                            CDS, "3", [eds_cluster("dyn", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)]
                        )
                        assert nack.version_info == "2"
                        assert "resources[0] (dyn).lb_policy" in nack.error_detail.message
                        assert tags(await probe.call(b"c=1", b"c=2")) == [b"C", b"B"]
                        await flowing()
                        traffic.stop.set()
                assert len(answers) >= 140
                assert all(answer[:2] in (b"A:", b"B:", b"C:") for answer in answers), [
                    r for r in answers if r[:2] not in (b"A:", b"B:", b"C:")
                ][:3]
                assert sorted(c.name for c in proxy.config.clusters) == ["backends", "dyn", "dyn2"]
                assert tags(await calls.call(b"c=1")) == [b"A"]  # the file's listener, untouched
    finally:
        plane.stop()
