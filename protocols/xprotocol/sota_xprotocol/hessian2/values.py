"""Hessian 2 values and errors that Python has no type for, and the shared constants."""

from __future__ import annotations

import datetime as _dt
import struct
from typing import Any, Final

import attrs

from sota_dispatch import ProtocolError

#: In the reference table, for a list, map or object walked over by skip().
_SKIPPED: Any = object()

__all__ = ["Hessian2Error", "HessianObject", "JavaDate", "NeedMoreData", "SkippedReference", "TypedMap"]

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MILLISECOND: Final = _dt.timedelta(milliseconds=1)
#: The epoch milliseconds a ``datetime`` can hold: 0001-01-01 to 9999-12-31 (UTC).
_DATETIME_MIN_MS: Final = (_dt.datetime.min.replace(tzinfo=_dt.timezone.utc) - _EPOCH) // _MILLISECOND
_DATETIME_MAX_MS: Final = (_dt.datetime.max.replace(tzinfo=_dt.timezone.utc) - _EPOCH) // _MILLISECOND
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_F64: Final = struct.Struct(">d")
_U16: Final = struct.Struct(">H")


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


class SkippedReference(Hessian2Error):
    """A value refers back to one that :meth:`Reader.skip` walked over: the
    caller must decode the earlier values instead of skipping them."""


def _date(millis: int) -> _dt.datetime | JavaDate:
    """A date's value: a UTC ``datetime`` where one can hold it, else a
    :class:`JavaDate` (never an error: Java may send any long)."""
    if _DATETIME_MIN_MS <= millis <= _DATETIME_MAX_MS:
        return _EPOCH + _dt.timedelta(milliseconds=millis)
    return JavaDate(millis)
