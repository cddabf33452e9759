"""bolt and dubbo as protocol classes: options, codecs and frame semantics, once.

:class:`BoltDispatcher` and :class:`DubboDispatcher` declare everything
the core, the proxy and the health checks know of the two protocols; the
echo services (:mod:`~sota_xprotocol.service`) and the multiplexed clients
(:mod:`~sota_xprotocol.client`) are their subclasses. Both are multiplexed
by request id: the proxy gives each forwarded request a fresh upstream id
and the response its downstream id back, by patching the id bytes of the
raw frame (offset 5 for bolt v1, 6 for bolt v2 plus the CRC, 4..11 for
dubbo), as MOSN does; nothing is re-encoded. Heartbeats are answered
locally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
import sota_xprotocol.semantics as semantics
from sota_dispatch import CallAnswer, Codec, Dispatcher, Failure, Match, Option, OptionSchema, ProtocolError

from .calls import bolt_call_request, describe_bolt_answer, describe_dubbo_answer, dubbo_call_request
from .failures import bolt_error_reply, dubbo_error_reply
from .framing import FrameDecoder

__all__ = ["BoltDispatcher", "DubboDispatcher", "XProtocolDispatcher"]

#: Header and attachment names of the tracers RPC services use (compared in
#: lower case), besides SOFA tracer's ``rpc_trace_context.*`` headers: W3C
#: trace context, SkyWalking, Zipkin's B3, Jaeger, SOFA tracer's dubbo filter.
TRACE_KEYS = frozenset(
    {
        "traceparent",
        "tracestate",
        "sw8",
        "sw8-correlation",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "uber-trace-id",
        "sofatraceid",
        "sofarpcid",
    }
)
SOFA_TRACE_PREFIX = "rpc_trace_context."


def _trace_entries(entries: Mapping[Any, Any]) -> dict[str, str]:
    return {
        key: value
        for key, value in entries.items()
        if isinstance(key, str)
        and isinstance(value, str)
        and (key.startswith(SOFA_TRACE_PREFIX) or key.lower() in TRACE_KEYS)
    }


#: The frame size limit of a local service (a proxy's listeners and clusters
#: have their own ``max_frame_size`` setting).
_MAX_FRAME_SIZE = Option(
    f"largest frame accepted, bytes (default {dubbo.DEFAULT_MAX_FRAME_SIZE // (1 << 20)} MiB)",
    Option.positive_int,
    dubbo.DEFAULT_MAX_FRAME_SIZE,
    places=frozenset({"service"}),
)


class XProtocolDispatcher(Dispatcher):
    """What bolt and dubbo share: id-keyed frames with raw bytes."""

    options: ClassVar[OptionSchema] = OptionSchema(max_frame_size=_MAX_FRAME_SIZE)
    pool_mode = "multiplex"
    #: The client sends the first frame (a request or heartbeat).
    speaks_first: ClassVar[bool | None] = False

    @classmethod
    def decoder(cls, max_frame_size: int) -> FrameDecoder[Any]:
        """The protocol's sans-I/O decoder (the same for both sides)."""
        raise NotImplementedError

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> FrameDecoder[Any]:
        return cls.decoder(max_frame_size)

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> FrameDecoder[Any]:
        return cls.decoder(max_frame_size)

    @classmethod
    def request_id(cls, frame: bolt.BoltFrame | dubbo.DubboFrame) -> int:
        return frame.request_id

    @classmethod
    def with_request_id(cls, frame: bolt.BoltFrame | dubbo.DubboFrame, request_id: int) -> bytes:
        """The frame's raw bytes with another id (no re-encode)."""
        return frame.with_request_id(request_id)

    # The per-frame semantics the proxy calls are compiled functions (the
    # semantics module says why), made static methods here; a subclass may
    # override any of them with a classmethod, as in any protocol class.
    encode_request = staticmethod(semantics.encode_request)

    @classmethod
    def frame_size(cls, frame: bolt.BoltFrame | dubbo.DubboFrame) -> int | None:
        """The decoded frame's raw bytes (None for one built in Python)."""
        return len(frame.raw) or None

    encode_response = staticmethod(semantics.encode_response)
    status = staticmethod(semantics.frame_status)


