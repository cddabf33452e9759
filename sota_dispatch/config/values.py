"""Rules of single configuration values, and the readers that apply them.

A reader takes a value as loaded (from YAML, or given in Python) and the
path that names it, and returns the value read (``"250ms"`` -> ``0.25``) or
raises :class:`~sota_dispatch.ConfigError` naming that path
(``clusters[1].endpoints[0].address: expected HOST:PORT, got "localhost"``).
A :class:`Rule` binds a reader to a field of the model: as the field's
attrs validator it checks every value a config object is built with, and
the parser reads the field's YAML value with it, so each rule is written
once. Readers of several values (lists, mappings) report every problem in
them at once.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import attrs

from ..errors import ConfigError
from ..io.address import parse_address
from ..logs import ACCESS_LOG_FORMAT
from ..protocol.options import parse_duration
from .access_log import compile_access_log
from .frozen import FrozenMap

__all__ = [
    "Rule",
    "access_log",
    "address",
    "boolean",
    "choice",
    "did_you_mean",
    "duration",
    "fields",
    "filter_options",
    "fraction",
    "in_file_order",
    "instance",
    "integer",
    "items",
    "join",
    "key_text",
    "list_of",
    "options",
    "parse_duration",
    "percent",
    "regex",
    "show",
    "size",
    "string",
    "text",
    "within",
]

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}

_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")

T = TypeVar("T")


class Rule:
    """The rule of one config field, and its attrs validator.

    ``read(value, path, **kwargs)`` returns the value read or raises
    :class:`~sota_dispatch.ConfigError` at ``path``. The parser reads a
    field's YAML value with :meth:`check`; as a validator, a value passes
    when reading it gives it back unchanged, since a config object holds
    values already read (``0.25``, not ``"250ms"``; a tuple, not a list).
    ``optional``: None is a value (a YAML ``null`` reads as None). ``kind``
    says what a value read differently should have been (default: the type
    of the value read).
    """

    __slots__ = ("kind", "kwargs", "optional", "read")

    def __init__(
        self, read: Callable[..., Any], *, optional: bool = False, kind: str | None = None, **kwargs: Any
    ) -> None:
        self.read = read
        self.optional = optional
        self.kind = kind
        self.kwargs = kwargs

    def check(self, value: object, path: str, **overrides: Any) -> Any:
        """``value`` read by the rule (``overrides`` replace the reader's
        arguments, e.g. ``parse``, the reader of a list's entries)."""
        if value is None and self.optional:
            return None
        return self.read(value, path, **{**self.kwargs, **overrides})

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        read = self.check(value, attribute.name)
        if read != value:
            raise ConfigError(attribute.name, f"expected {self.kind or type(read).__name__}, got {show(value)}")

    def __repr__(self) -> str:
        arguments = "".join(f", {name}={value!r}" for name, value in self.kwargs.items())
        return f"Rule({getattr(self.read, '__name__', self.read)}{arguments})"


def show(value: object) -> str:
    """A value as the YAML user wrote it, on one line (quotes and escapes
    from JSON, so a newline in a value cannot forge a second error line)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__} value"


def key_text(key: object) -> str:
    """A mapping key as a path segment."""
    text = key if isinstance(key, str) else show(key)
    return text if text.isprintable() and "." not in text else json.dumps(text, ensure_ascii=False)


def join(path: str, key: str) -> str:
    """``key`` within ``path`` (an empty key: the path itself)."""
    if not key:
        return path
    return f"{path}.{key}" if path else key


def within(error: ConfigError, path: str) -> ConfigError:
    """``error`` (every problem of it) with its paths taken as relative to ``path``."""
    return ConfigError.combine(ConfigError(join(path, each.path), each.problem) for each in error.errors)


def did_you_mean(given: str, choices: Sequence[str], form: str = "; did you mean {!r}?") -> str:
    """``form`` filled with the one of ``choices`` closest to a misspelt
    ``given`` (difflib's ratio >= 0.8: a typo, not a guess: "fastest" is
    no "least_request"), else ``""``."""
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.8)
    return form.format(close[0]) if close else ""


def fields(
    value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> tuple[dict[str, Any], list[ConfigError]]:
    """A mapping's known keys and values, and its problems (unknown keys,
    required ones missing); raises if it is not a mapping at all."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {show(value)}")
    known: dict[str, Any] = {}
    errors: list[ConfigError] = []
    expected = f"expected one of: {', '.join(allowed)}"
    for key, item in value.items():
        if not isinstance(key, str):
            hint = " (YAML reads unquoted on/off/yes/no as booleans: quote the key)" if isinstance(key, bool) else ""
            errors.append(ConfigError(path, f"unknown key {show(key)}{hint} ({expected})"))
        elif key not in allowed:
            hint = did_you_mean(key, allowed, "did you mean {!r}? ")
            errors.append(ConfigError(join(path, key_text(key)), f"unknown key ({hint}{expected})"))
        else:
            known[key] = item
    errors += [ConfigError(join(path, key), "required") for key in required if key not in value]
    return known, errors


def list_of(value: object, path: str, *, non_empty: bool = False) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"expected a list, got {show(value)}")
    if non_empty and not value:
        raise ConfigError(path, "expected at least one entry")
    return value


def items(value: object, path: str, parse: Callable[[object, str], T], *, non_empty: bool = False) -> tuple[T, ...]:
    """A list read entry by entry (``path[i]``), every entry's problems reported."""
    read: list[T] = []
    errors: list[ConfigError] = []
    for i, entry in enumerate(list_of(value, path, non_empty=non_empty)):
        try:
            read.append(parse(entry, f"{path}[{i}]"))
        except ConfigError as exc:
            errors += exc.errors
    if errors:
        raise ConfigError.combine(errors)
    return tuple(read)


