"""Readers of raw configuration values: each checks one value of a loaded
document and raises :class:`~sota_dispatch.ConfigError` naming its path
(``clusters[1].endpoints[0].address: expected HOST:PORT, got "localhost"``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from ..errors import ConfigError
from ..io.address import parse_address

__all__ = [
    "address",
    "boolean",
    "choice",
    "duration",
    "fraction",
    "integer",
    "items",
    "join",
    "key_text",
    "list_of",
    "mapping",
    "options",
    "parse_duration",
    "show",
    "size",
    "string",
    "unique",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}

_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")

T = TypeVar("T")


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


def mapping(value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping, got {show(value)}")
    for key in value:
        if not isinstance(key, str):
            hint = " (YAML reads unquoted on/off/yes/no as booleans: quote the key)" if isinstance(key, bool) else ""
            raise ConfigError(path, f"unknown key {show(key)}{hint} (expected one of: {', '.join(allowed)})")
        if key not in allowed:
            raise ConfigError(join(path, key_text(key)), f"unknown key (expected one of: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise ConfigError(join(path, key), "required")
    return dict(value)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def list_of(value: object, path: str, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {show(value)}")
    if non_empty and not value:
        raise ConfigError(path, "expected at least one entry")
    return value


def string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {show(value)}")
    return value


def integer(value: object, path: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {show(value)}")
    if value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"expected an integer <= {maximum}, got {value}")
    return value


def size(value: object, path: str) -> int:
    """Bytes: an integer, or a string such as ``128MiB`` or ``512 KiB``."""
    if isinstance(value, str):
        found = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(found.group(2).lower()) if found else None
        if found is None or unit is None:
            raise ConfigError(path, f'expected a size (bytes, or e.g. "128MiB"), got {show(value)}')
        value = int(found.group(1)) * unit
    return integer(value, path)


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


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like ``250ms``, ``1.5s``, ``2m``,
    ``1e3ms``; None unless finite and not negative (the CLI shares it)."""
    seconds: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m)?\s*", value)
            if match:
                seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    except OverflowError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
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
        raise ConfigError(path, f"expected one of {', '.join(choices)}, got {show(value)}")
    return cast(str, value)


def options(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a mapping of option names to values, got {show(value)}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"option names are strings, got {show(key)}")
        if isinstance(item, (Mapping, list)) or item is None:
            raise ConfigError(join(path, key_text(key)), f"expected a scalar option value, got {show(item)}")
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def items(value: object, path: str, parse: Callable[[object, str], T], *, non_empty: bool = False) -> tuple[T, ...]:
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(list_of(value, path, non_empty=non_empty)))


def unique(names: Sequence[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{path}[{i}].name", f"duplicate {what} name {show(name)}")
        seen.add(name)


def fraction(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(path, f"expected a number in (0, 1], got {show(value)}")
    return float(value)
