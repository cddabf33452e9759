"""The simple_line local service: answer each query line with ``receive:``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from sota_dispatch import Dispatcher, LimitExceeded, Match

from .proxy import SIMPLE_LINE_HOOKS
from .query import QueryError, parse_query, render_error, render_reply

__all__ = ["DEFAULT_MAX_LINE", "SimpleLineDispatcher"]

#: Longest request line accepted, in bytes, without its line ending.
DEFAULT_MAX_LINE = 65536

_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09}


class SimpleLineDispatcher(Dispatcher):
    """Query lines (key=value&key1=value1), answered with receive:{json}."""

    protocol_name: ClassVar[str] = "simple_line"
    options: ClassVar[Mapping[str, str]] = {"max_line": f"longest request line in bytes (default {DEFAULT_MAX_LINE})"}
    proxy_hooks = SIMPLE_LINE_HOOKS

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        """A printable line containing ``=``; non-printable bytes rule it out."""
        end = prefix.find(b"\n")
        # The \r of a \r\n may be the last byte seen so far.
        head = (prefix if end < 0 else prefix[:end]).removesuffix(b"\r")
        if not all(b in _PRINTABLE or b >= 0x80 for b in head):
            return Match.NO
        if end < 0:
            return Match.NEED_MORE
        return Match.YES if b"=" in head else Match.NO

    @classmethod
    def validate_options(cls, options: Mapping[str, str]) -> None:
        """``max_line`` must be a positive integer."""
        super().validate_options(options)
        raw = options.get("max_line")
        if raw is not None and not (raw.isdigit() and int(raw) > 0):
            raise ValueError(f"max_line must be a positive integer, got {raw!r}")

    async def serve(self) -> None:
        max_line = self.option("max_line", DEFAULT_MAX_LINE, int)
        reader, writer = self.reader, self.writer
        while True:
            try:
                # +1 leaves room for the '\r' of a '\r\n' ending.
                line = await reader.read_until(b"\n", max_bytes=max_line + 1)
            except LimitExceeded:
                writer.write(render_error(f"line too long (limit {max_line} bytes)"))
                raise  # the dispatcher flushes the error line, then closes
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > max_line:
                writer.write(render_error(f"line too long (limit {max_line} bytes)"))
                raise LimitExceeded("request line", max_line)
            try:
                writer.write(render_reply(parse_query(line)))
            except QueryError as exc:
                writer.write(render_error(str(exc)))
            # No send per line: the reader flushes every reply of this batch
            # before it waits for more input.
