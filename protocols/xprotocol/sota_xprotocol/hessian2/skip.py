"""Skipping Hessian 2 values without building them, and the :class:`Reader`
that mixes decoding and skipping (a proxy reads a Dubbo call's attachments
without its arguments).

The skipper is one loop with a stack of open containers, not a call per
value; it keeps the reference, type and class tables exactly as decoding
would, so values decoded after skipped ones are right.
"""

from __future__ import annotations

from typing import Any, Final

from .decode import _Decoder
from .values import _SKIPPED, Hessian2Error, NeedMoreData

__all__ = ["Reader", "skip"]

# What an open container expects next, in skip()'s stack (besides n > 0 items).
_UNTIL_END: Final = -1  # a variable-length list: items until 'Z'
_KEY: Final = -2  # a map: a key, or 'Z'
_VALUE: Final = -3  # a map: the value of the key just read
_ENDS_AT_Z: Final = (_UNTIL_END, _KEY)
#: Bytes after the tag of each fixed-size scalar (ints, longs, doubles, dates, null, booleans).
_SCALAR_SIZES: Final[dict[int, int]] = {
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


class _Skipper(_Decoder):
    """A decoder that can also step over values (the skip state lives in
    the same tables)."""

    __slots__ = ()

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
                elif tag <= 0x1F or (0x30 <= tag <= 0x33 and pos < end):
                    # A short or medium string (a Dubbo call's usual
                    # argument), ASCII in one slice; medium ones took the
                    # general branch's calls for twice decoding's cost.
                    units = tag
                    if tag >= 0x30:
                        units = ((tag - 0x30) << 8) + data[pos]
                        pos += 1
                    stop = pos + units
                    if stop <= end and data[pos:stop].isascii():
                        pos = stop
                    else:
                        self.pos = pos
                        self.walk_units(units)
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
        self._decoder = _Skipper(data, pos, len(data), max_depth, max_length)

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
            return self._decoder.item()
        except (OverflowError, ValueError) as exc:
            raise Hessian2Error(f"value out of range: {exc}") from None
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None

    def values(self, count: int) -> list[Any]:
        """Decode the next ``count`` values, fewer if the data ends first."""
        decoder = self._decoder
        values: list[Any] = []
        # Short ASCII strings (a Dubbo call's five header values) in one
        # tight loop first: in the pure build a call per string was most of
        # their cost. Anything else ends the run and goes through item().
        data, pos, end = decoder.data, decoder.pos, decoder.end
        while len(values) < count and pos < end:
            tag = data[pos]
            stop = pos + 1 + tag
            if tag > 0x1F or stop > end:
                break
            try:
                values.append(data[pos + 1 : stop].decode("ascii"))
            except UnicodeDecodeError:
                break
            pos = stop
        decoder.pos = pos
        try:
            while len(values) < count and decoder.pos < decoder.end:
                values.append(decoder.item())
        except (OverflowError, ValueError) as exc:
            raise Hessian2Error(f"value out of range: {exc}") from None
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None
        return values

    def skip(self) -> None:
        """Walk over the next value."""
        try:
            self._decoder.skip()
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None

    def skip_values(self, count: int) -> list[int]:
        """Walk over the next ``count`` values, fewer if the data ends first;
        return where each one started and where the last one ended (a Dubbo
        call's arguments, passed on as their own bytes)."""
        decoder = self._decoder
        offsets = [decoder.pos]
        try:
            while len(offsets) <= count and decoder.pos < decoder.end:
                decoder.skip()
                offsets.append(decoder.pos)
        except RecursionError:
            raise Hessian2Error("nesting too deep") from None
        return offsets
