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

from .decode import decode, decode_all, decode_spans
from .encode import encode, encode_long
from .skip import Reader, skip
from .values import Hessian2Error, HessianObject, JavaDate, NeedMoreData, SkippedReference, TypedMap

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
