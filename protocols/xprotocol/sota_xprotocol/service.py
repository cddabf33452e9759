"""The local echo services behind ``--protocol bolt|dubbo|xprotocol``.

Each connection feeds every chunk it reads to the sans-I/O decoder and
answers every complete frame at once into the writer; the reader flushes
before it waits again, so a connection with many requests in flight gets
its answers in one send per batch. Heartbeats are answered here, with the
canonical reply. ``xprotocol`` picks bolt or dubbo from the first bytes
(0x01 or 0x02: bolt; ``da bb``: dubbo) and refuses anything else at once,
without waiting for a full header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import Dispatcher, Match, OptionSchema, ProtocolError

from .dispatchers import BoltDispatcher, DubboDispatcher, XProtocolDispatcher

__all__ = ["BoltEchoDispatcher", "DubboEchoDispatcher", "XProtocolEchoDispatcher"]

log = logging.getLogger(__name__)

_Decoder = bolt.BoltDecoder | dubbo.DubboDecoder


class _CodecService(Dispatcher):
    options: ClassVar[OptionSchema] = XProtocolDispatcher.options

    def _max_frame_size(self) -> int:
        value: int = self.option("max_frame_size")
        return value

    async def _run_codec(self, decoder: _Decoder, handle: Callable[[Any], None]) -> None:
        reader = self.reader
        async for data in reader.chunks():
            frames = decoder.feed(data)
            reader.frame_state(decoder.buffered, len(frames))  # the frame timeout runs from a frame's first byte
            for frame in frames:
                handle(frame)
            decoder.check()  # bad bytes after good frames: those were answered first

    async def _serve_bolt(self) -> None:
        write = self.writer.write
        await self._run_codec(
            bolt.BoltDecoder(max_frame_size=self._max_frame_size()), lambda frame: answer_bolt(frame, write)
        )

    async def _serve_dubbo(self) -> None:
        write = self.writer.write
        await self._run_codec(
            dubbo.DubboDecoder(max_frame_size=self._max_frame_size()), lambda frame: answer_dubbo(frame, write)
        )


def answer_bolt(frame: bolt.BoltFrame, write: Callable[[bytes], None]) -> None:
    """Echo: SUCCESS with the request's class name and content; heartbeats acked."""
    if frame.is_response:
        log.debug("bolt: a response (id %d) sent to a server is dropped", frame.request_id)
        return
    if frame.is_heartbeat:
        write(bolt.heartbeat_ack(frame).encode())
        return
    if frame.type is bolt.FrameType.ONEWAY:
        return
    reply = bolt.BoltFrame(
        bolt.FrameType.RESPONSE,
        bolt.CmdCode.RPC_RESPONSE,
        frame.request_id,
        codec=frame.codec,
        status=bolt.ResponseStatus.SUCCESS,
        class_name=frame.class_name,
        content=frame.content,
        proto=frame.proto,
        ver1=frame.ver1,
        switch=frame.switch,
        ver2=frame.ver2,
    )
    write(reply.encode())


def answer_dubbo(frame: dubbo.DubboFrame, write: Callable[[bytes], None]) -> None:
    """Echo: the first argument back (type "value"); heartbeats answered."""
    if not frame.is_request:
        log.debug("dubbo: a response (id %d) sent to a server is dropped", frame.request_id)
        return
    if frame.is_event:
        if frame.is_twoway and frame.is_heartbeat:
            write(dubbo.heartbeat_response(frame).encode())
        return
    if not frame.is_twoway:
        return
    try:
        invocation = frame.invocation()
    except ProtocolError as exc:
        # The frame itself was sound; only its body is bad: answer, stay up.
        write(dubbo.error_response(frame, dubbo.DubboStatus.BAD_REQUEST, f"400|{exc}").encode())
        return
    # The first argument's own bytes go back: unchanged (a long stays a long,
    # an int[] stays typed), and never re-expanded from shared references.
    first = invocation.argument_bytes[0] if invocation.argument_bytes else None
    write(dubbo.value_response(frame, encoded=first, dubbo_version=invocation.dubbo_version).encode())


class BoltEchoDispatcher(BoltDispatcher, _CodecService):
    """SOFA bolt v1/v2 echo: SUCCESS with the request's class and content."""

    async def serve(self) -> None:
        await self._serve_bolt()


class DubboEchoDispatcher(DubboDispatcher, _CodecService):
    """Dubbo echo: answers each call with its first argument (hessian2)."""

    async def serve(self) -> None:
        await self._serve_dubbo()


class XProtocolEchoDispatcher(_CodecService):
    """bolt or dubbo, told apart by the first bytes; echo either way (a local
    service only: the proxy detects bolt and dubbo with ``auto``)."""

    protocol_name: ClassVar[str] = "xprotocol"

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """Whatever bolt or dubbo would claim."""
        verdicts = {BoltEchoDispatcher.sniff(prefix), DubboEchoDispatcher.sniff(prefix)}
        if Match.YES in verdicts:
            return Match.YES
        return Match.NEED_MORE if Match.NEED_MORE in verdicts else Match.NO

    async def serve(self) -> None:
        first = await self.reader.peek(1)
        if not first:
            return
        if first[0] in (bolt.BOLT_V1, bolt.BOLT_V2):
            await self._serve_bolt()  # same reader: the peeked bytes stay in it
        elif first[0] == dubbo.MAGIC[0]:
            await self._serve_dubbo()
        else:
            raise ProtocolError(f"neither bolt nor dubbo: first byte 0x{first[0]:02x}")
