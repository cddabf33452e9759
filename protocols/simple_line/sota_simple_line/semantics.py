"""simple_line's per-line proxy semantics as plain functions, made static
methods of :class:`~sota_simple_line.SimpleLineDispatcher`.

Compiled in the compiled build: the proxy calls them for every line (as
classmethods of the interpreted dispatcher class each call cost ~1.1k
instructions there). A query line has no id: it goes upstream as it came,
and its answer back as it came.
"""

from __future__ import annotations

__all__ = ["encode_request", "encode_response"]


def encode_request(frame: bytes, upstream_id: int) -> bytes:
    """The line as it came (there is no id to write)."""
    return frame


def encode_response(response: bytes, request: bytes) -> bytes:
    """The answer line as it came."""
    return response
