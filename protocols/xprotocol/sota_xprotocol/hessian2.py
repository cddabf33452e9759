"""A Hessian 2.0 subset of our own: decoder, skipper and a reply encoder.

No Python library decodes what Java's Hessian2Output writes (the team's
xprotocol notes: dropped characters, Hessian 1.0 output, panics escaping as
BaseException). This one follows Caucho's encodings byte for byte where
replies are built (strings, ints, longs, doubles, maps, lists, null, bool,
small binaries, dates) and decodes every tag a Dubbo body can hold: compact
numbers, dates, chunked strings counted in UTF-16 units with Java's
surrogate encoding, binaries, typed and untyped lists and maps, class
definitions and objects, back references.

Whatever Java can send decodes and encodes back to the same bytes, even
where Python's types are narrower than Java's: a ``java.util.Date`` outside
``datetime``'s years 1-9999 becomes a :class:`JavaDate` (its epoch
milliseconds), and a string holding a lone UTF-16 surrogate (a Java
``String`` may) keeps it as a lone surrogate code point.

Errors: input that ends too early raises :class:`NeedMoreData` (a streaming
caller reads on; a caller holding a whole frame treats it as malformed);
anything else wrong raises :class:`Hessian2Error`, a
:class:`~sota_dispatch.ProtocolError`. Nesting depth and declared lengths
are bounded, so hostile input costs neither recursion nor memory.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from sota_dispatch import ProtocolError

__all__ = [
    "Hessian2Error",
    "HessianObject",
    "JavaDate",
    "NeedMoreData",
    "Reader",
    "SkippedReference",
    "TypedMap",
    "decode",
    "decode_all",
    "decode_spans",
    "encode",
    "encode_long",
    "skip",
]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MILLISECOND = _dt.timedelta(milliseconds=1)
#: The epoch milliseconds a ``datetime`` can hold: 0001-01-01 to 9999-12-31 (UTC).
_DATETIME_MIN_MS = (_dt.datetime.min.replace(tzinfo=_dt.timezone.utc) - _EPOCH) // _MILLISECOND
_DATETIME_MAX_MS = (_dt.datetime.max.replace(tzinfo=_dt.timezone.utc) - _EPOCH) // _MILLISECOND
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")


class Hessian2Error(ProtocolError):
    """Bytes that are not valid Hessian 2.0 (or exceed the limits)."""


class NeedMoreData(Exception):
    """The input ended inside a value; more bytes may complete it."""


@attrs.define(eq=False)
class HessianObject:
    """An object (``C``/``O``): its Java class name and its fields in order."""

    type: str
    fields: dict[str, Any]


def _check_java_long(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ValueError(f"{attribute.name} must be an int that fits a Java long, got {value!r}")


@attrs.frozen
class JavaDate:
    """A ``java.util.Date`` that ``datetime`` cannot hold, as its epoch
    milliseconds (UTC).

    Java's dates span a signed 64-bit count of milliseconds, about 292
    million years either side of 1970; ``datetime`` stops at the years 1
    and 9999. Dates inside that range decode to an aware UTC ``datetime``;
    the others decode to this, so no date a Java peer sends is refused and
    each encodes back to the bytes it came as. It may also be built to send
    such a date (or any date by its milliseconds).
    """

    millis: int = attrs.field(validator=_check_java_long)


class TypedMap(dict[Any, Any]):
    """A map written with a type (``M``), e.g. ``java.util.TreeMap``."""

    def __init__(self, type_name: str) -> None:
        super().__init__()
        self.type = type_name


@attrs.frozen
class _ClassDef:
    name: str
    fields: tuple[str, ...]


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
        if tag <= 0x1F:  # a short string: most of a Dubbo call; ASCII is one slice
            pos = self.pos
            stop = pos + tag
            if stop <= self.end:
                chunk = self.data[pos:stop]
                if chunk.isascii():
                    self.pos = stop
                    return chunk.decode("ascii")
            return self.string(tag)
        if 0x30 <= tag <= 0x33 or tag in (0x52, 0x53):  # string
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
        handler = _TAGS.get(tag)
        if handler is None:
            raise Hessian2Error(f"unknown Hessian 2 tag 0x{tag:02x} at offset {self.pos - 1}")
        return handler(self, tag)

    def nested(self) -> Any:
        self.depth += 1
        if self.depth > self.max_depth:
            raise Hessian2Error(f"nesting deeper than {self.max_depth}")
        try:
            return self.value()
        finally:
            self.depth -= 1

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
        if size >= 0:
            for _ in range(size):
                items.append(self.nested())
        else:
            while self.peek() != 0x5A:
                items.append(self.nested())
                if len(items) > self.max_length:
                    raise Hessian2Error(f"list longer than {self.max_length}")
            self.pos += 1
        return items

    def peek(self) -> int:
        if self.pos >= self.end:
            raise NeedMoreData
        return self.data[self.pos]

    def map_(self, tag: int) -> dict[Any, Any]:
        result: dict[Any, Any] = TypedMap(self.type_name()) if tag == 0x4D else {}
        self.refs.append(result)
        while self.peek() != 0x5A:
            key = self.nested()
            value = self.nested()
            try:
                result[key] = value
            except TypeError:
                raise Hessian2Error(f"unhashable map key of type {type(key).__name__}") from None
            if len(result) > self.max_length:
                raise Hessian2Error(f"map larger than {self.max_length}")
        self.pos += 1
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
        for name in cls.fields:
            obj.fields[name] = self.nested()
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

    def skip(self) -> None:
        # One loop with a stack of the open containers, not a call per value
        # (Python calls are most of a walk's cost). Each entry is what the
        # container still expects: n > 0 more items, _UNTIL_END items up to
        # its 'Z', or a map's _KEY / _VALUE (a 'Z' may only come for a key).
        data, end, sizes = self.data, self.end, _SCALAR_SIZES
        stack: list[int] = []
        limit = self.max_depth - self.depth  # open containers allowed around a value
        pos = self.pos  # kept local; self.pos is synced around the helpers
        while True:
            if pos >= end:
                self.pos = pos
                raise NeedMoreData
            tag = data[pos]
            pos += 1
            if tag == 0x5A and stack and stack[-1] in _ENDS_AT_Z:
                stack.pop()  # the container is complete
            else:
                if len(stack) > limit:
                    raise Hessian2Error(f"nesting deeper than {self.max_depth}")
                extra = sizes.get(tag)
                if extra is not None:
                    pos += extra
                    if pos > end:
                        self.pos = end
                        raise NeedMoreData
                elif tag <= 0x1F:  # a short string, ASCII in one slice
                    stop = pos + tag
                    if stop <= end and data[pos:stop].isascii():
                        pos = stop
                    else:
                        self.pos = pos
                        self.walk_units(tag)
                        pos = self.pos
                else:
                    self.pos = pos
                    while tag == 0x43:  # C: class definitions precede the value they serve
                        self.class_def()
                        tag = self.byte()
                    if 0x30 <= tag <= 0x33 or tag in (0x52, 0x53) or tag <= 0x1F:
                        self.skip_string(tag)
                        expects = 0
                    elif 0x20 <= tag <= 0x2F or 0x34 <= tag <= 0x37 or tag in (0x41, 0x42):
                        self.skip_binary(tag)
                        expects = 0
                    elif tag in sizes:  # a scalar after class definitions
                        self.pos += sizes[tag]
                        if self.pos > end:
                            raise NeedMoreData
                        expects = 0
                    else:
                        expects = self.open_container(tag)
                    pos = self.pos
                    if expects:
                        stack.append(expects)
                        continue
            # A value is complete: it counts for the container around it.
            while stack:
                expects = stack[-1]
                if expects == _UNTIL_END:
                    break
                if expects == _KEY:
                    stack[-1] = _VALUE
                    break
                if expects == _VALUE:
                    stack[-1] = _KEY
                    break
                if expects > 1:
                    stack[-1] = expects - 1
                    break
                stack.pop()  # its last item: the container is complete too
            if not stack:
                self.pos = pos
                return

    def open_container(self, tag: int) -> int:
        """Read a list's, map's or object's head (or a reference): what the
        container expects next (0: nothing, it is complete)."""
        if 0x70 <= tag <= 0x7F or 0x55 <= tag <= 0x58:
            if tag in (0x55, 0x56) or 0x70 <= tag <= 0x77:  # typed
                self.type_name()
            if tag in (0x56, 0x58):
                size = self.length(self.int_value(), "list")
            elif tag in (0x55, 0x57):
                size = _UNTIL_END
            else:
                size = (tag - 0x70) if tag <= 0x77 else (tag - 0x78)
            if size > self.end - self.pos:  # every item takes a byte at least
                raise NeedMoreData
            self.refs.append(_SKIPPED)
            return size
        if tag in (0x48, 0x4D):
            if tag == 0x4D:
                self.type_name()
            self.refs.append(_SKIPPED)
            return _KEY
        if 0x60 <= tag <= 0x6F or tag == 0x4F:
            index = tag - 0x60 if tag != 0x4F else self.int_value()
            if not 0 <= index < len(self.classes):
                raise Hessian2Error(f"object of class {index} with {len(self.classes)} classes defined")
            self.refs.append(_SKIPPED)
            return len(self.classes[index].fields)
        if tag == 0x51:
            index = self.int_value()
            if not 0 <= index < len(self.refs):
                raise Hessian2Error(f"back reference {index} with {len(self.refs)} values to refer to")
            return 0
        raise Hessian2Error(f"unknown Hessian 2 tag 0x{tag:02x} at offset {self.pos - 1}")

    def skip_string(self, tag: int) -> None:
        total = 0
        while True:
            units, final = self.string_chunk(tag)
            self.skip_units(units)
            total += units
            if final:
                return
            tag = self.next_string_chunk(total)

    def skip_units(self, units: int) -> None:
        data, pos = self.data, self.pos
        stop = pos + units
        if stop <= self.end and data[pos:stop].isascii():
            self.pos = stop
            return
        self.walk_units(units)

    def skip_binary(self, tag: int) -> None:
        total = 0
        while True:
            size, final = self.binary_chunk(tag, total)
            total += size
            if self.pos + size > self.end:
                raise NeedMoreData
            self.pos += size
            if final:
                return
            tag = self.byte()


#: In the reference table, for a list, map or object walked over by skip().
_SKIPPED: Any = object()

# What an open container expects next, in skip()'s stack (besides n > 0 items).
_UNTIL_END = -1  # a variable-length list: items until 'Z'
_KEY = -2  # a map: a key, or 'Z'
_VALUE = -3  # a map: the value of the key just read
_ENDS_AT_Z = (_UNTIL_END, _KEY)

#: Bytes after the tag of each fixed-size scalar (ints, longs, doubles, dates, null, booleans).
_SCALAR_SIZES: dict[int, int] = {
    **dict.fromkeys(range(0x80, 0xC0), 0),
    **dict.fromkeys(range(0xC0, 0xD0), 1),
    **dict.fromkeys(range(0xD0, 0xD8), 2),
    **dict.fromkeys(range(0xD8, 0xF0), 0),
    **dict.fromkeys(range(0xF0, 0x100), 1),
    **dict.fromkeys(range(0x38, 0x40), 2),
    0x4E: 0, 0x54: 0, 0x46: 0, 0x5B: 0, 0x5C: 0,
    0x49: 4, 0x59: 4, 0x4B: 4, 0x5F: 4,
    0x4C: 8, 0x44: 8, 0x4A: 8,
    0x5D: 1, 0x5E: 2,
}  # fmt: skip


class SkippedReference(Hessian2Error):
    """A value refers back to one that :meth:`Reader.skip` walked over: the
    caller must decode the earlier values instead of skipping them."""


def _date(millis: int) -> _dt.datetime | JavaDate:
    """A date's value: a UTC ``datetime`` where one can hold it, else a
    :class:`JavaDate` (never an error: Java may send any long)."""
    if _DATETIME_MIN_MS <= millis <= _DATETIME_MAX_MS:
        return _EPOCH + _dt.timedelta(milliseconds=millis)
    return JavaDate(millis)


def _fixed(value: Any) -> Any:
    return lambda decoder, tag: value


def _double_bytes(size: int, scale: float) -> Any:
    fmt = {1: ">b", 2: ">h", 4: ">i"}[size]

    def read(decoder: _Decoder, tag: int) -> float:
        value: int = struct.unpack(fmt, decoder.take(size))[0]
        return value * scale if scale != 1 else float(value)

    return read


_TAGS: dict[int, Any] = {
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
        return decoder.value(), decoder.pos
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


def decode_spans(
    data: bytes, *, max_depth: int = 64, max_length: int = 16 * 1024 * 1024
) -> list[tuple[Any, int, int]]:
    """Like :func:`decode_all`, with each value's ``(start, end)`` offsets,
    so a value can be passed on as its original bytes."""
    decoder = _Decoder(data, 0, len(data), max_depth, max_length)
    spans = []
    try:
        while decoder.pos < len(data):
            start = decoder.pos
            value = decoder.value()
            spans.append((value, start, decoder.pos))
    except (OverflowError, ValueError) as exc:
        raise Hessian2Error(f"value out of range: {exc}") from None
    except RecursionError:
        raise Hessian2Error("nesting too deep") from None
    return spans


def skip(data: bytes, pos: int = 0, *, max_depth: int = 64, max_length: int = 16 * 1024 * 1024) -> int:
    """Walk over one value without building it; return the offset just past it."""
    reader = Reader(data, pos, max_depth=max_depth, max_length=max_length)
    reader.skip()
    return reader.pos


class Reader:
    """Consecutive values of one body, sharing one reference table: decode
    the ones needed, :meth:`skip` the others (a proxy reads a Dubbo call's
    attachments without building its arguments).

    Skipping is lenient where only decoding can tell (an unhashable map
    key, a bad UTF-8 continuation byte), strict on structure. A decoded
    value that refers back to a skipped one raises
    :class:`SkippedReference` (then decode from the start).
    """

    __slots__ = ("_decoder",)

    def __init__(self, data: bytes, pos: int = 0, *, max_depth: int = 64, max_length: int = 16 * 1024 * 1024) -> None:
        self._decoder = _Decoder(data, pos, len(data), max_depth, max_length)

    @property
    def pos(self) -> int:
        """Where the next value starts."""
        return self._decoder.pos

    @property
    def at_end(self) -> bool:
        return self._decoder.pos >= self._decoder.end

    def value(self) -> Any:
        """Decode the next value."""
        try:
            return self._decoder.value()
        except (OverflowError, ValueError) as exc:
            raise Hessian2Error(f"value out of range: {exc}") from None
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None

    def skip(self) -> None:
        """Walk over the next value."""
        try:
            self._decoder.skip()
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None


# -- encoding ---------------------------------------------------------------------


def _encode_string(text: str, out: bytearray) -> None:
    units = text
    if not text.isascii():
        units = "".join(
            ch if ord(ch) < 0x10000 else chr(0xD800 + ((ord(ch) - 0x10000) >> 10)) + chr(0xDC00 + (ord(ch) & 0x3FF))
            for ch in text
        )
    length = len(units)
    offset = 0
    while length - offset > 0x8000:
        size = 0x8000
        if 0xD800 <= ord(units[offset + size - 1]) <= 0xDBFF:
            size -= 1  # never split a surrogate pair across chunks (as Java)
        out += b"R" + _U16.pack(size) + units[offset : offset + size].encode("utf-8", "surrogatepass")
        offset += size
    size = length - offset
    if size <= 31:
        out.append(size)
    elif size <= 1023:
        out += bytes((0x30 + (size >> 8), size & 0xFF))
    else:
        out += b"S" + _U16.pack(size)
    out += units[offset:].encode("utf-8", "surrogatepass")


def _encode_int(value: int, out: bytearray) -> None:
    if -16 <= value <= 47:
        out.append(0x90 + value)
    elif -2048 <= value <= 2047:
        out += bytes((0xC8 + (value >> 8), value & 0xFF))
    elif -262144 <= value <= 262143:
        out += bytes((0xD4 + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
    elif -(2**31) <= value < 2**31:
        out += b"I" + _I32.pack(value)
    else:
        _encode_long(value, out)


def _encode_long(value: int, out: bytearray) -> None:
    if -8 <= value <= 15:
        out.append(0xE0 + value)
    elif -2048 <= value <= 2047:
        out += bytes((0xF8 + (value >> 8), value & 0xFF))
    elif -262144 <= value <= 262143:
        out += bytes((0x3C + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
    elif -(2**31) <= value < 2**31:
        out += b"Y" + _I32.pack(value)
    elif -(2**63) <= value < 2**63:
        out += b"L" + _I64.pack(value)
    else:
        raise ValueError(f"{value} does not fit a Java long")


def _encode_double(value: float, out: bytearray) -> None:
    if math.isfinite(value) and value == int(value):
        whole = int(value)
        if whole == 0:
            out.append(0x5B)
            return
        if whole == 1:
            out.append(0x5C)
            return
        if -128 <= whole <= 127:
            out += b"\x5d" + struct.pack(">b", whole)
            return
        if -32768 <= whole <= 32767:
            out += b"\x5e" + struct.pack(">h", whole)
            return
    if abs(value) * 1000 < 2**31:  # (also false for inf and nan)
        mills = int(value * 1000)
        if mills * 0.001 == value:
            out += b"\x5f" + _I32.pack(mills)
            return
    out += b"D" + _F64.pack(value)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > 64:
        raise ValueError("nesting deeper than 64")
    if value is None:
        out.append(0x4E)
    elif value is True:
        out.append(0x54)
    elif value is False:
        out.append(0x46)
    elif isinstance(value, int):
        _encode_int(value, out)
    elif isinstance(value, float):
        _encode_double(value, out)
    elif isinstance(value, str):
        _encode_string(value, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_binary(bytes(value), out)
    elif isinstance(value, _dt.datetime):
        _encode_date(round((value - _EPOCH).total_seconds() * 1000), out)
    elif isinstance(value, JavaDate):
        _encode_date(value.millis, out)
    elif isinstance(value, Mapping):
        type_name = getattr(value, "type", None)
        if isinstance(type_name, str):
            out.append(0x4D)
            _encode_string(type_name, out)
        else:
            out.append(0x48)
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
        out.append(0x5A)
    elif isinstance(value, Sequence):
        if len(value) <= 7:
            out.append(0x78 + len(value))
        else:
            out.append(0x58)
            _encode_int(len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as Hessian 2")


def _encode_date(millis: int, out: bytearray) -> None:
    """As Java's Hessian2Output.writeUTCDate: ``K`` + int32 minutes when the
    date is whole minutes that fit, else ``J`` + int64 milliseconds. Every
    date Java writes thus encodes back to its own bytes."""
    minutes, rest = divmod(millis, 60000)
    if rest == 0 and -(2**31) <= minutes < 2**31:
        out += b"K" + _I32.pack(minutes)
    elif -(2**63) <= millis < 2**63:
        out += b"J" + _I64.pack(millis)
    else:
        raise ValueError(f"a date {millis} ms from 1970 does not fit a Java long")


def _encode_binary(data: bytes, out: bytearray) -> None:
    offset = 0
    while len(data) - offset > 0x8000:
        out += b"A" + _U16.pack(0x8000) + data[offset : offset + 0x8000]
        offset += 0x8000
    size = len(data) - offset
    if size <= 15:
        out.append(0x20 + size)
    elif size <= 1023:
        out += bytes((0x34 + (size >> 8), size & 0xFF))
    else:
        out += b"B" + _U16.pack(size)
    out += data[offset:]


def encode(value: Any) -> bytes:
    """Encode ``value`` as Java's Hessian2Output would, for reply bodies.

    None, bool, int (compact int forms, then long forms beyond 32 bits),
    float, str (lone surrogates included, as Java writes them), bytes,
    aware datetime and :class:`JavaDate` (both as Java writes a Date),
    mappings (``H``, or ``M`` for a :class:`TypedMap`) and sequences
    (untyped lists). Integers that fit 32 bits are written as Java ints; use
    :func:`encode_long` for a Java long.
    """
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def encode_long(value: int) -> bytes:
    """Encode ``value`` as a Java long (Caucho writes 300L as ``f9 2c``)."""
    out = bytearray()
    _encode_long(value, out)
    return bytes(out)
