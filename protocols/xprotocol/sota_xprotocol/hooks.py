"""What a generic proxy needs from bolt and dubbo, behind one interface.

The proxy loop (issue 5) stays protocol-agnostic: it decodes frames, reads
their routing attributes, rewrites request ids, answers heartbeats and
builds error replies only through a hooks object. :data:`BOLT` and
:data:`DUBBO` are those objects; everything they do is pure (no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from sota_dispatch import ProtocolError

from . import bolt, dubbo
from .failures import Failure, bolt_error_reply, dubbo_error_reply

__all__ = ["BOLT", "DUBBO", "BoltHooks", "DubboHooks", "ProxyHooks"]

F = TypeVar("F", bolt.BoltFrame, dubbo.DubboFrame)


class ProxyHooks(Generic[F]):
    """The proxy-facing operations of one protocol's frames."""

    name = ""
    #: Width of the request id, for the upstream multiplexer.
    id_bits = 32

    def decoder(self, max_frame_size: int) -> Any:
        raise NotImplementedError

    def request_id(self, frame: F) -> int:
        return frame.request_id

    def with_request_id(self, frame: F, request_id: int) -> bytes:
        """The frame's raw bytes with another id (no re-encode)."""
        return frame.with_request_id(request_id)

    def is_request(self, frame: F) -> bool:
        raise NotImplementedError

    def is_oneway(self, frame: F) -> bool:
        raise NotImplementedError

    def is_heartbeat(self, frame: F) -> bool:
        return frame.is_heartbeat

    def heartbeat_reply(self, frame: F) -> bytes:
        raise NotImplementedError

    def timeout(self, frame: F) -> float | None:
        """The request's own timeout in seconds, if the protocol carries one."""
        return None

    def routing_attributes(self, frame: F) -> Mapping[str, str]:
        raise NotImplementedError

    def error_reply(self, frame: F, failure: Failure) -> bytes:
        raise NotImplementedError


class BoltHooks(ProxyHooks[bolt.BoltFrame]):
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
        return frame.timeout / 1000 if frame.timeout > 0 and not frame.is_response else None

    def routing_attributes(self, frame: bolt.BoltFrame) -> Mapping[str, str]:
        """The header map; ``service`` is the key SOFA-RPC routes on."""
        return frame.header

    def error_reply(self, frame: bolt.BoltFrame, failure: Failure) -> bytes:
        return bolt_error_reply(frame, failure).encode()


class DubboHooks(ProxyHooks[dubbo.DubboFrame]):
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
        try:
            raw = frame.invocation().attachments.get("timeout")
        except (ValueError, ProtocolError):
            return None
        try:
            return int(raw) / 1000 if raw is not None and int(raw) > 0 else None
        except (TypeError, ValueError):
            return None

    def routing_attributes(self, frame: dubbo.DubboFrame) -> Mapping[str, str]:
        """``service`` (interface), ``path``, ``method``, ``version``, ``group``,
        and every string attachment."""
        invocation = frame.invocation()
        attributes = {k: v for k, v in invocation.attachments.items() if isinstance(k, str) and isinstance(v, str)}
        attributes.update(service=invocation.interface, path=invocation.path, method=invocation.method)
        if invocation.version is not None:
            attributes["version"] = invocation.version
        if invocation.group is not None:
            attributes["group"] = invocation.group
        return attributes

    def error_reply(self, frame: dubbo.DubboFrame, failure: Failure) -> bytes:
        return dubbo_error_reply(frame, failure).encode()


BOLT = BoltHooks()
DUBBO = DubboHooks()
