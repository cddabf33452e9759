"""Is a proxiable protocol class complete? Checked when it is registered or loaded.

A class that defines both codecs is proxiable, but the proxy also needs the
bytes to send upstream, the answer's bytes for the client and the error
reply of each failure, and, to multiplex, the id of an answer. A class that
lacks one would fail at run time, on the first request of every
connection; here it fails once, when the plugin loads, naming what is
missing. The codecs are built once with the options' defaults and must
have every member :class:`~sota_dispatch.Codec` names.
"""

from __future__ import annotations

from typing import Any

from .options import OptionPlace
from .semantics import FrameSemantics

__all__ = ["CODEC_MEMBERS", "proxiable_problems"]

#: What the core calls on every codec.
CODEC_MEMBERS = ("feed", "data_to_send", "check", "ready", "buffered")

#: Classmethods a proxiable class must define (FrameSemantics's raise).
_REQUIRED = ("encode_request", "encode_response", "error_reply")


def proxiable_problems(cls: type[FrameSemantics]) -> list[str]:
    """What a proxiable ``cls`` lacks (empty: nothing), one line each."""
    problems = [f"no {name}() (the proxy needs it for every request)" for name in _REQUIRED if not _defines(cls, name)]
    if "multiplex" in cls.pool_modes and not _defines(cls, "response_id"):
        problems.append("pool mode multiplex, but no response_id() to match answers to requests")
    if _defines(cls, "is_heartbeat") and not _defines(cls, "heartbeat_reply"):
        problems.append("is_heartbeat() but no heartbeat_reply()")
    for side in ("server_codec", "client_codec"):
        codec = _build(cls, side)
        if codec is not None:
            missing = [name for name in CODEC_MEMBERS if not hasattr(codec, name)]
            if missing:
                problems.append(f"{side}() returns a codec without {', '.join(missing)}")
    return problems


def _defines(cls: type, name: str) -> bool:
    """Whether a class below FrameSemantics defines ``name``."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass is not FrameSemantics
    return False


def _build(cls: type[FrameSemantics], side: str) -> Any:
    """The codec of ``side`` with the options' defaults; None when the
    protocol cannot build one without options given (it is judged then)."""
    place: OptionPlace = "listener" if side == "server_codec" else "cluster"
    try:
        options = cls.option_values({}, place)
        return getattr(cls, side)(options, 65536)
    except Exception:  # noqa: BLE001 - a required option, say: nothing to judge here
        return None
