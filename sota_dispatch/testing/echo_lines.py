"""A protocol of the smallest kind the proxy forwards, for tests that must not need a plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import ProtocolError
from ..protocol.codec import Failure
from ..protocol.dispatcher import Dispatcher
from ..protocol.options import Option, OptionSchema
from ..protocol.registry import Match

__all__ = ["ECHO_MARK", "EchoLines"]


#: What every :class:`EchoLines` request line starts with (its sniffer's mark).
ECHO_MARK = b"echo:"
_DEFAULT_MAX_LINE = 65536


class EchoLines(Dispatcher):
    """Lines that start with echo:, each answered with itself (a test protocol).

    A line has no id: upstream connections are pipelined, and a client's
    answers are written in the order of its requests (``ordered``). On the
    server side, bytes that cannot start an ``echo:`` line end the
    connection with a :class:`~sota_dispatch.ProtocolError` as soon as they
    arrive, as a service does with a client of another protocol. The
    proxy's error replies are ``error:`` lines; routes can match the
    ``echo`` attribute, the text after the mark. Option ``max_line``.
    """

    protocol_name: ClassVar[str] = "echo_lines"
    options: ClassVar[OptionSchema] = OptionSchema(
        max_line=Option(f"longest line in bytes (default {_DEFAULT_MAX_LINE})", Option.positive_int)
    )
    pool_mode = "pipeline"
    pool_modes = frozenset({"pipeline", "exclusive"})
    ordered = True

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        head = prefix[: len(ECHO_MARK)]
        if not ECHO_MARK.startswith(head):
            return Match.NO
        return Match.YES if head == ECHO_MARK else Match.NEED_MORE

    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> _EchoCodec:
        return _EchoCodec(options.get("max_line") or min(_DEFAULT_MAX_LINE, max_frame_size), marked=True)

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> _EchoCodec:
        return _EchoCodec(max_frame_size, marked=False)  # answers: any line

    @classmethod
    def encode_request(cls, frame: bytes, upstream_id: int) -> bytes:
        return frame

    @classmethod
    def encode_response(cls, response: bytes, request: bytes) -> bytes:
        return response

    @classmethod
    def routing_attributes(cls, frame: bytes) -> Mapping[str, str]:
        return {"echo": frame[len(ECHO_MARK) :].rstrip(b"\r\n").decode(errors="replace")}

    @classmethod
    def error_reply(cls, request: bytes, failure: Failure, detail: str = "") -> bytes:
        return f"error:{failure.value}{': ' + detail if detail else ''}\n".encode()

    def on_request(self, frame: bytes) -> bytes:
        return frame


class _EchoCodec:
    """:class:`EchoLines`' codec: each frame is a line, its ``\\n`` included."""

    ready = True

    def __init__(self, max_line: int, *, marked: bool) -> None:
        self.max_line = max_line
        self.marked = marked  # every line must start with ECHO_MARK
        self._buffer = bytearray()
        self._scanned = 0  # no line end in the buffer before this offset
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self.check()
        buffer = self._buffer
        buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", max(start, self._scanned))) >= 0:
            lines.append(bytes(buffer[start : end + 1]))
            start = end + 1
        del buffer[:start]
        self._scanned = len(buffer)
        for i, line in enumerate([*lines, bytes(buffer[: len(ECHO_MARK)])]):
            size = len(line) - 1 if i < len(lines) else len(buffer)
            if size > self.max_line + 1 or (self.marked and EchoLines.sniff(line) is Match.NO):
                # The lines before it first; check() raises next.
                self._error = ProtocolError(f"not an echo line of at most {self.max_line} bytes: {line[:16]!r}")
                del buffer[:]
                return lines[:i]
        return lines

    def data_to_send(self) -> bytes:
        return b""

    def check(self) -> None:
        if self._error is not None:
            raise self._error