class BoltDispatcher(XProtocolDispatcher):
    """SOFA bolt v1/v2: 32-bit ids, heartbeats, a per-request timeout."""

    protocol_name: ClassVar[str] = "bolt"
    id_bits: ClassVar[int] = 32

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """0x01 (bolt v1) or 0x02 (bolt v2) as the first byte."""
        if not prefix:
            return Match.NEED_MORE
        return Match.YES if prefix[0] in (bolt.BOLT_V1, bolt.BOLT_V2) else Match.NO

    @classmethod
    def decoder(cls, max_frame_size: int) -> bolt.BoltDecoder:
        return bolt.BoltDecoder(max_frame_size=max_frame_size)

    is_request = staticmethod(semantics.bolt_is_request)
    is_heartbeat = staticmethod(semantics.bolt_is_heartbeat)
    response_id = staticmethod(semantics.bolt_response_id)
    is_oneway = staticmethod(semantics.bolt_is_oneway)
    timeout = staticmethod(semantics.bolt_timeout)

    @classmethod
    def heartbeat_reply(cls, frame: bolt.BoltFrame) -> bytes:
        return bolt.heartbeat_ack(frame).encode()

    @classmethod
    def routing_attributes(cls, frame: bolt.BoltFrame) -> Mapping[str, str]:
        """The header map; ``service`` is the key SOFA-RPC routes on."""
        return frame.header

    @classmethod
    def trace_headers(cls, frame: bolt.BoltFrame) -> Mapping[str, str]:
        """SOFA tracer's ``rpc_trace_context.*`` headers (``sofaTraceId``,
        ``sofaRpcId``, ...) and the other tracers' (``traceparent``, ...)."""
        return _trace_entries(frame.header)

    @classmethod
    def rpc_names(cls, frame: bolt.BoltFrame) -> tuple[str | None, str | None]:
        """SOFA-RPC's target service and method headers."""
        header = frame.header
        return header.get("sofa_head_target_service") or header.get("service"), header.get("sofa_head_method_name")

    @classmethod
    def error_reply(cls, request: bolt.BoltFrame, failure: Failure, detail: str = "") -> bytes:
        return bolt_error_reply(request, failure).encode()

    @classmethod
    def heartbeat_request(cls) -> bolt.BoltFrame:
        return bolt.heartbeat_request(0)

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[bolt.BoltFrame]) -> bytes:
        """A bolt heartbeat (what MOSN's keepalive sends)."""
        return bolt.heartbeat_request(1).encode()

    @classmethod
    def health_probe_ok(cls, frame: bolt.BoltFrame) -> bool:
        return frame.is_response and frame.is_heartbeat and frame.status == 0

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> bolt.BoltFrame:
        """A SOFA-RPC request (see :func:`~sota_xprotocol.calls.bolt_call_request`)."""
        return bolt_call_request(words, fields)

    @classmethod
    def describe_answer(cls, frame: bolt.BoltFrame) -> CallAnswer:
        """The status and the content; any status but SUCCESS is an error answer."""
        return describe_bolt_answer(frame)


class DubboDispatcher(XProtocolDispatcher):
    """Dubbo: 64-bit ids, heartbeat events, a ``timeout`` attachment."""

    protocol_name: ClassVar[str] = "dubbo"
    id_bits: ClassVar[int] = 64

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """The magic ``da bb``."""
        if prefix[:2] == dubbo.MAGIC:
            return Match.YES
        return Match.NEED_MORE if prefix == dubbo.MAGIC[: len(prefix)] else Match.NO

    @classmethod
    def decoder(cls, max_frame_size: int) -> dubbo.DubboDecoder:
        return dubbo.DubboDecoder(max_frame_size=max_frame_size)

    is_request = staticmethod(semantics.dubbo_is_request)
    is_heartbeat = staticmethod(semantics.dubbo_is_heartbeat)
    response_id = staticmethod(semantics.dubbo_response_id)
    is_oneway = staticmethod(semantics.dubbo_is_oneway)
    timeout = staticmethod(semantics.dubbo_timeout)

    @classmethod
    def heartbeat_reply(cls, frame: dubbo.DubboFrame) -> bytes:
        """The heartbeat response; none (b"") for a oneway heartbeat event."""
        return dubbo.heartbeat_response(frame).encode() if frame.is_twoway else b""

    @classmethod
    def routing_attributes(cls, frame: dubbo.DubboFrame) -> Mapping[str, str]:
        """``service`` (interface), ``path``, ``method``, ``version``, ``group``,
        and every string attachment."""
        try:
            call = frame.call()  # the arguments are walked over, never built
        except ValueError as exc:  # an event, or a response: no invocation to route on
            raise ProtocolError(f"dubbo frame without an invocation: {exc}") from None
        attributes = {k: v for k, v in call.attachments.items() if isinstance(k, str) and isinstance(v, str)}
        attributes.update(service=call.interface, path=call.path, method=call.method)
        if call.version is not None:
            attributes["version"] = call.version
        if call.group is not None:
            attributes["group"] = call.group
        return attributes

    @classmethod
    def trace_headers(cls, frame: dubbo.DubboFrame) -> Mapping[str, str]:
        """The tracing attachments (``traceparent``, SkyWalking's ``sw8``,
        B3's, SOFA tracer's ...); none for a request that cannot be read."""
        try:
            return _trace_entries(frame.call().attachments)
        except (ValueError, ProtocolError):
            return {}

    @classmethod
    def rpc_names(cls, frame: dubbo.DubboFrame) -> tuple[str | None, str | None]:
        """The interface and the method."""
        try:
            call = frame.call()
        except (ValueError, ProtocolError):
            return None, None
        return call.interface, call.method

    @classmethod
    def error_reply(cls, request: dubbo.DubboFrame, failure: Failure, detail: str = "") -> bytes:
        return dubbo_error_reply(request, failure, detail).encode()

    @classmethod
    def heartbeat_request(cls) -> dubbo.DubboFrame:
        return dubbo.heartbeat_request(0)

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[dubbo.DubboFrame]) -> bytes:
        """A dubbo heartbeat event."""
        return dubbo.heartbeat_request(1).encode()

    @classmethod
    def health_probe_ok(cls, frame: dubbo.DubboFrame) -> bool:
        return not frame.is_request and frame.is_heartbeat and frame.status == dubbo.DubboStatus.OK

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> dubbo.DubboFrame:
        """An invocation with String arguments (see
        :func:`~sota_xprotocol.calls.dubbo_call_request`)."""
        return dubbo_call_request(words, fields)

    @classmethod
    def describe_answer(cls, frame: dubbo.DubboFrame) -> CallAnswer:
        """The status and the result; an exception or a status but OK is an error answer."""
        return describe_dubbo_answer(frame)
