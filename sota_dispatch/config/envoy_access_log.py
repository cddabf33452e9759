"""An Envoy generic proxy's ``access_log`` as a listener's ``access_log``.

Envoy's file access log (``envoy.access_loggers.file``: ``FileAccessLog``
to ``/dev/stdout`` or ``/dev/stderr``) and its stream loggers
(``StdoutAccessLog``, ``StderrAccessLog``) map to the listener's access
log: the format is the ``log_format``'s ``text_format_source.inline_string``
(or ``text_format``, or the older ``format``), its command operators read
as :mod:`~sota_dispatch.config.access_log` reads them; without a format,
the native default line. The lines go to the process's log (the
``sota_dispatch.access`` logger), so a file path is refused, as are a
second logger, access log filters and ``json_format`` (``--log-format
json`` writes every field as a key of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["ENVOY_ACCESS_LOGGERS", "access_log_from_envoy"]

_TYPES = "type.googleapis.com/envoy.extensions.access_loggers."
#: The access loggers read, by ``@type``.
ENVOY_ACCESS_LOGGERS = (
    f"{_TYPES}file.v3.FileAccessLog",
    f"{_TYPES}stream.v3.StdoutAccessLog",
    f"{_TYPES}stream.v3.StderrAccessLog",
)
_PATHS = ("/dev/stdout", "/dev/stderr")

#: ``read_map(value, path, allowed, required)``: envoy.py's reader of a mapping.
MapReader = Callable[[object, str, Sequence[str], Sequence[str]], Mapping[str, Any]]


def access_log_from_envoy(value: object, path: str, read_map: MapReader) -> str | bool:
    """The native ``access_log`` for ``value`` (Envoy's list of access
    loggers) at ``path``: a format, or True for the default line."""
    if not isinstance(value, list) or len(value) != 1:
        raise ConfigError(path, "expected a list of one access logger (a listener has one access log)")
    epath = f"{path}[0]"
    entry = read_map(value[0], epath, ("name", "typed_config"), ("typed_config",))
    tpath = f"{epath}.typed_config"
    typed = read_map(entry["typed_config"], tpath, ("@type", "path", "log_format", "format"), ("@type",))
    kind = typed["@type"]
    if kind not in ENVOY_ACCESS_LOGGERS:
        raise ConfigError(f"{tpath}.@type", f"expected one of {', '.join(ENVOY_ACCESS_LOGGERS)}, got {kind!r}")
    if kind == ENVOY_ACCESS_LOGGERS[0]:
        if typed.get("path") not in _PATHS:
            raise ConfigError(
                f"{tpath}.path",
                "the access log goes to the process's log (the sota_dispatch.access logger): "
                f"expected /dev/stdout or /dev/stderr, got {typed.get('path')!r}",
            )
    else:
        for key in ("path", "format"):
            if key in typed:
                raise ConfigError(f"{tpath}.{key}", "not a field of a stream access logger")
    form: object = typed.get("format")
    fpath = f"{tpath}.format"
    if "log_format" in typed:
        fpath = f"{tpath}.log_format"
        log_format = read_map(typed["log_format"], fpath, ("text_format_source", "text_format"), ())
        if "text_format_source" in log_format:
            fpath += ".text_format_source"
            form = read_map(log_format["text_format_source"], fpath, ("inline_string",), ("inline_string",))
            form, fpath = form["inline_string"], f"{fpath}.inline_string"
        elif "text_format" in log_format:
            form, fpath = log_format["text_format"], f"{fpath}.text_format"
    if form is None:
        return True
    if not isinstance(form, str) or not form.strip():
        raise ConfigError(fpath, "expected a non-empty format string")
    return form.rstrip("\n")  # Envoy's formats end their lines; a log record has none
