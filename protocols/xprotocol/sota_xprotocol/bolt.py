"""SOFA bolt v1 and v2 frames, sans-I/O.

A :class:`BoltFrame` keeps the exact bytes it was decoded from, so a proxy
can rewrite only the request id in place (:meth:`BoltFrame.with_request_id`,
MOSN's fast path) and re-encode only when headers or body changed (the
header map: :mod:`~sota_xprotocol.bolt_header`). Bolt v2 frames with
``ver1 == 2`` and the CRC switch bit carry a CRC32 over the frame, checked
on decode and recomputed when the frame changes; MOSN does not implement it.
"""

from __future__ import annotations

import types
import zlib
from collections.abc import Iterable
from typing import ClassVar, Final

from mypy_extensions import i64, mypyc_attr

from sota_dispatch import LimitExceeded, ProtocolError

from .bolt_header import decode_header_map, encode_header_map
from .bolt_wire import (
    _CRC_SWITCH,
    _I32,
    _U32,
    _V1_REQUEST,
    _V1_RESPONSE,
    _V2_REQUEST,
    _V2_RESPONSE,
    BOLT_V1,
    BOLT_V2,
    DEFAULT_MAX_FRAME_SIZE,
    CmdCode,
    FrameType,
    ResponseStatus,
)
from .framing import FrameDecoder, fields_repr

__all__ = [
    "BOLT_V1",
    "BOLT_V2",
    "DEFAULT_MAX_FRAME_SIZE",
    "BoltDecoder",
    "BoltFrame",
    "CmdCode",
    "FrameType",
    "ResponseStatus",
    "decode_header_map",
    "encode_frames",
    "encode_header_map",
    "encode_reply",
    "heartbeat_ack",
    "heartbeat_request",
]

#: The frame types by their byte (0, 1, 2): a tuple, indexed natively
#: compiled, where a dict's get boxed the byte and hashed it (~130
#: instructions a frame).
_TYPES: Final = tuple(FrameType(code) for code in range(len(FrameType)))
# Module constants for the per-frame checks: reading an enum member through
# its class costs ~70 ns on CPython 3.11 (a module global, ~10).
_RESPONSE: Final = FrameType.RESPONSE
_HEARTBEAT: Final = int(CmdCode.HEARTBEAT)


def _probe() -> None:
    """Only its type is looked at: see ``_COMPILED``."""


#: Whether this module runs compiled (mypyc makes its functions built-in
#: ones). The fixed headers have two spellings: ``struct`` in the
#: interpreter, where one pack or unpack is the cheapest; byte arithmetic
#: when compiled, where it is machine ints in C and the ``struct`` call
#: (a method looked up by name, ten ints boxed into a tuple) cost ~1.1k
#: instructions a frame. Both are tested in both builds' suites, and the
#: builds compared (tests/test_xprotocol_builds.py).
_COMPILED: Final = not isinstance(_probe, types.FunctionType)


