"""A protocol's options, declared once: name, help, how the text is read,
default, and where each applies.

A protocol's options arrive as text from three places: ``--option
name=value`` for a local service (``service``), a proxy listener's
``options`` (``listener``, the proxy's client-facing connections) and a
cluster's ``options`` (``cluster``, the proxy's upstream connections). One
:class:`OptionSchema` on the protocol class serves all three: the same
readers validate them, and every error names the option. An option a place
does not use is refused there, never accepted and ignored. A stream
filter's options are declared the same way, at the place ``filter`` (its
``config`` in a listener's ``stream_filters``, or a route's
``per_filter_config``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeAlias

import attrs

__all__ = ["ALL_PLACES", "FILTER", "SERVER_SIDE", "Option", "OptionPlace", "OptionSchema", "parse_duration"]

#: Where an option's value comes from: ``service`` (``--option`` of a local
#: service), ``listener`` (a proxy listener's ``options``), ``cluster`` (a
#: cluster's ``options``, for the proxy's upstream connections).
OptionPlace: TypeAlias = Literal["service", "listener", "cluster", "filter"]

#: The places of an option of the server side of a connection.
SERVER_SIDE: frozenset[OptionPlace] = frozenset({"service", "listener"})
#: Every place of a protocol's option.
ALL_PLACES: frozenset[OptionPlace] = frozenset({"service", "listener", "cluster"})
#: The place of a stream filter's option.
FILTER: frozenset[OptionPlace] = frozenset({"filter"})

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def text(raw: str) -> str:
    """Any text, as it is."""
    return raw


def positive_int(raw: str) -> int:
    """A decimal integer above zero."""
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise ValueError(f"expected a positive integer, got {raw!r}")
    return int(raw)


def seconds(raw: str) -> float:
    """A number of seconds above zero."""
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a number of seconds above zero, got {raw!r}")
    return value


def flag(raw: str) -> bool:
    """``1`` or ``true`` (on), ``0`` or ``false`` (off): a config file's
    ``true`` reaches an option as the text ``true``."""
    if raw not in ("0", "1", "true", "false"):
        raise ValueError(f"expected 0 or 1, got {raw!r}")
    return raw in ("1", "true")


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like ``250ms``, ``1.5s``, ``2m``,
    ``1e3ms``; None unless finite and not negative (the config, the CLI and
    option readers share it)."""
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


def duration(raw: str) -> float:
    """A duration of zero or more: seconds, or with a unit (``250ms``, ``1.5s``, ``2m``)."""
    seconds = parse_duration(raw)
    if seconds is None:
        raise ValueError(f'expected a duration (seconds, or e.g. "250ms"), got {raw!r}')
    return seconds


def _number(raw: str, within: Callable[[float], bool], expected: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan  # within() is false for it
    if not within(value):
        raise ValueError(f"expected {expected}, got {raw!r}")
    return value


def percent(raw: str) -> float:
    """A percentage, from 0 to 100."""
    return _number(raw, lambda value: 0 <= value <= 100, "a percentage from 0 to 100")


def positive_number(raw: str) -> float:
    """A finite number above zero."""
    return _number(raw, lambda value: 0 < value < math.inf, "a number above zero")


def one_of(*choices: str) -> Callable[[str], str]:
    """A reader of one of ``choices``."""

    def read(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw

    read.__doc__ = f"One of {', '.join(choices)}."
    return read


def text_of_at_most(limit: int) -> Callable[[str], str]:
    """A reader of text that is at most ``limit`` bytes in UTF-8."""

    def read(raw: str) -> str:
        if len(raw.encode("utf-8", "surrogatepass")) > limit:
            raise ValueError(f"at most {limit} bytes")
        return raw

    read.__doc__ = f"Text of at most {limit} bytes."
    return read


@attrs.frozen
class Option:
    """One option: its help, its reader, its default, where it applies.

    ``read`` turns the text into the value and raises :class:`ValueError`
    saying what was expected (the usual readers are :meth:`text`,
    :meth:`positive_int`, :meth:`positive_number`, :meth:`seconds`,
    :meth:`duration`, :meth:`percent`, :meth:`flag`, :meth:`one_of` and
    :meth:`text_of_at_most`); ``default`` is the value when the option is
    not given (None: absent); ``places``, where it applies (by default a
    local service and a proxy listener).
    """

    help: str
    read: Callable[[str], Any] = text
    default: Any = None
    places: frozenset[OptionPlace] = SERVER_SIDE

    text = staticmethod(text)
    positive_int = staticmethod(positive_int)
    positive_number = staticmethod(positive_number)
    seconds = staticmethod(seconds)
    duration = staticmethod(duration)
    percent = staticmethod(percent)
    flag = staticmethod(flag)
    one_of = staticmethod(one_of)
    text_of_at_most = staticmethod(text_of_at_most)


class OptionSchema(Mapping[str, Option]):
    """The options of one protocol, name -> :class:`Option`; immutable.

    ``OptionSchema(max_line=Option(...))``; ``schema | other`` is a schema
    with both (``other`` wins), for a subclass that adds options.
    """

    __slots__ = ("_options",)

    def __init__(self, options: Mapping[str, Option] | None = None, /, **more: Option) -> None:
        merged = {**(options or {}), **more}
        for name, option in merged.items():
            if not isinstance(option, Option):
                raise TypeError(f"option {name!r}: expected an Option, got {option!r}")
        self._options: Mapping[str, Option] = merged

    @classmethod
    def from_help(cls, helps: Mapping[str, str]) -> OptionSchema:
        """A schema of text options for local services, from name -> help
        (what a 0.1 ``Dispatcher.options`` mapping was)."""
        return cls({name: Option(help, places=frozenset({"service"})) for name, help in helps.items()})

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def __or__(self, other: Mapping[str, Option]) -> OptionSchema:
        return OptionSchema({**self._options, **other})

    def __repr__(self) -> str:
        return f"OptionSchema({dict(self._options)!r})"

    def at(self, place: OptionPlace) -> dict[str, Option]:
        """The options that apply at ``place``."""
        return {name: option for name, option in self._options.items() if place in option.places}

    def errors(self, raw: Mapping[str, str], place: OptionPlace) -> dict[str, str]:
        """What is wrong with ``raw`` at ``place``, name -> problem (empty: nothing)."""
        known = self.at(place)
        errors: dict[str, str] = {}
        for name, value in raw.items():
            option = known.get(name)
            if option is None:
                names = ", ".join(known) or "none"
                elsewhere = self._options.get(name)
                if elsewhere is not None:
                    where = ", ".join(sorted(elsewhere.places))
                    errors[name] = f"not an option of a {place} (it applies to: {where}; options here: {names})"
                else:
                    errors[name] = f"unknown option (options: {names})"
                continue
            try:
                option.read(value)
            except ValueError as exc:
                errors[name] = str(exc)
        return errors

    def read(self, raw: Mapping[str, str], place: OptionPlace) -> dict[str, Any]:
        """Every option of ``place``, read from ``raw`` or defaulted.

        Raises :class:`ValueError` naming the first bad option; check with
        :meth:`errors` first to get them all.
        """
        values: dict[str, Any] = {}
        for name, option in self.at(place).items():
            value = raw.get(name)
            if value is None:
                values[name] = option.default
                continue
            try:
                values[name] = option.read(value)
            except ValueError as exc:
                raise ValueError(f"option {name}: {exc}") from None
        return values

    def help(self, place: OptionPlace) -> dict[str, str]:
        """name -> help, for the options of ``place``."""
        return {name: option.help for name, option in self.at(place).items()}
