"""Trace context through the proxy: bolt's SOFA tracer headers and dubbo's
tracing attachments reach the upstream untouched (real peers: anthunder,
dubbo-ssl-python), and a listener with ``tracing`` records one
OpenTelemetry span per request, carrying them."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from xprotocol_support import (
    DUBBO_CALL_TIMEOUT,
    SERVICE,
    UpperService,
    anthunder_server,
    anthunder_service,
    close_dubbo_connection,
    request,
)

from sota_dispatch import ConfigError
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import free_port, running_proxy, serving
from sota_xprotocol import BoltDispatcher, BoltEchoDispatcher, DubboDispatcher, DubboEchoDispatcher, bolt, dubbo

pytestmark = pytest.mark.anyio

SOFA_TRACE_ID = "0a1b2c3d1733201234567100112345"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def document(protocol: str, endpoint: str, tracing: object = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "rpc", "address": "127.0.0.1:0", "protocol": protocol}
    listener["routes"] = [{"cluster": "up"}]
    if tracing is not None:
        listener["tracing"] = tracing
    return {"listeners": [listener], "clusters": [{"name": "up", "endpoints": [endpoint]}]}


@asynccontextmanager
async def proxy_for(doc: dict[str, Any]) -> AsyncIterator[tuple[Proxy, str, int]]:
    async with running_proxy(parse_config(doc)) as proxy:
        host, _, port = proxy.addresses["rpc"].rpartition(":")
        yield proxy, host, int(port)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The spans of proxies built in the test (a provider of the test's own,
    not the process's global one, which can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", lambda name, *args, **kwargs: provider.get_tracer(name))
    yield exporter
    provider.shutdown()


def anthunder_call(host: str, port: int, service: str, body: bytes, **headers: str) -> bytes:
    from anthunder import SERVICE_MAP, Client
    from mytracer import SpanContext

    SERVICE_MAP[service] = (host, port)
    context = SpanContext(sofaTraceId=SOFA_TRACE_ID, sofaRpcId="0.1")
    result: bytes = Client("sota-tests").invoke_sync(service, "echo", body, spanctx=context, timeout_ms=5000, **headers)
    return result


class RecordingBolt(BoltEchoDispatcher):
    headers: ClassVar[list[dict[str, str]]] = []

    def on_request(self, frame: bolt.BoltFrame) -> bytes | None:
        RecordingBolt.headers.append(dict(frame.header))
        return super().on_request(frame)


class RecordingDubbo(DubboEchoDispatcher):
    bodies: ClassVar[list[bytes]] = []

    def on_request(self, frame: dubbo.DubboFrame) -> bytes | None:
        RecordingDubbo.bodies.append(frame.body)
        return super().on_request(frame)


# -- forwarded untouched -------------------------------------------------------------


async def test_anthunders_sofa_trace_context_reaches_anthunders_server_through_the_proxy() -> None:
    seen: list[dict[str, str]] = []

    class TracedUpper(UpperService):
        def echo(self, body: bytes) -> bytes:
            seen.append({key: str(value) for key, value in self.ctx.baggage.items()})
            return super().echo(body)

    with anthunder_server() as (host, port, listener):
        service = anthunder_service()
        listener.handler.register_interface(service, TracedUpper)
        async with proxy_for(document("bolt", f"{host}:{port}")) as (_, proxy_host, proxy_port):
            reply = await anyio.to_thread.run_sync(anthunder_call, proxy_host, proxy_port, service, b"hi")
    assert reply == b"HI"
    assert seen == [{"sofaTraceId": SOFA_TRACE_ID, "sofaRpcId": "0.1"}]  # as the client's tracer sent them


async def test_bolt_trace_headers_are_forwarded_byte_for_byte() -> None:
    RecordingBolt.headers = []
    async with serving(RecordingBolt) as upstream:
        assert upstream.address is not None
        async with proxy_for(document("bolt", upstream.address)) as (_, host, port):
            service = anthunder_service()
            reply = await anyio.to_thread.run_sync(
                lambda: anthunder_call(host, port, service, b"x", traceparent=TRACEPARENT, sw8="1-abc")
            )
    assert reply == b"x"
    [header] = RecordingBolt.headers
    assert header["rpc_trace_context.sofaTraceId"] == SOFA_TRACE_ID
    assert header["rpc_trace_context.sofaRpcId"] == "0.1"
    assert (header["traceparent"], header["sw8"]) == (TRACEPARENT, "1-abc")
    assert BoltDispatcher.trace_headers(_frame_with(header)) == {
        "rpc_trace_context.sofaTraceId": SOFA_TRACE_ID,
        "rpc_trace_context.sofaRpcId": "0.1",
        "traceparent": TRACEPARENT,
        "sw8": "1-abc",
    }


def _frame_with(header: dict[str, str]) -> bolt.BoltFrame:
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST, bolt.CmdCode.RPC_REQUEST, 1, header_bytes=bolt.encode_header_map(header)
    )


def dubbo_call(address: str, context: dict[str, str]) -> Any:
    from dubbo_ssl.client import DubboClient

    client = DubboClient("com.example.EchoService", group="g1", version="1.0.0", host=address)
    try:
        return client.call("echo", ("traced",), context=context, timeout=DUBBO_CALL_TIMEOUT)
    finally:
        close_dubbo_connection(address)


async def test_dubbo_tracing_attachments_are_forwarded_byte_for_byte() -> None:
    RecordingDubbo.bodies = []
    context = {"traceparent": TRACEPARENT, "sw8": "1-abc", "X-B3-TraceId": "80f198ee56343ba8"}
    async with serving(RecordingDubbo) as upstream:
        assert upstream.address is not None
        async with proxy_for(document("dubbo", upstream.address)) as (_, host, port):
            reply = await anyio.to_thread.run_sync(dubbo_call, f"{host}:{port}", context)
        direct = await anyio.to_thread.run_sync(dubbo_call, upstream.address, context)
    assert reply == direct == "traced"
    through_proxy, sent_directly = RecordingDubbo.bodies
    assert through_proxy == sent_directly  # the body, attachments and all, as the client wrote it
    frame = dubbo.DubboFrame(dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, 0, through_proxy)
    assert DubboDispatcher.trace_headers(frame) == context
    assert DubboDispatcher.rpc_names(frame) == ("com.example.EchoService", "echo")
    assert DubboDispatcher.frame_size(frame) is None  # built here: no raw bytes
    [decoded] = dubbo.DubboDecoder().feed(frame.encode())
    assert DubboDispatcher.frame_size(decoded) == len(frame.encode())  # for the access log's bytes_received


# -- spans ------------------------------------------------------------------------------


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    return span


async def test_a_bolt_request_with_a_sofa_trace_id_makes_one_span_carrying_it(spans: InMemorySpanExporter) -> None:
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        async with proxy_for(document("bolt", upstream.address, {"enabled": True})) as (_, host, port):
            service = anthunder_service()
            assert await anyio.to_thread.run_sync(anthunder_call, host, port, service, b"x") == b"x"
    span = only_span(spans)
    assert span.kind is trace.SpanKind.SERVER
    assert span.name == f"{service}/echo"
    attributes = dict(span.attributes or {})
    assert attributes["sota.trace.rpc_trace_context.sofaTraceId"] == SOFA_TRACE_ID
    assert attributes["sota.trace.rpc_trace_context.sofaRpcId"] == "0.1"
    assert {k: attributes[k] for k in ("rpc.system", "rpc.service", "rpc.method", "sota.cluster", "sota.outcome")} == {
        "rpc.system": "bolt",
        "rpc.service": service,
        "rpc.method": "echo",
        "sota.cluster": "up",
        "sota.outcome": "success",
    }
    assert attributes["sota.upstream.address"] == upstream.address
    assert attributes["sota.status"] == 0  # bolt's SUCCESS
    assert span.parent is None  # no traceparent: a root span
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time < span.end_time
    assert span.status.is_ok


async def test_a_traceparent_makes_the_span_its_child(spans: InMemorySpanExporter) -> None:
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        doc = document("bolt", upstream.address, {})  # an empty mapping: every default, tracing on
        async with proxy_for(doc) as (_, host, port):
            service = anthunder_service()
            call = lambda: anthunder_call(host, port, service, b"x", traceparent=TRACEPARENT)  # noqa: E731
            assert await anyio.to_thread.run_sync(call) == b"x"
    span = only_span(spans)
    assert span.parent is not None
    assert f"{span.parent.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert f"{span.parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    assert span.context is not None
    assert span.context.trace_id == span.parent.trace_id


async def test_a_dubbo_span_names_the_call(spans: InMemorySpanExporter) -> None:
    async with serving(DubboEchoDispatcher) as upstream:
        assert upstream.address is not None
        async with proxy_for(document("dubbo", upstream.address, {"enabled": True})) as (_, host, port):
            assert await anyio.to_thread.run_sync(dubbo_call, f"{host}:{port}", {"sw8": "1-abc"}) == "traced"
    span = only_span(spans)
    attributes = dict(span.attributes or {})
    assert span.name == "com.example.EchoService/echo"
    assert attributes["sota.trace.sw8"] == "1-abc"
    assert attributes["sota.status"] == dubbo.DubboStatus.OK


async def test_a_failed_request_makes_an_error_span(spans: InMemorySpanExporter) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with (
        proxy_for(document("bolt", dead, {"enabled": True})) as (_, host, port),
        await anyio.connect_tcp(host, port) as stream,
    ):
        await stream.send(request(b"x", request_id=5).encode())
        decoder = bolt.BoltDecoder()
        frames: list[bolt.BoltFrame] = []
        with anyio.fail_after(10):
            while not frames:
                frames = decoder.feed(await stream.receive())
    assert frames[0].status != bolt.ResponseStatus.SUCCESS
    span = only_span(spans)
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "no_healthy_upstream"
    attributes = dict(span.attributes or {})
    assert attributes["sota.outcome"] == "no_healthy_upstream"
    assert "sota.status" not in attributes  # no upstream answer: no status
    assert attributes["rpc.service"] == SERVICE


async def test_an_access_log_and_tracing_together_see_the_same_request(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        doc = document("bolt", upstream.address, {"enabled": True})
        doc["listeners"][0]["access_log"] = "%PROTOCOL% %RESPONSE_CODE% %UPSTREAM_HOST% %BYTES_RECEIVED%"
        async with proxy_for(doc) as (_, host, port):
            service = anthunder_service()
            assert await anyio.to_thread.run_sync(anthunder_call, host, port, service, b"x") == b"x"
    [record] = [r for r in caplog.records if r.name == "sota_dispatch.access"]
    protocol, status, endpoint, received = record.getMessage().split(" ")
    assert (protocol, status, endpoint) == ("bolt", "0", upstream.address)  # bolt's SUCCESS status
    assert int(received) > 100  # the bolt frame anthunder sent, headers and all
    assert only_span(spans).attributes is not None


async def test_with_tracing_off_there_is_no_span_and_no_observer(spans: InMemorySpanExporter) -> None:
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        for tracing in (None, {"enabled": False}):
            async with proxy_for(document("bolt", upstream.address, tracing)) as (proxy, host, port):
                assert proxy.listeners[0].observer is None  # the request path tests one None
                service = anthunder_service()
                assert await anyio.to_thread.run_sync(anthunder_call, host, port, service, b"x") == b"x"
    assert spans.get_finished_spans() == ()


def test_tracing_without_opentelemetry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # the import now fails
    with pytest.raises(ConfigError) as caught:
        parse_config(document("bolt", "127.0.0.1:1", {"enabled": True}))
    assert str(caught.value).startswith(
        "listeners[0].tracing.enabled: tracing needs opentelemetry-api (pip install 'sota-dispatch[otel]')"
    )
    parse_config(document("bolt", "127.0.0.1:1", {"enabled": False}))  # off: no need of it