class BoltFrame:
    """One bolt command. ``raw`` is its exact encoding (set by the decoder
    and by :meth:`encode`); ``header`` is decoded on first access.

    A plain class, not attrs: in the compiled build it is a native class,
    built and read several times per request from compiled code (an attrs
    class stays an interpreted one there: ~4x the cost to build, and every
    field read a dictionary lookup). Frames compare by identity, as before.

    A decoded frame's ``class_name``, ``header_bytes`` and ``content`` are
    cut out of its bytes when one of them is first read (or set): a proxy
    forwards most frames without reading any, and the three copies were
    ~5% of its work per bolt request (compiled).
    """

    #: The constructor's fields, in order (positional patterns in ``match``,
    #: the repr, comparisons across builds), as attrs made them.
    __match_args__: ClassVar[tuple[str, ...]] = tuple(
        "type cmdcode request_id codec timeout status class_name header_bytes content"  # noqa: SIM905
        " proto ver1 switch ver2 raw".split()
    )
    __slots__ = tuple(
        "_header _class_name _header_bytes _content _source _body _class_len _header_len _content_len"  # noqa: SIM905
        " cmdcode codec proto raw request_id status switch timeout type ver1 ver2".split()
    )

    def __init__(
        self,
        type: FrameType,
        cmdcode: int,
        request_id: int,
        codec: int = 1,
        timeout: int = -1,
        status: int = 0,
        class_name: bytes = b"",
        header_bytes: bytes = b"",
        content: bytes = b"",
        proto: int = BOLT_V1,
        ver1: int = 1,
        switch: int = 0,
        ver2: int = 1,
        raw: bytes = b"",
    ) -> None:
        self.type = type
        self.cmdcode = cmdcode
        self.request_id = request_id
        self.codec = codec
        #: Request timeout in ms (-1: none); unused in responses.
        self.timeout = timeout
        #: Response status; unused in requests.
        self.status = status
        self._class_name = class_name
        self._header_bytes = header_bytes
        self._content = content
        self.proto = proto
        self.ver1 = ver1
        self.switch = switch
        self.ver2 = ver2
        #: A caller may set it to any bytes-like object (it is sent as is).
        self.raw: bytes | bytearray | memoryview = raw
        self._header: dict[str, str] | None = None
        # Where the three variable parts sit in _source, the decoded bytes
        # (raw may be set to others later); _body -1: they are set already.
        self._source = raw
        self._body = -1
        self._class_len = self._header_len = self._content_len = 0

    def _cut(self) -> None:
        """Cut the class name, header and content out of the decoded bytes."""
        source, c0 = self._source, self._body
        h0 = c0 + self._class_len
        b0 = h0 + self._header_len
        self._class_name = source[c0:h0]
        self._header_bytes = source[h0:b0]
        self._content = source[b0 : b0 + self._content_len]
        self._body = -1

    @property
    def class_name(self) -> bytes:
        if self._body >= 0:
            self._cut()
        return self._class_name

    @class_name.setter
    def class_name(self, value: bytes) -> None:
        if self._body >= 0:
            self._cut()
        self._class_name = value

    @property
    def header_bytes(self) -> bytes:
        if self._body >= 0:
            self._cut()
        return self._header_bytes

    @header_bytes.setter
    def header_bytes(self, value: bytes) -> None:
        if self._body >= 0:
            self._cut()
        self._header_bytes = value

    @property
    def content(self) -> bytes:
        if self._body >= 0:
            self._cut()
        return self._content

    @content.setter
    def content(self, value: bytes) -> None:
        if self._body >= 0:
            self._cut()
        self._content = value

    def __repr__(self) -> str:
        return fields_repr("BoltFrame", self, self.__match_args__)

    @property
    def is_response(self) -> bool:
        return self.type is _RESPONSE

    @property
    def is_heartbeat(self) -> bool:
        return self.cmdcode == _HEARTBEAT

    @property
    def has_crc(self) -> bool:
        return self.proto == BOLT_V2 and self.ver1 == 2 and bool(self.switch & _CRC_SWITCH)

    @property
    def header(self) -> dict[str, str]:
        """The header map (``service`` is the routing key SOFA-RPC writes)."""
        if self._header is None:
            self._header = decode_header_map(self.header_bytes)
        return self._header

    @property
    def id_offset(self) -> int:
        """Where the 4-byte request id sits in :attr:`raw`."""
        return 5 if self.proto == BOLT_V1 else 6

    def with_request_id(self, request_id: int) -> bytes:
        """The raw frame with another request id: 4 bytes patched (and the
        CRC, if the frame has one), nothing re-encoded."""
        data = self.raw or self.encode()
        if type(data) is not bytes:  # a caller's bytearray or memoryview: hand back bytes, as ever
            data = bytes(data)
        if self.has_crc:
            raw = bytearray(data)
            offset = self.id_offset
            raw[offset : offset + 4] = _U32.pack(request_id & 0xFFFFFFFF)
            raw[-4:] = _I32.pack(_signed32(zlib.crc32(memoryview(raw)[:-4])))
            return bytes(raw)
        offset = 5 if self.proto == BOLT_V1 else 6  # the proxy's fast path: no CRC
        # int.to_bytes, not a struct: the compiled build makes it a C call,
        # where the struct's method cost ~570 instructions (pure: the same).
        return data[:offset] + (request_id & 0xFFFFFFFF).to_bytes(4, "big") + data[offset + 4 :]

    def encode(self) -> bytes:
        """Encode from the fields (and remember the result in :attr:`raw`)."""
        if self._header is not None:
            self.header_bytes = encode_header_map(self._header)
        name, header, content = self.class_name, self.header_bytes, self.content
        request_id, kind = self.request_id & 0xFFFFFFFF, int(self.type)
        word = self.status if self.is_response else self.timeout  # the field after the codec (and switch)
        if self.proto == BOLT_V2:
            layout = _V2_RESPONSE if self.is_response else _V2_REQUEST
            head = layout.pack(
                self.proto,
                self.ver1,
                kind,
                self.cmdcode,
                self.ver2,
                request_id,
                self.codec,
                self.switch,
                word,
                len(name),
                len(header),
                len(content),
            )
        else:
            layout = _V1_RESPONSE if self.is_response else _V1_REQUEST
            head = layout.pack(
                self.proto,
                kind,
                self.cmdcode,
                self.ver2,
                request_id,
                self.codec,
                word,
                len(name),
                len(header),
                len(content),
            )
        frame = b"".join((head, name, header, content))
        if self.has_crc:
            frame += _I32.pack(_signed32(zlib.crc32(frame)))
        self.raw = frame
        return frame


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def heartbeat_request(request_id: int, proto: int = BOLT_V1) -> BoltFrame:
    """A heartbeat as MOSN and Java send it (timeout -1, hessian codec)."""
    return BoltFrame(FrameType.REQUEST, CmdCode.HEARTBEAT, request_id, codec=1, timeout=-1, proto=proto)


