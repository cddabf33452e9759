"""Decoding Hessian 2: every tag a Dubbo body can hold, into Python values.

Nesting depth and declared lengths are bounded, so hostile input costs
neither recursion nor memory.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from .values import (
    _F64,
    _I32,
    _I64,
    _SKIPPED,
    _U16,
    Hessian2Error,
    HessianObject,
    NeedMoreData,
    SkippedReference,
    TypedMap,
    _ClassDef,
    _date,
)

__all__ = ["decode", "decode_all", "decode_spans"]


class _Decoder:
    __slots__ = ("classes", "data", "depth", "end", "max_depth", "max_length", "pos", "refs", "types")

    def __init__(self, data: bytes, pos: int, end: int, max_depth: int, max_length: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.max_depth = max_depth
        self.max_length = max_length
        self.depth = 0
        self.refs: list[Any] = []
        self.types: list[str] = []
        self.classes: list[_ClassDef] = []

    # -- bytes -------------------------------------------------------------------

    def take(self, n: int) -> bytes:
        pos = self.pos
        if pos + n > self.end:
            raise NeedMoreData
        self.pos = pos + n
        return self.data[pos : pos + n]

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise NeedMoreData
        self.pos = pos + 1
        return self.data[pos]

    def length(self, n: int, what: str) -> int:
        if n < 0 or n > self.max_length:
            raise Hessian2Error(f"{what} of length {n} is out of bounds (max {self.max_length})")
        return n

    # -- values ------------------------------------------------------------------

    def value(self) -> Any:
        tag = self.byte()
        while tag == 0x43:  # C: class definitions precede the value they serve
            self.class_def()
            tag = self.byte()
        # A short ASCII string (most of a Dubbo call) is item()'s, before this.
        if tag <= 0x1F or 0x30 <= tag <= 0x33 or tag in (0x52, 0x53):  # string
            return self.string(tag)
        if 0x80 <= tag <= 0xBF:
            return tag - 0x90
        if 0xC0 <= tag <= 0xCF:
            return ((tag - 0xC8) << 8) + self.byte()
        if 0xD0 <= tag <= 0xD7:
            return ((tag - 0xD4) << 16) + _U16.unpack(self.take(2))[0]
        if 0xD8 <= tag <= 0xEF:
            return tag - 0xE0
        if tag >= 0xF0:
            return ((tag - 0xF8) << 8) + self.byte()
        if 0x38 <= tag <= 0x3F:
            return ((tag - 0x3C) << 16) + _U16.unpack(self.take(2))[0]
        if 0x20 <= tag <= 0x2F or 0x34 <= tag <= 0x37 or tag in (0x41, 0x42):  # binary
            return self.binary(tag)
        if 0x60 <= tag <= 0x6F:
            return self.object(tag - 0x60)
        if 0x70 <= tag <= 0x7F:
            return self.list_(tag)
        if tag == 0x48 or tag == 0x4D:  # a map (a Dubbo call's attachments)
            return self.map_(tag)  # a native call compiled, not _TAGS' generic one
        if 0x55 <= tag <= 0x58:
            return self.list_(tag)
        handler = _TAGS.get(tag)
        if handler is None:
            raise Hessian2Error(f"unknown Hessian 2 tag 0x{tag:02x} at offset {self.pos - 1}")
        return handler(self, tag)

    def enter(self) -> None:
        """A container's first item is next: its items are one level deeper
        (checked once per container, not per item)."""
        self.depth += 1
        if self.depth > self.max_depth:
            self.depth -= 1
            raise Hessian2Error(f"nesting deeper than {self.max_depth}")

    def item(self) -> Any:
        """The next value, a short ASCII string (a Dubbo body's keys and
        most of its values) without a further call; the rest as :meth:`value`."""
        data, pos, end = self.data, self.pos, self.end
        if pos < end:
            tag = data[pos]
            if tag <= 0x1F:
                stop = pos + 1 + tag
                if stop <= end:
                    # Decoded as ASCII at once, not checked first: one C
                    # call, not two (compiled, ``isascii()`` was a generic
                    # method call, ~250 instructions, six a dubbo request);
                    # a rare non-ASCII string takes the general path.
                    try:
                        text = data[pos + 1 : stop].decode("ascii")
                    except UnicodeDecodeError:
                        return self.value()
                    self.pos = stop
                    return text
            elif tag == 0x48:  # an untyped map (a Dubbo call's attachments), as value() would
                self.pos = pos + 1
                return self.map_(tag)
        return self.value()

    def int_value(self) -> int:
        """An int in one of its int encodings only (as Caucho's readInt):
        lengths, indexes and references never recurse into other values."""
        tag = self.byte()
        if 0x80 <= tag <= 0xBF:
            return tag - 0x90
        if 0xC0 <= tag <= 0xCF:
            return ((tag - 0xC8) << 8) + self.byte()
        if 0xD0 <= tag <= 0xD7:
            return ((tag - 0xD4) << 16) + int(_U16.unpack(self.take(2))[0])
        if tag == 0x49:
            value: int = _I32.unpack(self.take(4))[0]
            return value
        raise Hessian2Error(f"expected an int, got tag 0x{tag:02x}")

    def string_value(self) -> str:
        tag = self.byte()
        if tag <= 0x1F or 0x30 <= tag <= 0x33 or tag in (0x52, 0x53):
            return self.string(tag)
        raise Hessian2Error(f"expected a string, got tag 0x{tag:02x}")

    def string_chunk(self, tag: int) -> tuple[int, bool]:
        """A string chunk's length in UTF-16 units, and whether it is the last."""
        if tag <= 0x1F:
            return tag, True
        if tag <= 0x33:
            return ((tag - 0x30) << 8) + self.byte(), True
        units: int = _U16.unpack(self.take(2))[0]
        if tag != 0x53 and units == 0:  # Java never writes one; a flood would cost CPU
            raise Hessian2Error("empty non-final string chunk")
        return units, tag == 0x53

    def next_string_chunk(self, total: int) -> int:
        """The tag of the chunk after a non-final one (``total`` units so far)."""
        tag = self.byte()
        if not (tag <= 0x1F or 0x30 <= tag <= 0x33 or tag in (0x52, 0x53)):
            raise Hessian2Error(f"string chunk followed by tag 0x{tag:02x}")
        if total > self.max_length:
            raise Hessian2Error(f"string longer than {self.max_length}")
        return tag

    def string(self, tag: int) -> str:
        pieces: list[str] = []
        total = 0
        while True:
            units, final = self.string_chunk(tag)
            pieces.append(self.utf16_units(units))
            total += units
            if final:
                break
            tag = self.next_string_chunk(total)
        text = pieces[0] if len(pieces) == 1 else "".join(pieces)
        if not text.isascii():
            # Java writes each UTF-16 unit alone: join surrogate pairs. A
            # lone surrogate stays a lone code point, as in the Java String
            # it came from (Java's Hessian2Input and hessian.js accept it
            # too); the encoder writes it back as the same 3 bytes.
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return text

    def utf16_units(self, units: int) -> str:
        """Read ``units`` UTF-16 units of Java's modified UTF-8."""
        data, start = self.data, self.pos
        stop = start + units
        if stop <= self.end:
            chunk = data[start:stop]
            if chunk.isascii():  # the common case, one C call
                self.pos = stop
                return chunk.decode("ascii")
        self.walk_units(units)
        try:
            return data[start : self.pos].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise Hessian2Error(f"invalid UTF-8 in a string: {exc.reason}") from None

    def walk_units(self, units: int) -> None:
        """Move past ``units`` UTF-16 units, one UTF-8 lead byte at a time."""
        data, pos, end = self.data, self.pos, self.end
        counted = 0
        while counted < units:
            if pos >= end:
                raise NeedMoreData
            lead = data[pos]
            if lead < 0x80:
                pos += 1
            elif 0xC0 <= lead < 0xE0:
                pos += 2
            elif 0xE0 <= lead < 0xF0:
                pos += 3
            elif 0xF0 <= lead < 0xF8:  # 4-byte UTF-8 from non-Java writers: 2 units
                pos += 4
                counted += 1
            else:
                raise Hessian2Error(f"invalid UTF-8 lead byte 0x{lead:02x} in a string")
            counted += 1
        if pos > end:
            raise NeedMoreData
        self.pos = pos

    def binary_chunk(self, tag: int, total: int) -> tuple[int, bool]:
        """A binary chunk's size and whether it is the last (``total``: bytes so far)."""
        if 0x20 <= tag <= 0x2F:
            size, final = tag - 0x20, True
        elif 0x34 <= tag <= 0x37:
            size, final = ((tag - 0x34) << 8) + self.byte(), True
        elif tag in (0x41, 0x42):
            size, final = _U16.unpack(self.take(2))[0], tag == 0x42
            if not final and size == 0:
                raise Hessian2Error("empty non-final binary chunk")
        else:
            raise Hessian2Error(f"binary chunk followed by tag 0x{tag:02x}")
        self.length(total + size, "binary")
        return size, final

    def binary(self, tag: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size, final = self.binary_chunk(tag, total)
            total += size
            chunks.append(self.take(size))
            if final:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            tag = self.byte()

    def type_name(self) -> str:
        tag = self.data[self.pos] if self.pos < self.end else -1
        if tag == -1:
            raise NeedMoreData
        if tag <= 0x1F or 0x30 <= tag <= 0x33 or tag in (0x52, 0x53):
            name = self.string_value()
            self.types.append(name)
            return name
        index = self.int_value()
        if not 0 <= index < len(self.types):
            raise Hessian2Error(f"type reference {index} with {len(self.types)} types known")
        return self.types[index]

    def list_(self, tag: int) -> list[Any]:
        if tag == 0x55:  # 'U' typed, variable
            self.type_name()
            size = -1
        elif tag == 0x56:  # 'V' typed, fixed
            self.type_name()
            size = self.length(self.int_value(), "list")
        elif tag == 0x57:  # 'W' untyped, variable
            size = -1
        elif tag == 0x58:  # 'X' untyped, fixed
            size = self.length(self.int_value(), "list")
        elif tag <= 0x77:  # 0x70-0x77 typed, 0-7 items
            self.type_name()
            size = tag - 0x70
        else:  # 0x78-0x7f untyped, 0-7 items
            size = tag - 0x78
        if size > self.end - self.pos:  # every item takes a byte at least
            raise NeedMoreData
        items: list[Any] = []
        self.refs.append(items)
        if size > 0 or (size < 0 and self.peek() != 0x5A):
            self.enter()
            try:
                if size >= 0:
                    for _ in range(size):
                        items.append(self.item())
                else:
                    while self.peek() != 0x5A:
                        items.append(self.item())
                        if len(items) > self.max_length:
                            raise Hessian2Error(f"list longer than {self.max_length}")
            finally:
                self.depth -= 1
        if size < 0:
            self.pos += 1  # its 'Z'
        return items

    def peek(self) -> int:
        if self.pos >= self.end:
            raise NeedMoreData
        return self.data[self.pos]

    def map_(self, tag: int) -> dict[Any, Any]:
        result: dict[Any, Any] = TypedMap(self.type_name()) if tag == 0x4D else {}
        self.refs.append(result)
        data, end = self.data, self.end
        if self.peek() != 0x5A:
            self.enter()
            try:
                # Short ASCII keys with short ASCII values (a Dubbo call's
                # attachments) in one tight loop, before the general one: a
                # call per string was most of a map's cost in the pure build.
                pos = self.pos
                while pos < end:
                    tag = data[pos]
                    stop = pos + 1 + tag
                    if tag > 0x1F or stop >= end or data[stop] > 0x1F:
                        break
                    after = stop + 1 + data[stop]
                    if after > end:
                        break
                    # Names of their own: the general loop's key and value
                    # are Any, and compiled, a name first bound to a str
                    # would check every later value for one.
                    try:
                        text_key = data[pos + 1 : stop].decode("ascii")
                        text_value = data[stop + 1 : after].decode("ascii")
                    except UnicodeDecodeError:
                        break
                    result[text_key] = text_value
                    pos = after
                self.pos = pos
                if len(result) > self.max_length:
                    raise Hessian2Error(f"map larger than {self.max_length}")
                while True:
                    pos = self.pos
                    if pos >= end:
                        raise NeedMoreData
                    if data[pos] == 0x5A:
                        break
                    key = self.item()
                    value = self.item()
                    try:
                        result[key] = value
                    except TypeError:
                        raise Hessian2Error(f"unhashable map key of type {type(key).__name__}") from None
                    if len(result) > self.max_length:
                        raise Hessian2Error(f"map larger than {self.max_length}")
            finally:
                self.depth -= 1
        self.pos += 1  # its 'Z'
        return result

    def class_def(self) -> None:
        name = self.string_value()
        count = self.length(self.int_value(), "class field list")
        fields = tuple(self.string_value() for _ in range(count))
        self.classes.append(_ClassDef(name, fields))

    def object(self, index: int) -> HessianObject:
        if not 0 <= index < len(self.classes):
            raise Hessian2Error(f"object of class {index} with {len(self.classes)} classes defined")
        cls = self.classes[index]
        obj = HessianObject(cls.name, {})
        self.refs.append(obj)
        if cls.fields:
            self.enter()
            try:
                for name in cls.fields:
                    obj.fields[name] = self.item()
            finally:
                self.depth -= 1
        return obj

    def object_tag(self, tag: int) -> HessianObject:
        return self.object(self.int_value())

    def ref(self, tag: int) -> Any:
        index = self.int_value()
        if not 0 <= index < len(self.refs):
            raise Hessian2Error(f"back reference {index} with {len(self.refs)} values to refer to")
        value = self.refs[index]
        if value is _SKIPPED:
            raise SkippedReference(f"back reference {index} to a value that was skipped, not decoded")
        return value

    # -- skipping ------------------------------------------------------------------
    # Walking over a value costs a fraction of decoding it (no strings, lists
    # or dicts are built) and keeps the tables later values refer to: class
    # definitions and type names as decoded, the reference table's length
    # with a placeholder per skipped list, map or object.


def _fixed(value: Any) -> Any:
    return lambda decoder, tag: value


def _double_bytes(size: int, scale: float) -> Any:
    fmt = {1: ">b", 2: ">h", 4: ">i"}[size]

    def read(decoder: _Decoder, tag: int) -> float:
        value: int = struct.unpack(fmt, decoder.take(size))[0]
        return value * scale if scale != 1 else float(value)

    return read


_TAGS: Final[dict[int, Any]] = {
    0x4E: _fixed(None),
    0x54: _fixed(True),
    0x46: _fixed(False),
    0x49: lambda d, t: _I32.unpack(d.take(4))[0],  # I
    0x4C: lambda d, t: _I64.unpack(d.take(8))[0],  # L
    0x59: lambda d, t: _I32.unpack(d.take(4))[0],  # Y: long as int32
    0x44: lambda d, t: _F64.unpack(d.take(8))[0],  # D
    0x5B: _fixed(0.0),
    0x5C: _fixed(1.0),
    0x5D: _double_bytes(1, 1),
    0x5E: _double_bytes(2, 1),
    0x5F: _double_bytes(4, 0.001),
    0x4A: lambda d, t: _date(_I64.unpack(d.take(8))[0]),  # J: milliseconds
    0x4B: lambda d, t: _date(_I32.unpack(d.take(4))[0] * 60000),  # K: minutes
    0x48: _Decoder.map_,  # H
    0x4D: _Decoder.map_,  # M
    0x55: _Decoder.list_,
    0x56: _Decoder.list_,
    0x57: _Decoder.list_,
    0x58: _Decoder.list_,
    0x4F: _Decoder.object_tag,  # O
    0x51: _Decoder.ref,  # Q
}


def decode(
    data: bytes, pos: int = 0, *, end: int | None = None, max_depth: int = 64, max_length: int = 16 * 1024 * 1024
) -> tuple[Any, int]:
    """Decode one value from ``data[pos:end]``; return it and where it ended."""
    decoder = _Decoder(data, pos, len(data) if end is None else end, max_depth, max_length)
    try:
        return decoder.item(), decoder.pos
    except (OverflowError, ValueError) as exc:  # a backstop: no value Java sends raises these
        raise Hessian2Error(f"value out of range: {exc}") from None
    except RecursionError:  # a backstop: nesting is bounded by max_depth
        raise Hessian2Error("nesting too deep") from None


def decode_all(data: bytes, *, max_depth: int = 64, max_length: int = 16 * 1024 * 1024) -> list[Any]:
    """Decode consecutive values sharing one reference table, to the end.

    Dubbo bodies are such sequences (version, path, ..., arguments,
    attachments); the values may refer back to each other.
    """
    return [value for value, _, _ in decode_spans(data, max_depth=max_depth, max_length=max_length)]


def decode_spans(data: bytes, *, max_depth: int = 64, max_length: int = 16 * 1024 * 1024) -> list[tuple[Any, int, int]]:
    """Like :func:`decode_all`, with each value's ``(start, end)`` offsets,
    so a value can be passed on as its original bytes."""
    decoder = _Decoder(data, 0, len(data), max_depth, max_length)
    spans = []
    try:
        while decoder.pos < len(data):
            start = decoder.pos
            value = decoder.item()
            spans.append((value, start, decoder.pos))
    except (OverflowError, ValueError) as exc:
        raise Hessian2Error(f"value out of range: {exc}") from None
    except RecursionError:
        raise Hessian2Error("nesting too deep") from None
    return spans
