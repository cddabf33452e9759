"""A listener's ``access_log`` format, compiled once when the config is read.

Two forms are accepted. A string with Envoy command operators
(``%START_TIME% %UPSTREAM_HOST% %RESPONSE_FLAGS%``, see :data:`OPERATORS`) is
the Envoy form; anything else is a ``str.format`` string over the fields of
:data:`FIELDS` (``{listener} {outcome} {duration_ms:.3f}``), the form of
sota-dispatch 0.x. Either way the result is an :class:`AccessFormat`: one
``str.format_map`` template over the fields of a request's record (the dict
the proxy builds per request, only when the listener has an access log),
so nothing is parsed per request.
"""

from __future__ import annotations

import difflib
import functools
import re
import socket
import string
from collections.abc import Iterable, Mapping
from datetime import datetime

from ..errors import ConfigError

__all__ = ["FIELDS", "OPERATORS", "RESPONSE_FLAGS", "AccessFormat", "compile_access_log"]

#: The fields of a request's record: the ``str.format`` names, and the JSON
#: keys of an access line (``--log-format json``).
FIELDS = (
    "start_time",  # ISO 8601, UTC, milliseconds
    "listener",
    "protocol",
    "conn",  # the client connection's id
    "stream",  # the request's number on it
    "remote_address",  # the client's host:port
    "local_address",  # the listener's host:port, as the client reached it
    "cluster",
    "endpoint",  # host:port of the upstream that answered (or was tried last)
    "outcome",  # success, or a failure's name (timeout, overflow, ...)
    "flags",  # the outcome as Envoy's response flags (UT, UO, UH, ...; "-": none)
    "status",  # the protocol's response status (None: no response, or none in the protocol)
    "attempts",  # tries made
    "duration_ms",  # from the request's arrival to its answer
    "upstream_ms",  # from the last try's start to its end (None: no try)
    "bytes",  # the answer's size (also ``bytes_sent``)
    "bytes_sent",
    "bytes_received",  # the request's size, where the protocol knows it (None: not)
)

#: Envoy's command operators, each as a field (None: Envoy has it, sota-dispatch has no such value).
OPERATORS: Mapping[str, str | None] = {
    "START_TIME": "start_time",
    "DURATION": "duration",
    "RESPONSE_FLAGS": "flags",
    "RESPONSE_CODE": "status",
    "RESPONSE_CODE_DETAILS": "outcome",
    "UPSTREAM_HOST": "endpoint",
    "UPSTREAM_CLUSTER": "cluster",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": "attempts",
    "DOWNSTREAM_REMOTE_ADDRESS": "remote_address",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": "remote_host",
    "DOWNSTREAM_LOCAL_ADDRESS": "local_address",
    "BYTES_SENT": "bytes_sent",
    "PROTOCOL": "protocol",
    "CONNECTION_ID": "conn",
    "STREAM_ID": "stream",
    "HOSTNAME": "hostname",
    "BYTES_RECEIVED": "bytes_received",
    # Envoy's, but nothing here measures them (yet): named as unsupported.
    "RESPONSE_DURATION": None,
    "REQUEST_DURATION": None,
    "ROUTE_NAME": None,
    "UPSTREAM_LOCAL_ADDRESS": None,
    "UPSTREAM_TRANSPORT_FAILURE_REASON": None,
    "REQ": None,
    "RESP": None,
}

#: An outcome as Envoy's response flags (``%RESPONSE_FLAGS%``).
RESPONSE_FLAGS: Mapping[str, str] = {
    "success": "-",
    "no_route": "NR",
    "no_healthy_upstream": "UH",
    "overflow": "UO",
    "timeout": "UT",
    "upstream_reset": "UR",
    "codec_error": "DPE",
    "denied": "UAEX",
    "rate_limited": "RL",
    "internal": "-",
}

#: A record of every field, to try a ``str.format`` format on.
_SAMPLE: Mapping[str, object] = {
    **dict.fromkeys(FIELDS, "x"),
    **dict.fromkeys(("conn", "stream", "status", "attempts", "bytes", "bytes_sent", "bytes_received"), 1),
    **dict.fromkeys(("duration_ms", "upstream_ms"), 1.0),
}

_OPERATOR = re.compile(r"%([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?%")
_HOSTNAME = socket.gethostname()


#: The fields that may hold None (printed ``-``).
_NULLABLE = frozenset({"status", "upstream_ms", "remote_address", "local_address", "bytes_received"})


