"""Auto-detection: which protocol a client speaks, from its first bytes.

A listener with ``protocol: auto`` asks each candidate protocol's sniffer
about the bytes read so far, reading one more byte at a time while any
says it needs more, and up to :data:`MAX_SNIFF` bytes.
"""

from __future__ import annotations

from ..errors import ProtocolError
from ..io.reader import BufferedReader
from ..protocol.registry import ProtocolInfo
from ..protocol.semantics import FrameSemantics
from ..protocol.sniff import Match

__all__ = ["MAX_SNIFF", "sniff_protocol"]

#: Bytes read at most while detecting a connection's protocol.
MAX_SNIFF = 64 * 1024


async def sniff_protocol(
    reader: BufferedReader, candidates: list[tuple[str, ProtocolInfo]]
) -> type[FrameSemantics] | None:
    """The class of the one candidate that says YES to the client's first
    bytes (they stay in ``reader``); None if the client closed first.
    Raises :class:`~sota_dispatch.ProtocolError` when none can."""
    want = 1
    while True:
        prefix = await reader.peek(want)
        verdicts = [(info, info.sniff(prefix)) for _, info in candidates]
        for info, verdict in verdicts:
            if verdict is Match.YES:
                return info.protocol_class
        if not prefix:
            return None  # closed before saying anything
        if len(prefix) < want or all(v is Match.NO for _, v in verdicts):
            raise ProtocolError(f"no proxied protocol starts with {prefix[:16]!r}")
        if len(prefix) >= MAX_SNIFF:
            raise ProtocolError(f"no protocol recognised in the first {MAX_SNIFF} bytes")
        want = len(prefix) + 1