def instance(cls: type[T]) -> Callable[[object, str], T]:
    """A reader of an object of ``cls`` (a config object within another)."""

    article = "an" if cls.__name__[:1] in "AEIOU" else "a"

    def read(value: object, path: str) -> T:
        if not isinstance(value, cls):
            raise ConfigError(path, f"expected {article} {cls.__name__}, got {show(value)}")
        return value

    read.__name__ = f"instance_of_{cls.__name__}"
    return read


def string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {show(value)}")
    return value


def text(value: object, path: str) -> str:
    """Any string, the empty one too."""
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {show(value)}")
    return value


def regex(value: object, path: str) -> str:
    """A regular expression that compiles."""
    pattern = text(value, path)
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ConfigError(path, f"invalid regular expression: {exc}") from None
    return pattern


def integer(value: object, path: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {show(value)}")
    if value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"expected an integer <= {maximum}, got {value}")
    return value


def size(value: object, path: str, minimum: int = 1) -> int:
    """Bytes: an integer, or a string such as ``128MiB`` or ``512 KiB``."""
    if isinstance(value, str):
        found = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(found.group(2).lower()) if found else None
        if found is None or unit is None:
            raise ConfigError(path, f'expected a size (bytes, or e.g. "128MiB"), got {show(value)}')
        value = int(found.group(1)) * unit
    return integer(value, path, minimum)


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {show(value)}")
    return value


def duration(value: object, path: str, *, allow_zero: bool = False) -> float:
    """Seconds: a number, or a string such as ``250ms``, ``1.5s``, ``2m``."""
    seconds = parse_duration(value)
    if seconds is None or (seconds == 0 and not allow_zero):
        what = "a duration >= 0" if allow_zero else "a positive duration"
        raise ConfigError(path, f'expected {what} (seconds, or e.g. "250ms"), got {show(value)}')
    return seconds


def address(value: object, path: str, *, endpoint: bool = False) -> str:
    text = value.strip() if isinstance(value, str) else None
    port = -1
    if text is not None:
        try:
            port = parse_address(text)[1]
        except ValueError:
            text = None
    if text is None:
        hint = " (YAML read an unquoted value as a number: quote it)" if isinstance(value, (int, float)) else ""
        raise ConfigError(path, f"expected HOST:PORT, got {show(value)}{hint}")
    if endpoint and port == 0:
        raise ConfigError(path, f"an endpoint needs a port from 1 to 65535, got {show(value)}")
    return text


def choice(value: object, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ConfigError(path, f"expected one of {', '.join(choices)}, got {show(value)}{hint}")
    return cast(str, value)


def options(value: object, path: str) -> FrozenMap[str, str]:
    """Protocol options: names to scalar values, read as text (YAML's
    ``true`` as ``"true"``); each protocol reads its own."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping of option names to values, got {show(value)}")
    result: dict[str, str] = {}
    errors: list[ConfigError] = []
    for key, item in value.items():
        if not isinstance(key, str):
            errors.append(ConfigError(path, f"option names are strings, got {show(key)}"))
        elif isinstance(item, (Mapping, list, tuple)) or item is None:
            errors.append(ConfigError(join(path, key_text(key)), f"expected a scalar option value, got {show(item)}"))
        else:
            result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    if errors:
        raise ConfigError.combine(errors)
    return FrozenMap(result)


def filter_options(value: object, path: str) -> FrozenMap[str, FrozenMap[str, str]]:
    """``per_filter_config``: filter names to their options (each as
    :func:`options` reads them)."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping of stream filter names to options, got {show(value)}")
    result: dict[str, FrozenMap[str, str]] = {}
    errors: list[ConfigError] = []
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            errors.append(ConfigError(path, f"stream filter names are non-empty strings, got {show(key)}"))
            continue
        try:
            result[key] = options({} if item is None else item, join(path, key_text(key)))
        except ConfigError as exc:
            errors += exc.errors
    if errors:
        raise ConfigError.combine(errors)
    return FrozenMap(result)


def fraction(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(path, f"expected a number in (0, 1], got {show(value)}")
    return float(value)


def percent(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(path, f"expected a number from 0 to 100, got {show(value)}")
    return float(value)


def access_log(value: object, path: str) -> str:
    """``true`` (the default format), a format with Envoy's command
    operators (``%UPSTREAM_HOST%``) or a ``str.format`` one, compiled now
    (see :mod:`.access_log`)."""
    if value is True:
        return ACCESS_LOG_FORMAT
    form = string(value, path)
    compile_access_log(form, path)
    return form


def in_file_order(errors: Iterable[ConfigError], document: object) -> list[ConfigError]:
    """``errors`` sorted by where their paths are in ``document`` (a loaded
    file: its mappings keep the file's order); a path the document lacks
    (a required key) counts where its nearest enclosing value is."""
    order: dict[str, int] = {}
    stack: list[tuple[str, object]] = [("", document)]
    while stack:  # depth first, in document order; no recursion limit
        path, value = stack.pop()
        order.setdefault(path, len(order))
        if isinstance(value, Mapping):
            children = [(join(path, key_text(key)), item) for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        else:
            continue
        stack += reversed(children)

    def position(path: str) -> int:
        while path and path not in order:
            path = path[: max(path.rfind("."), path.rfind("["), 0)]
        return order.get(path, 0)

    return sorted(errors, key=lambda error: position(error.path))
