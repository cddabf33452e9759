"""The query-line format, sans-I/O: parse ``key=value&...`` and render replies.

Decoding follows URL query strings (``application/x-www-form-urlencoded``):
``&`` separates pairs, the first ``=`` splits key from value, ``+`` is a
space and ``%XX`` a byte, the bytes are UTF-8. Where browsers are lenient we
are strict, because a proxy that guesses hides broken clients: a bad percent
escape, invalid UTF-8, an empty line or an empty key is a :class:`QueryError`.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from sota_dispatch import ProtocolError

__all__ = ["QueryError", "parse_query", "render_error", "render_reply"]

#: Built once: json.dumps with keyword arguments builds an encoder per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class QueryError(ProtocolError):
    """A request line that is not a well-formed query; answered with ``error:``."""


def _decode(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" in text:
        return unquote(text, errors="strict")
    return text


def parse_query(line: bytes) -> dict[str, list[str]]:
    """Parse one request line (without its line ending) into a multi-map.

    Keys keep their first-appearance order; a repeated key keeps every value
    in order. A pair without ``=`` is a key with an empty value, as in URLs;
    empty pairs (``a=1&&b=2``) are skipped.
    """
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        # Raw UTF-8 is accepted too; only escapes must be well formed.
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QueryError(f"request is not UTF-8 (byte {exc.start})") from None
    if not text:
        raise QueryError("empty request")
    if "%" in text:
        bad = _BAD_ESCAPE.search(text)
        if bad is not None:
            raise QueryError(f"bad percent escape at offset {bad.start()}: {text[bad.start() : bad.start() + 3]!r}")
    result: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        try:
            key = _decode(key)
            value = _decode(value)
        except UnicodeDecodeError:
            raise QueryError(f"percent escapes in {pair!r} are not UTF-8") from None
        if not key:
            raise QueryError(f"empty key in {pair!r}")
        values = result.get(key)
        if values is None:
            result[key] = [value]
        else:
            values.append(value)
    if not result:
        raise QueryError("no key=value pair in the request")
    return result


def render_reply(query: dict[str, list[str]]) -> bytes:
    """``receive:`` plus compact JSON of the multi-map, with its ``\\r\\n``."""
    return b"receive:" + _JSON.encode(query).encode() + b"\r\n"


def render_error(reason: str) -> bytes:
    """One ``error:`` line; line breaks in the reason are flattened."""
    flat = " ".join(reason.split())
    return b"error:" + flat.encode("utf-8", "replace") + b"\r\n"