def encode_reply(
    request: BoltFrame,
    *,
    status: int = 0,
    class_name: bytes = b"",
    header_bytes: bytes = b"",
    content: bytes = b"",
) -> bytes:
    """The encoded RPC response to ``request``: its protocol version, id,
    codec (and v2's ver1, switch and CRC), with this status and body.

    What a service answering many requests wants: a v1 reply is encoded
    directly, with no :class:`BoltFrame` built (in the compiled echo,
    building and encoding one was a third of the work per request); v2
    goes through :meth:`BoltFrame.encode`.
    """
    if request.proto == BOLT_V1:
        ver2, request_id, codec = request.ver2, request.request_id & 0xFFFFFFFF, request.codec
        lc, lh, lb = len(class_name), len(header_bytes), len(content)
        if (
            _COMPILED
            and 0 <= ver2 < 0x100
            and 0 <= codec < 0x100
            and 0 <= status < 0x10000
            and lc < 0x10000
            and lh < 0x10000
            and lb < 0x100000000
        ):
            # The 20 header bytes as three ints of at most 7 bytes (machine
            # ints when compiled): proto 1, type 0, cmdcode 2, ver2 and the
            # id's top half; its bottom half, codec, status, class length;
            # header and content lengths. Out of range: the pack below
            # raises what the interpreter's build raises.
            return b"".join(
                (
                    (0x01000002 << 24 | ver2 << 16 | request_id >> 16).to_bytes(7, "big"),
                    ((request_id & 0xFFFF) << 40 | codec << 32 | status << 16 | lc).to_bytes(7, "big"),
                    (lh << 32 | lb).to_bytes(6, "big"),
                    class_name,
                    header_bytes,
                    content,
                )
            )
        # type RESPONSE, cmdcode RPC_RESPONSE
        head = _V1_RESPONSE.pack(BOLT_V1, 0, 2, ver2, request_id, codec, status, lc, lh, lb)
        return b"".join((head, class_name, header_bytes, content))
    return BoltFrame(
        FrameType.RESPONSE,
        CmdCode.RPC_RESPONSE,
        request.request_id,
        codec=request.codec,
        status=status,
        class_name=class_name,
        header_bytes=header_bytes,
        content=content,
        proto=request.proto,
        ver1=request.ver1,
        switch=request.switch,
        ver2=request.ver2,
    ).encode()


def heartbeat_ack(request: BoltFrame) -> BoltFrame:
    """The canonical reply to a heartbeat request: same id, status SUCCESS."""
    return BoltFrame(
        FrameType.RESPONSE,
        CmdCode.HEARTBEAT,
        request.request_id,
        codec=request.codec,
        status=ResponseStatus.SUCCESS,
        proto=request.proto,
        ver1=request.ver1,
        switch=request.switch,
        ver2=request.ver2,
    )