class AccessFormat:
    """A compiled access log format: :meth:`render` a request's record."""

    __slots__ = ("derived", "envoy", "nullable", "source", "start_time_formats", "template")

    def __init__(
        self, source: str, template: str, envoy: bool, used: Iterable[str], start_time_formats: tuple[str, ...] = ()
    ) -> None:
        #: The format as configured.
        self.source = source
        #: A ``str.format_map`` template over the record's fields.
        self.template = template
        #: Whether it was written with Envoy's operators.
        self.envoy = envoy
        used = frozenset(used)
        #: The fields it uses that may be None (the default line uses none).
        self.nullable = tuple(sorted(used & _NULLABLE))
        #: Values it computes from the record (Envoy's whole-ms duration, ...).
        self.derived = tuple(sorted(used - set(FIELDS)))
        #: The ``strftime`` formats of ``%START_TIME(...)%`` operators, in order.
        self.start_time_formats = start_time_formats

    def render(self, record: Mapping[str, object]) -> str:
        """The access line for ``record`` (the fields of :data:`FIELDS`; a
        None value prints as ``-``). A ``str.format`` spec a missing value
        cannot take (``{status:d}`` without a status) makes the line
        ``key=value`` pairs instead: a line is never lost."""
        values = record
        if self.derived or self.nullable:
            values = dict(record)
            for key in self.derived:
                values[key] = self._derive(key, record)
            for key in self.nullable:
                if values[key] is None:
                    values[key] = "-"
        try:
            return self.template.format_map(values)
        except (TypeError, ValueError):
            return " ".join(f"{key}={'-' if value is None else value}" for key, value in record.items())

    def _derive(self, key: str, record: Mapping[str, object]) -> object:
        if key == "duration":
            return int(_number(record["duration_ms"]))
        if key == "remote_host":
            remote = record.get("remote_address")
            return "-" if not isinstance(remote, str) else remote.rpartition(":")[0].strip("[]") or "-"
        if key == "hostname":
            return _HOSTNAME
        return _strftime(record.get("start_time"), self.start_time_formats[int(key[len("start_time_") :])])

    def __repr__(self) -> str:
        return f"AccessFormat({self.source!r})"


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _strftime(start_time: object, form: str) -> str:
    if not isinstance(start_time, str):
        return "-"
    return datetime.fromisoformat(start_time).strftime(form)


@functools.lru_cache(maxsize=256)
def compile_access_log(source: str, path: str = "access_log") -> AccessFormat:
    """``source`` compiled (cached: a reload with the same format reuses it);
    raises :class:`~sota_dispatch.ConfigError` at ``path`` for an unknown
    field or operator, with the nearest known name as a hint."""
    if _OPERATOR.search(source):
        return _compile_envoy(source, path)
    try:
        source.format_map(_SAMPLE)
    except KeyError as exc:
        name = str(exc.args[0])
        raise ConfigError(
            path, f"unknown field {{{name}}}{_hint(name, FIELDS)} (fields: {', '.join(FIELDS)})"
        ) from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise ConfigError(path, f"bad format ({exc}); fields: {', '.join(FIELDS)}") from None
    used = {re.split(r"[.[]", name)[0] for _, name, _, _ in string.Formatter().parse(source) if name}
    return AccessFormat(source, source, envoy=False, used=used)


def _compile_envoy(source: str, path: str) -> AccessFormat:
    parts: list[str] = []
    used: list[str] = []
    problems: list[str] = []
    formats: list[str] = []
    end = 0
    for found in _OPERATOR.finditer(source):
        parts.append(_literal(source[end : found.start()]))
        end = found.end()
        name, argument = found.group(1), found.group(2)
        if name not in OPERATORS:
            problems.append(f"unknown operator %{name}%{_hint(name, OPERATORS)}")
            continue
        field = OPERATORS[name]
        if field is None:
            problems.append(f"%{name}% is not supported here")
            continue
        if argument is not None:
            if name != "START_TIME":
                problems.append(f"%{name}% takes no argument")
                continue
            field = f"start_time_{len(formats)}"
            formats.append(argument)
        parts.append(f"{{{field}}}")
        used.append(field)
    parts.append(_literal(source[end:]))
    if problems:
        supported = ", ".join(f"%{name}%" for name, field in OPERATORS.items() if field is not None)
        raise ConfigError(path, f"{'; '.join(problems)} (supported: {supported})")
    return AccessFormat(source, "".join(parts), envoy=True, used=used, start_time_formats=tuple(formats))


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    return f" (did you mean %{close[0]}%?)" if name.isupper() else f" (did you mean {{{close[0]}}}?)"
