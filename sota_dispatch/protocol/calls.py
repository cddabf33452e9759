"""What a protocol says of an answer to the client tool (``python -m sota_dispatch.call``).

A protocol class turns a frame into a :class:`CallAnswer` in
:meth:`~sota_dispatch.FrameSemantics.describe_answer`: whether the answer
is a success (the tool's exit code and error count rest on it), one line
for a person, and JSON-ready data for a script (``--json``). The tool
itself knows nothing of any protocol's frames; this is the one value it
needs from each.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["CallAnswer"]


@attrs.frozen
class CallAnswer:
    """An answer as the client tool shows it.

    ``ok``: False for the protocol's error answers (a non-success status,
    an ``error:`` line, an exception result): the tool then exits 1 and
    counts an error. ``text``: one human line, status or error included.
    ``data``: the same answer as JSON-ready values (dicts, lists, strings,
    numbers) for ``--json``; a protocol puts there what a script would
    test (status, headers, body).
    """

    ok: bool
    text: str
    data: Any = None

    @staticmethod
    def text_of(data: bytes) -> str:
        """``data`` as text: UTF-8 when it is, else with each bad byte
        escaped (``\\xff``), so binary payloads print on one line and
        survive JSON without a second encoding."""
        return bytes(data).decode("utf-8", "backslashreplace")
