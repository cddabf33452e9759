"""simple_line behind the bundled proxy: a line codec and the proxy hooks.

A query line has no id, so upstream connections are pipelined: requests go
out in order and the answers come back in the same order. A client may
pipeline too, and its requests may go to different backends, so the proxy
holds early answers until the ones before them are written (``ordered``).
Lines pass through as they are, line ending included: nothing is
re-encoded on the way.
"""

from __future__ import annotations

from collections.abc import Mapping

from sota_dispatch import Failure, LimitExceeded, ProxyCodec, ProxyHooks

from .query import parse_query, render_error

__all__ = ["SIMPLE_LINE_HOOKS", "LineCodec", "SimpleLineHooks"]


class LineCodec:
    """Split input into lines of at most ``max_line`` bytes (without the
    ending); each frame is the raw line with its ``\\n`` or ``\\r\\n``.

    An over-long line queues an ``error:`` line in :meth:`data_to_send`
    (when ``answer_errors``) and raises :class:`~sota_dispatch.LimitExceeded`,
    as soon as the limit is passed, without buffering the rest; the lines
    before it in the same input are returned first, and the error is raised
    by :meth:`check` (or the next :meth:`feed`).
    """

    ready = True

    def __init__(self, max_line: int, *, answer_errors: bool = True) -> None:
        self.max_line = max_line
        self.answer_errors = answer_errors
        self._rest = b""
        self._out = b""
        self.pending_error: LimitExceeded | None = None
        self._answered = False

    def check(self) -> None:
        """Raise the error found after the lines handed out, if any (the
        ``error:`` line is queued then, after the answers to those lines)."""
        error = self.pending_error
        if error is not None:
            if self.answer_errors and not self._answered:
                self._answered = True
                self._out += render_error(f"line too long (limit {self.max_line} bytes)")
            raise error

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    @property
    def buffered(self) -> int:
        """Bytes of a line whose end has not arrived yet."""
        return len(self._rest)

    def feed(self, data: bytes) -> list[bytes]:
        self.check()
        buf = self._rest + data if self._rest else data
        max_line = self.max_line
        frames: list[bytes] = []
        pos = 0
        find = buf.find
        while True:
            end = find(b"\n", pos)
            if end < 0:
                break
            size = end - pos  # the line without its \n
            if size > max_line and not (size == max_line + 1 and buf[end - 1] == 0x0D):
                return self._fail(frames)
            frames.append(buf[pos : end + 1])
            pos = end + 1
        rest = buf[pos:] if pos else buf
        if len(rest) > max_line + 1:  # room for the \r of a \r\n
            return self._fail(frames)
        self._rest = rest
        return frames

    def _fail(self, frames: list[bytes]) -> list[bytes]:
        self._rest = b""
        self.pending_error = LimitExceeded("request line", self.max_line)
        if not frames:
            self.check()
        return frames  # the good lines first


class SimpleLineHooks(ProxyHooks[bytes]):
    """The proxy hooks of simple_line; routing attributes are the query's
    keys with their first value."""

    name = "simple_line"
    pool_mode = "pipeline"
    pool_modes = frozenset({"pipeline", "exclusive"})
    ordered = True
    options: Mapping[str, str] = {"max_line": "longest request line in bytes (default 65536)"}

    def option_errors(self, options: Mapping[str, str], *, upstream: bool = False) -> dict[str, str]:
        errors = super().option_errors(options, upstream=upstream)
        raw = options.get("max_line")
        if not upstream and raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            errors["max_line"] = f"expected a positive integer, got {raw!r}"
        return errors

    def downstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> LineCodec:
        from .dispatcher import DEFAULT_MAX_LINE

        raw = options.get("max_line")
        return LineCodec(int(raw) if raw is not None else min(DEFAULT_MAX_LINE, max_frame_size))

    def upstream_codec(self, options: Mapping[str, str], max_frame_size: int) -> LineCodec:
        return LineCodec(max_frame_size, answer_errors=False)

    def encode_request(self, frame: bytes, upstream_id: int) -> bytes:
        return frame

    def encode_response(self, response: bytes, request: bytes) -> bytes:
        return response

    def routing_attributes(self, frame: bytes) -> Mapping[str, str]:
        line = frame[:-2] if frame.endswith(b"\r\n") else frame[:-1]
        return {key: values[0] for key, values in parse_query(line).items()}

    def health_probe(self, send: str | None, codec: ProxyCodec[bytes]) -> bytes | None:
        """The configured query line (``health_check.send``), if any."""
        return None if send is None else send.encode() + b"\r\n"

    def health_probe_ok(self, frame: bytes) -> bool:
        """Any answer but an ``error:`` line."""
        return not frame.startswith(b"error:")

    def error_reply(self, request: bytes, failure: Failure, detail: str = "") -> bytes:
        return render_error(f"{failure.value}: {detail}" if detail else failure.value)


SIMPLE_LINE_HOOKS = SimpleLineHooks()
