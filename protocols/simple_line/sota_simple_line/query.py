"""The query-line format, sans-I/O: parse ``key=value&...`` and render replies.

Decoding follows URL query strings (``application/x-www-form-urlencoded``):
``&`` separates pairs, the first ``=`` splits key from value, ``+`` is a
space and ``%XX`` a byte, the bytes are UTF-8. Where browsers are lenient we
are strict, because a proxy that guesses hides broken clients: a bad percent
escape, invalid UTF-8, an empty line or an empty key is a :class:`QueryError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from json.encoder import encode_basestring

from sota_dispatch import ProtocolError

__all__ = ["QueryError", "parse_query", "render_error", "render_reply"]

#: One JSON string literal, quotes included, non-ASCII kept as is: the
#: function ``json.JSONEncoder(ensure_ascii=False)`` itself uses for every
#: string (C in CPython). Rendering the multi-map around it directly skips
#: what was most of a short reply's cost: ``JSONEncoder.encode`` builds its
#: C encoder and a circular-reference table on every call.
_quote: Callable[[str], str] = encode_basestring
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class QueryError(ProtocolError):
    """A request line that is not a well-formed query; answered with ``error:``."""


def _hex_spellings(byte: int) -> list[str]:
    """``byte`` as two hex digits, in every mix of letter cases."""
    digits = f"{byte:02x}"
    high, low = digits[0], digits[1]
    return [first + second for first in {high, high.upper()} for second in {low, low.upper()}]


#: ``XX`` of a ``%XX`` escape below 0x80 -> its character: such an escape is
#: one character whatever surrounds it, so it needs no UTF-8 decoding.
_ASCII_ESCAPES: dict[str, str] = {spelling: chr(b) for b in range(128) for spelling in _hex_spellings(b)}


def _decode(text: str) -> str:
    """``+`` as a space and ``%XX`` as a byte, the bytes read as strict UTF-8
    (``UnicodeDecodeError`` otherwise), as ``urllib.parse.unquote`` with
    ``errors="strict"`` does; every escape was checked well formed before.
    Written out because ``unquote``'s regular-expression split cost more
    than the rest of a line's parse. Escapes of ASCII characters (``%2F``)
    are looked up; the first one of a byte from 0x80 up sends the text
    through bytes."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    pieces = text.split("%")
    parts = [pieces[0]]
    for i in range(1, len(pieces)):
        piece = pieces[i]
        char = _ASCII_ESCAPES.get(piece[:2])
        if char is None:
            return _decode_utf8(pieces)
        parts.append(char)
        parts.append(piece[2:])
    return "".join(parts)


def _decode_utf8(pieces: list[str]) -> str:
    """``_decode`` for text with an escape of a byte from 0x80 up: the
    escapes as bytes among the rest's UTF-8, read back as strict UTF-8."""
    out = bytearray(pieces[0].encode())
    for i in range(1, len(pieces)):
        piece = pieces[i]
        out.append(int(piece[:2], 16))
        if len(piece) > 2:
            out += piece[2:].encode()
    return out.decode()


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
    escaped = "%" in text
    if escaped:
        bad = _BAD_ESCAPE.search(text)
        if bad is not None:
            raise QueryError(f"bad percent escape at offset {bad.start()}: {text[bad.start() : bad.start() + 3]!r}")
    plain = not escaped and "+" not in text  # nothing to decode in any pair
    result: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if not plain:
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
    """``receive:`` plus compact JSON of the multi-map, with its ``\\r\\n``:
    the bytes ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))``
    gives (a test compares the two)."""
    quote = _quote
    pairs: list[str] = []
    for key, values in query.items():
        if len(values) == 1:  # the usual case: no list to join
            pairs.append(quote(key) + ":[" + quote(values[0]) + "]")
        else:
            pairs.append(quote(key) + ":[" + ",".join([quote(value) for value in values]) + "]")
    return b"receive:{" + ",".join(pairs).encode() + b"}\r\n"


def render_error(reason: str) -> bytes:
    """One ``error:`` line; line breaks in the reason are flattened."""
    flat = " ".join(reason.split())
    return b"error:" + flat.encode("utf-8", "replace") + b"\r\n"
