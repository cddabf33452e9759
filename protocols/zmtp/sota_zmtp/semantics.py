"""ZMTP's per-message proxy semantics as plain functions, made static
methods of :class:`~sota_zmtp.ZmtpDispatcher`.

Compiled in the compiled build: the proxy calls them for every message (as
classmethods of the interpreted dispatcher class each call cost ~1.1k
instructions there). A message has no id of its own: the proxy sends
``[id, *message]`` upstream, ``id`` a 4-byte big-endian frame, and strips
it from the answer.
"""

from __future__ import annotations

from .wire import encode_message

__all__ = ["encode_request", "encode_response", "response_id"]


def encode_request(frame: list[bytes], upstream_id: int) -> bytes:
    """The message for upstream, behind a frame holding ``upstream_id``."""
    return encode_message([upstream_id.to_bytes(4, "big"), *frame])


def response_id(frame: list[bytes]) -> int | None:
    """The id frame the answer carries in front; None without one."""
    if not frame or len(frame[0]) != 4:
        return None
    return int.from_bytes(frame[0], "big")


def encode_response(response: list[bytes], request: list[bytes]) -> bytes:
    """The answer for the client: without the id frame in front."""
    return encode_message(response[1:])
