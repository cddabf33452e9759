"""bolt and dubbo behind the bundled proxy: their :class:`~sota_dispatch.ProxyHooks`.

Both are multiplexed by request id: the proxy gives each forwarded request
a fresh upstream id and the response its downstream id back, by patching
the id bytes of the raw frame (offset 5 for bolt v1, 6 for bolt v2 plus
the CRC, 4..11 for dubbo), as MOSN does; nothing is re-encoded. Heartbeats
are answered locally. :data:`BOLT` and :data:`DUBBO` are the instances the
dispatchers expose as ``proxy_hooks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import Failure, ProtocolError, ProxyCodec, ProxyHooks

from .failures import bolt_error_reply, dubbo_error_reply
from .framing import FrameDecoder

__all__ = ["BOLT", "DUBBO", "BoltHooks", "DubboHooks", "XProtocolHooks"]

F = TypeVar("F", bolt.BoltFrame, dubbo.DubboFrame)


class XProtocolHooks(ProxyHooks[F]):
    """What bolt and dubbo share: id-keyed frames with raw bytes (no
    options of their own: the frame size limit is the listener's and the
    cluster's ``max_frame_size``)."""

    pool_mode = "multiplex"

    def decoder(self, max_frame_size: int) -> FrameDecoder[F]:
        raise NotImplementedError

    def downstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> FrameDecoder[F]:
        return self.decoder(max_frame_size)

    def upstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> FrameDecoder[F]:
        return self.decoder(max_frame_size)

    def request_id(self, frame: F) -> int:
        return frame.request_id

    def with_request_id(self, frame: F, request_id: int) -> bytes:
        """The frame's raw bytes with another id (no re-encode)."""
        return frame.with_request_id(request_id)

    def is_heartbeat(self, frame: F) -> bool:
        return frame.is_heartbeat

    def encode_request(self, frame: F, upstream_id: int) -> bytes:
        return frame.with_request_id(upstream_id)

    def response_id(self, frame: F) -> int | None:
        return None if self.is_request(frame) else frame.request_id

    def encode_response(self, response: F, request: F) -> bytes:
        return response.with_request_id(request.request_id)

    def status(self, response: F) -> int | None:
        return response.status


class BoltHooks(XProtocolHooks[bolt.BoltFrame]):
    name = "bolt"
    id_bits = 32

    def decoder(self, max_frame_size: int) -> bolt.BoltDecoder:
        return bolt.BoltDecoder(max_frame_size=max_frame_size)

    def is_request(self, frame: bolt.BoltFrame) -> bool:
        return not frame.is_response

    def is_oneway(self, frame: bolt.BoltFrame) -> bool:
        return frame.type is bolt.FrameType.ONEWAY

    def heartbeat_reply(self, frame: bolt.BoltFrame) -> bytes:
        return bolt.heartbeat_ack(frame).encode()

    def timeout(self, frame: bolt.BoltFrame) -> float | None:
        """The frame's timeout; -1 (SOFA's "none") falls back to the route's
        timeout, unlike MOSN's "never" (xprotocol-notes, test 24)."""
        return frame.timeout / 1000 if frame.timeout > 0 and not frame.is_response else None

    def routing_attributes(self, frame: bolt.BoltFrame) -> Mapping[str, str]:
        """The header map; ``service`` is the key SOFA-RPC routes on."""
        return frame.header

    def error_reply(self, request: bolt.BoltFrame, failure: Failure, detail: str = "") -> bytes:
        return bolt_error_reply(request, failure).encode()

    def health_probe(self, send: str | None, codec: ProxyCodec[bolt.BoltFrame]) -> bytes:
        """A bolt heartbeat (what MOSN's keepalive sends)."""
        return bolt.heartbeat_request(1).encode()

    def health_probe_ok(self, frame: bolt.BoltFrame) -> bool:
        return frame.is_response and frame.is_heartbeat and frame.status == 0


class DubboHooks(XProtocolHooks[dubbo.DubboFrame]):
    name = "dubbo"
    id_bits = 64

    def decoder(self, max_frame_size: int) -> dubbo.DubboDecoder:
        return dubbo.DubboDecoder(max_frame_size=max_frame_size)

    def is_request(self, frame: dubbo.DubboFrame) -> bool:
        return frame.is_request

    def is_oneway(self, frame: dubbo.DubboFrame) -> bool:
        return frame.is_request and not frame.is_twoway

    def heartbeat_reply(self, frame: dubbo.DubboFrame) -> bytes:
        return dubbo.heartbeat_response(frame).encode()

    def timeout(self, frame: dubbo.DubboFrame) -> float | None:
        """The ``timeout`` attachment (milliseconds), if the request has one."""
        try:
            raw = frame.call().attachments.get("timeout")
        except (ValueError, ProtocolError):
            return None
        try:
            return int(raw) / 1000 if raw is not None and int(raw) > 0 else None
        except (TypeError, ValueError):
            return None

    def routing_attributes(self, frame: dubbo.DubboFrame) -> Mapping[str, str]:
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

    def error_reply(self, request: dubbo.DubboFrame, failure: Failure, detail: str = "") -> bytes:
        return dubbo_error_reply(request, failure, detail).encode()

    def health_probe(self, send: str | None, codec: ProxyCodec[dubbo.DubboFrame]) -> bytes:
        """A dubbo heartbeat event."""
        return dubbo.heartbeat_request(1).encode()

    def health_probe_ok(self, frame: dubbo.DubboFrame) -> bool:
        return not frame.is_request and frame.is_heartbeat and frame.status == dubbo.DubboStatus.OK


BOLT = BoltHooks()
DUBBO = DubboHooks()
