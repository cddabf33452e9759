"""What a peer may make us buffer: :class:`Limits` and the handshake's cap.

Configuration, not protocol: the dispatcher builds a :class:`Limits` from
its options, the engine checks identities against it and the frame reader
checks every size against it as soon as a header is read, before anything is
buffered for it. A module of its own so that both sides import it downward.
"""

from __future__ import annotations

import attrs

__all__ = ["HANDSHAKE_FRAME_MAX", "Limits"]

#: Largest frame accepted before the handshake is complete (READY, HELLO,
#: INITIATE, the 2.0 identity frame): metadata is small, and nothing that
#: large is buffered for a peer that has not authenticated.
HANDSHAKE_FRAME_MAX = 65536


@attrs.frozen
class Limits:
    """Bounds on what a peer may make us buffer (checked before allocating)."""

    max_frame_size: int = 16 * 1024 * 1024
    max_message_size: int = 64 * 1024 * 1024
    max_parts: int = 1024
    #: Longest peer identity accepted (RFC 37 says 255).
    max_identity_size: int = 255
    #: Seconds from connect to a completed handshake (enforced by the dispatcher).
    handshake_timeout: float = 10.0
