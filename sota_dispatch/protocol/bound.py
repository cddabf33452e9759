"""A protocol class's per-frame classmethods, bound once: :class:`BoundSemantics`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..io.writer import Encoded

__all__ = ["BoundSemantics"]


class BoundSemantics:
    """A protocol class's per-frame classmethods, bound once.

    Why it exists: a classmethod called through its class makes a bound
    method on every call (a type lookup, an allocation and a free). On the
    proxy's per-request path that was 4-5% of the proxy's instructions per
    request (callgrind, bench/REDESIGN_AB.md); these attributes are bound
    already. Get one with :meth:`FrameSemantics.bound_semantics`. A class
    changed after its first use keeps the methods it had then. Its own
    module, compiled in the compiled build: there the proxy reads these
    as fields (it calls about eight of them per request), not by name.
    """

    __slots__ = (
        "encode_request",
        "encode_response",
        "heartbeat_reply",
        "is_heartbeat",
        "is_oneway",
        "is_request",
        "protocol",
        "protocol_name",
        "response_id",
        "routing_attributes",
        "status",
        "timeout",
    )

    def __init__(self, protocol: Any) -> None:
        #: The protocol class (a :class:`~sota_dispatch.FrameSemantics`
        #: subclass: typed Any, as this module cannot import the module that
        #: imports it).
        self.protocol: Any = protocol
        self.protocol_name: str = protocol.protocol_name
        self.is_request: Callable[[Any], bool] = protocol.is_request
        self.is_oneway: Callable[[Any], bool] = protocol.is_oneway
        self.is_heartbeat: Callable[[Any], bool] = protocol.is_heartbeat
        self.heartbeat_reply: Callable[[Any], bytes] = protocol.heartbeat_reply
        self.encode_request: Callable[[Any, int], Encoded] = protocol.encode_request
        self.response_id: Callable[[Any], int | None] = protocol.response_id
        self.encode_response: Callable[[Any, Any], Encoded] = protocol.encode_response
        self.status: Callable[[Any], int | None] = protocol.status
        self.timeout: Callable[[Any], float | None] = protocol.timeout
        self.routing_attributes: Callable[[Any], Mapping[str, str]] = protocol.routing_attributes