# Public: subclasses in Python must work in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class BoltDecoder(FrameDecoder[BoltFrame]):
    """Turn a byte stream into :class:`BoltFrame` objects (v1 and v2 mixed).

    The frame size is checked as soon as the fixed header is in, before the
    body is buffered: over ``max_frame_size`` is a
    :class:`~sota_dispatch.LimitExceeded`.
    """

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__(max_frame_size=max_frame_size)

    def _frame(self, work: bytes, pos: int, end: int) -> BoltFrame | None:
        avail = end - pos
        if avail < 2:
            if avail == 1:
                _check_proto(work[pos])
            self._need = 2 if avail else 1
            return None
        proto = work[pos]
        v2 = proto == BOLT_V2
        if not v2 and proto != BOLT_V1:
            _check_proto(proto)
        type_at = pos + (2 if v2 else 1)
        if avail <= type_at - pos:
            self._need = type_at - pos + 1
            return None
        type_code = work[type_at]
        if type_code > 2:
            raise ProtocolError(f"bolt frame type {type_code} is not 0, 1 or 2")
        frame_type = _TYPES[type_code]
        is_response = frame_type is _RESPONSE
        header_size = (22 if v2 else 20) if is_response else (24 if v2 else 22)
        if avail < header_size:
            self._need = header_size
            return None
        head = pos
        # The whole fixed header in one unpack (the encoder's layouts): one
        # call per frame, not three. Typed: the compiled build then adds,
        # compares and slices with machine ints (free in the pure build).
        ver1: int
        cmdcode: int
        ver2: int
        request_id: int
        codec: int
        switch: int
        word: int  # the timeout of a request, the status of a response
        class_len: int
        header_len: int
        content_len: int
        if _COMPILED:
            # i64: machine ints when compiled (a byte shifted by 24 at most).
            b: i64 = pos + 1 if v2 else pos  # v2 has ver1 after the proto byte
            cmdcode = i64(work[b + 2]) << 8 | i64(work[b + 3])
            ver2 = work[b + 4]
            request_id = i64(work[b + 5]) << 24 | i64(work[b + 6]) << 16 | i64(work[b + 7]) << 8 | i64(work[b + 8])
            codec = work[b + 9]
            if v2:
                ver1, switch = work[pos + 1], work[b + 10]
                b += 1
            else:
                ver1, switch = 1, 0
            if is_response:
                word = i64(work[b + 10]) << 8 | i64(work[b + 11])
                b += 12
            else:
                signed: i64 = (
                    i64(work[b + 10]) << 24 | i64(work[b + 11]) << 16 | i64(work[b + 12]) << 8 | i64(work[b + 13])
                )
                word = signed - 0x100000000 if signed & 0x80000000 else signed  # a signed timeout
                b += 14
            class_len = i64(work[b]) << 8 | i64(work[b + 1])
            header_len = i64(work[b + 2]) << 8 | i64(work[b + 3])
            content_len = i64(work[b + 4]) << 24 | i64(work[b + 5]) << 16 | i64(work[b + 6]) << 8 | i64(work[b + 7])
            p = b + 8
        elif v2:
            layout = _V2_RESPONSE if is_response else _V2_REQUEST
            fields = layout.unpack_from(work, pos)
            _, ver1, _, cmdcode, ver2, request_id, codec, switch, word, class_len, header_len, content_len = fields
            p = pos + layout.size
        else:
            layout = _V1_RESPONSE if is_response else _V1_REQUEST
            _, _, cmdcode, ver2, request_id, codec, word, class_len, header_len, content_len = layout.unpack_from(
                work, pos
            )
            ver1, switch = 1, 0
            p = pos + layout.size
        if cmdcode > 2:
            raise ProtocolError(f"bolt cmdcode {cmdcode} is not heartbeat, request or response")
        timeout = -1 if is_response else word
        status = word if is_response else 0
        has_crc = v2 and ver1 == 2 and bool(switch & _CRC_SWITCH)
        total: int = header_size + class_len + header_len + content_len + (4 if has_crc else 0)
        if total > self.max_frame_size:
            raise LimitExceeded(f"bolt frame of {total} bytes", self.max_frame_size)
        if avail < total:
            self._need = total
            return None
        raw = work[head : head + total]
        if has_crc:
            expected = _I32.unpack_from(raw, total - 4)[0]
            if _signed32(zlib.crc32(memoryview(raw)[: total - 4])) != expected:
                raise ProtocolError("bolt v2 CRC check failed")
        frame = BoltFrame(  # positional: keywords cost ~0.2 us per frame here
            frame_type, cmdcode, request_id, codec, timeout, status, b"", b"", b"", proto, ver1, switch, ver2, raw
        )
        # The class name, header and content: cut out of raw when first read.
        frame._body, frame._class_len = p - head, class_len
        frame._header_len, frame._content_len = header_len, content_len
        self._size = total
        return frame


def _check_proto(proto: int) -> None:
    if proto not in (BOLT_V1, BOLT_V2):
        raise ProtocolError(f"not a bolt frame: protocol byte 0x{proto:02x}")


def encode_frames(frames: Iterable[BoltFrame]) -> bytes:
    """Concatenate the encodings of ``frames`` (their raw bytes when present)."""
    return b"".join(frame.raw or frame.encode() for frame in frames)
