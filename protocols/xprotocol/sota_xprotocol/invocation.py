"""What a dubbo request body says: the header values and attachments a
proxy routes on (:class:`Call`, arguments walked over) or all of it
(:class:`Invocation`, arguments built), and the argument count of a JVM
descriptor. Re-exported by :mod:`sota_xprotocol.dubbo`, whose frames
decode them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from mypy_extensions import mypyc_attr

from sota_dispatch import ProtocolError

from .framing import fields_repr

__all__ = ["Call", "Invocation", "count_arguments"]


def _interface(path: str, attachments: Mapping[str, Any]) -> str:
    value = attachments.get("interface")
    return value if isinstance(value, str) else path


def _group(attachments: Mapping[str, Any]) -> str | None:
    value = attachments.get("group")
    return value if isinstance(value, str) else None


# A plain Python class in the compiled build too: the attrs class below
# (a plain class there) cannot inherit from a compiled one.
@mypyc_attr(native_class=False)
class _Routed:
    """What a decoded request body says about the service called."""

    __slots__ = ()
    path: str
    attachments: Mapping[str, Any]

    @property
    def interface(self) -> str:
        """The service interface (Java writes ``interface``, else ``path``)."""
        return _interface(self.path, self.attachments)

    @property
    def group(self) -> str | None:
        """The ``group`` attachment, if any."""
        return _group(self.attachments)


class Call:
    """A request body with its arguments walked over, not built: the
    header values and attachments a proxy routes on and times out by
    (:meth:`DubboFrame.call`).

    Read-only, compared by its fields. A plain class with properties, not a
    frozen attrs class: one is built per proxied dubbo request, and a
    frozen attrs class costs a ``object.__setattr__`` call per field to
    build (~1.5 us, both builds); this one is a native class when compiled.
    """

    __match_args__: ClassVar[tuple[str, ...]] = (
        "dubbo_version",
        "path",
        "version",
        "method",
        "descriptor",
        "argument_count",
        "attachments",
    )
    __slots__ = ("_argument_count", "_attachments", "_descriptor", "_dubbo_version", "_method", "_path", "_version")

    def __init__(
        self,
        dubbo_version: str,
        path: str,
        version: str | None,
        method: str,
        descriptor: str,
        argument_count: int,
        attachments: Mapping[str, Any],
    ) -> None:
        self._dubbo_version = dubbo_version
        self._path = path
        self._version = version
        self._method = method
        self._descriptor = descriptor
        self._argument_count = argument_count
        self._attachments = attachments

    @property
    def dubbo_version(self) -> str:
        return self._dubbo_version

    @property
    def path(self) -> str:
        return self._path

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def method(self) -> str:
        return self._method

    @property
    def descriptor(self) -> str:
        return self._descriptor

    @property
    def argument_count(self) -> int:
        return self._argument_count

    @property
    def attachments(self) -> Mapping[str, Any]:
        return self._attachments

    @property
    def interface(self) -> str:
        """The service interface (Java writes ``interface``, else ``path``)."""
        return _interface(self._path, self._attachments)

    @property
    def group(self) -> str | None:
        """The ``group`` attachment, if any."""
        return _group(self._attachments)

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Call):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return fields_repr("Call", self, self.__match_args__)


@attrs.frozen
class Invocation(_Routed):
    """A request body, decoded: what a proxy routes on, and the arguments."""

    dubbo_version: str
    path: str
    version: str | None
    method: str
    descriptor: str
    arguments: tuple[Any, ...]
    attachments: Mapping[str, Any]
    #: Each argument's original hessian2 bytes, to pass it on unchanged.
    argument_bytes: tuple[bytes, ...] = ()


_PRIMITIVES = frozenset("ZBCSIJFD")


def count_arguments(descriptor: str) -> int:
    """Arguments in a JVM parameter descriptor such as ``Ljava/lang/String;IZD``."""
    count, i, end = 0, 0, len(descriptor)
    while i < end:
        while i < end and descriptor[i] == "[":
            i += 1
        if i >= end:
            raise ProtocolError(f"descriptor {descriptor!r} ends after '['")
        ch = descriptor[i]
        if ch == "L":
            close = descriptor.find(";", i)
            if close < 0:
                raise ProtocolError(f"descriptor {descriptor!r} has an unterminated class name")
            i = close + 1
        elif ch in _PRIMITIVES:
            i += 1
        else:
            raise ProtocolError(f"descriptor {descriptor!r} has an invalid type {ch!r}")
        count += 1
    return count
