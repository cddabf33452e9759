"""The local echo services behind ``--protocol bolt|dubbo|xprotocol``.

Each is the protocol's class plus one method, :meth:`on_request`: the
core's codec loop feeds every chunk to the decoder, answers heartbeats with
the canonical reply, and hands every other request of a read batch to
``on_request``; the answers of a batch leave in one send. ``xprotocol`` picks bolt or dubbo from the first bytes
(0x01 or 0x02: bolt; ``da bb``: dubbo) and refuses anything else at once,
without waiting for a full header.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import Dispatcher, Match, OptionSchema, ProtocolError

from .dispatchers import BoltDispatcher, DubboDispatcher, XProtocolDispatcher
from .echo import echo_bolt, echo_dubbo

__all__ = ["BoltEchoDispatcher", "DubboEchoDispatcher", "XProtocolEchoDispatcher", "echo_bolt", "echo_dubbo"]

log = logging.getLogger(__name__)


class BoltEchoDispatcher(BoltDispatcher):
    """SOFA bolt v1/v2 echo: SUCCESS with the request's class and content."""

    #: Nothing but the codec between requests: connections move and park.
    movable_between_requests: ClassVar[bool] = True
    #: The compiled function itself (a method here would run interpreted,
    #: ~1.7k instructions per request, to call it).
    on_request = staticmethod(echo_bolt)


class DubboEchoDispatcher(DubboDispatcher):
    """Dubbo echo: answers each call with its first argument (hessian2)."""

    movable_between_requests: ClassVar[bool] = True
    on_request = staticmethod(echo_dubbo)


class XProtocolEchoDispatcher(Dispatcher):
    """bolt or dubbo, told apart by the first bytes; echo either way."""

    protocol_name: ClassVar[str] = "xprotocol"
    options: ClassVar[OptionSchema] = XProtocolDispatcher.options
    movable_between_requests: ClassVar[bool] = True

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """Whatever bolt or dubbo would claim."""
        verdicts = {BoltDispatcher.sniff(prefix), DubboDispatcher.sniff(prefix)}
        if Match.YES in verdicts:
            return Match.YES
        return Match.NEED_MORE if Match.NEED_MORE in verdicts else Match.NO

    async def serve(self) -> None:
        first = await self.reader.peek(1)
        if not first:
            return
        limit: int = self.option("max_frame_size")
        # Same reader: the peeked bytes stay in it.
        if first[0] in (bolt.BOLT_V1, bolt.BOLT_V2):
            await self.serve_frames(BoltDispatcher.decoder(limit), semantics=BoltDispatcher, on_request=echo_bolt)
        elif first[0] == dubbo.MAGIC[0]:
            await self.serve_frames(DubboDispatcher.decoder(limit), semantics=DubboDispatcher, on_request=echo_dubbo)
        else:
            raise ProtocolError(f"neither bolt nor dubbo: first byte 0x{first[0]:02x}")
