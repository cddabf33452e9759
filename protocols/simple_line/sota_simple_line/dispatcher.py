"""simple_line, the protocol's one class: local service, codec, proxy semantics.

Locally each query line is answered with ``receive:{json}``. Behind the
proxy: a query line has no id, so upstream connections are pipelined
(requests go out in order, answers come back in the same order); a client
may pipeline too, and its requests may go to different backends, so the
proxy holds early answers until the ones before them are written
(``ordered``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote_plus

import sota_simple_line.semantics as semantics
from sota_dispatch import CallAnswer, Codec, Dispatcher, Failure, Match, Option, OptionSchema

from .codec import LineCodec
from .query import QueryError, parse_query, render_error, render_reply

__all__ = ["DEFAULT_MAX_LINE", "SimpleLineDispatcher"]

#: Longest request line accepted, in bytes, without its line ending.
DEFAULT_MAX_LINE = 65536

_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09}


class SimpleLineDispatcher(Dispatcher):
    """Query lines (key=value&key1=value1), answered with receive:{json}."""

    protocol_name: ClassVar[str] = "simple_line"
    #: The client sends the first line: a silent connection waits as a bare socket.
    speaks_first: ClassVar[bool | None] = False
    #: The echo holds nothing but its codec between lines: its connections
    #: move (hot restart) and park. A subclass says so again for itself.
    movable_between_requests: ClassVar[bool] = True
    options: ClassVar[OptionSchema] = OptionSchema(
        max_line=Option(
            f"longest request line in bytes (default {DEFAULT_MAX_LINE}, or a proxy listener's "
            "max_frame_size if smaller)",
            Option.positive_int,
        )
    )
    pool_mode = "pipeline"
    pool_modes = frozenset({"pipeline", "exclusive"})
    ordered = True

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
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> LineCodec:
        max_line = options.get("max_line")
        return LineCodec(max_line if max_line is not None else min(DEFAULT_MAX_LINE, max_frame_size))

    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> LineCodec:
        return LineCodec(max_frame_size, answer_errors=False)

    # Per line: plain functions (compiled in the compiled build), not
    # classmethods of this interpreted class (see sota_simple_line.semantics).
    encode_request = staticmethod(semantics.encode_request)
    encode_response = staticmethod(semantics.encode_response)

    @classmethod
    def frame_size(cls, frame: bytes) -> int:
        """The line, its end included."""
        return len(frame)

    @classmethod
    def routing_attributes(cls, frame: bytes) -> Mapping[str, str]:
        """The query's keys, each with its first value."""
        line = frame[:-2] if frame.endswith(b"\r\n") else frame[:-1]
        return {key: values[0] for key, values in parse_query(line).items()}

    @classmethod
    def health_probe(cls, send: str | None, codec: Codec[bytes]) -> bytes | None:
        """The configured query line (``health_check.send``), if any."""
        return None if send is None else send.encode() + b"\r\n"

    @classmethod
    def health_probe_ok(cls, frame: bytes) -> bool:
        """Any answer but an ``error:`` line."""
        return not frame.startswith(b"error:")

    @classmethod
    def error_reply(cls, request: bytes, failure: Failure, detail: str = "") -> bytes:
        return render_error(f"{failure.value}: {detail}" if detail else failure.value)

    @classmethod
    def call_request(cls, words: Sequence[str], fields: Mapping[str, str]) -> bytes:
        """One query line: the words as typed, joined with ``&``, then each
        field as an escaped ``NAME=VALUE`` pair (``--service echo`` is the
        key a proxy's routes match). Not checked here: a malformed query is
        the server's to answer (its ``error:`` line is what one may want
        to see)."""
        parts = [*words, *(f"{quote_plus(name)}={quote_plus(value)}" for name, value in fields.items())]
        if not parts:
            raise ValueError("no query: give one, such as 'a=1&b=2'")
        line = "&".join(parts)
        if "\r" in line or "\n" in line:
            raise ValueError("a query is one line (no line breaks in it)")
        return line.encode() + b"\r\n"

    @classmethod
    def describe_answer(cls, frame: bytes) -> CallAnswer:
        """The answer line; an ``error:`` line is an error answer. JSON:
        ``line``, and ``receive`` (the echoed multi-map) or ``error``."""
        line = CallAnswer.text_of(frame.rstrip(b"\r\n"))
        data: dict[str, Any] = {"line": line}
        if line.startswith("error:"):
            data["error"] = line[len("error:") :]
            return CallAnswer(ok=False, text=line, data=data)
        if line.startswith("receive:"):
            with contextlib.suppress(ValueError):  # another server's receive: line says it all
                data["receive"] = json.loads(line[len("receive:") :])
        return CallAnswer(ok=True, text=line, data=data)

    def on_request(self, frame: bytes) -> bytes:
        """The local service: the query's ``receive:{json}``, or an
        ``error:`` line for a malformed query (the connection stays up).

        An over-long line is the codec's: it queues the ``error:`` line and
        ends the connection, after the answers to the lines before it."""
        line = frame[:-2] if frame.endswith(b"\r\n") else frame[:-1]
        try:
            return render_reply(parse_query(line))
        except QueryError as exc:
            return render_error(str(exc))
