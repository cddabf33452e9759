"""idproto: a binary protocol with request ids, as one class and its codec."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from sota_dispatch import ChunkBuffer, Codec, Dispatcher, Failure, Match, ProtocolError

HEADER = struct.Struct(">BBBII")  # magic, kind, status, request id, body length
MAGIC, OK = 0xA5, 0  # the first byte of every frame; the status of a success
REQUEST, RESPONSE, HEARTBEAT, HEARTBEAT_REPLY = 0, 1, 2, 3  # kinds: bit 0 a response, bit 1 a heartbeat
STATUS = {failure: status for status, failure in enumerate(Failure, start=1)}  # of each error reply


class Frame(NamedTuple):
    """One frame, decoded; ``raw`` holds its bytes, which the proxy forwards."""

    kind: int
    status: int
    request_id: int
    body: bytes
    raw: bytes

    @classmethod
    def make(cls, kind: int, request_id: int, body: bytes = b"", status: int = OK) -> Frame:
        return cls(kind, status, request_id, body, HEADER.pack(MAGIC, kind, status, request_id, len(body)) + body)


class IdCodec:
    """Sans-I/O: bytes in, frames out. Both sides of a connection use it."""

    ready = True  # no handshake

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = ChunkBuffer()  # bytes of the frame not complete yet
        self._need = HEADER.size  # bytes to wait for before parsing again

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        work = self._buffer.take(data, self._need)
        if work is None:
            return []
        frames: list[Frame] = []
        pos, self._need = 0, HEADER.size
        while len(work) - pos >= HEADER.size:
            magic, kind, status, request_id, size = HEADER.unpack_from(work, pos)
            if magic != MAGIC or kind > HEARTBEAT_REPLY or size > self.max_frame_size:
                if frames:  # the frames before bad bytes first: check() raises next
                    break
                raise ProtocolError(f"bad idproto header {work[pos : pos + HEADER.size].hex()}")
            end = pos + HEADER.size + size
            if end > len(work):
                self._need = end - pos  # the whole frame, then parse
                break
            frames.append(Frame(kind, status, request_id, work[end - size : end], work[pos:end]))
            pos = end
        self._buffer.keep(work, pos)
        return frames

    def data_to_send(self) -> bytes:
        return b""  # nothing of its own to say

    def check(self) -> None:
        self.feed(b"")  # bad bytes kept in the buffer raise now


class IdProto(Dispatcher):
    """idproto: binary frames with request ids; answers upper-cased."""

    protocol_name: ClassVar[str] = "idproto"

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:  # for auto-detection: the magic byte first
        return Match.NEED_MORE if not prefix else Match.YES if prefix[0] == MAGIC else Match.NO

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> IdCodec:
        return IdCodec(max_frame_size)

    client_codec = server_codec  # the same codec on both sides

    @classmethod
    def is_request(cls, frame: Frame) -> bool:
        return not frame.kind & RESPONSE

    @classmethod
    def is_heartbeat(cls, frame: Frame) -> bool:
        return bool(frame.kind & HEARTBEAT)

    @classmethod
    def heartbeat_reply(cls, frame: Frame) -> bytes:
        return Frame.make(HEARTBEAT_REPLY, frame.request_id).raw

    @classmethod
    def encode_request(cls, frame: Frame, upstream_id: int) -> bytes:
        return frame.raw[:3] + upstream_id.to_bytes(4, "big") + frame.raw[7:]  # only the id changes

    @classmethod
    def response_id(cls, frame: Frame) -> int | None:
        return None if cls.is_request(frame) else frame.request_id

    @classmethod
    def encode_response(cls, response: Frame, request: Frame) -> bytes:
        return cls.encode_request(response, request.request_id)  # the client's own id back

    @classmethod
    def status(cls, response: Frame) -> int:
        return response.status

    @classmethod
    def error_reply(cls, request: Frame, failure: Failure, detail: str = "") -> bytes:
        text = f"{failure.value}: {detail}" if detail else failure.value
        return Frame.make(RESPONSE, request.request_id, text.encode(), STATUS[failure]).raw

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[Frame]) -> bytes:
        return Frame.make(HEARTBEAT, 0).raw

    @classmethod
    def health_probe_ok(cls, frame: Frame) -> bool:
        return frame.kind == HEARTBEAT_REPLY and frame.status == OK

    def on_request(self, frame: Frame) -> bytes:  # the local service
        return Frame.make(RESPONSE, frame.request_id, frame.body.upper()).raw
