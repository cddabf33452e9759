"""The steps of a ZMTP connection's greeting and handshake, and the command
each handshake step waits for: the engine's states, named in one place."""

from __future__ import annotations

import enum

__all__ = ["EXPECTED", "State"]


class State(enum.Enum):
    """Where a connection is: the greeting's steps, each mechanism's commands, traffic."""

    SIGNATURE = "signature"
    V3_PROBE = "v3-probe"
    V2_SOCKET_TYPE = "v2-socket-type"
    V2_IDENTITY = "v2-identity"
    V3_GREETING = "v3-greeting"
    V3_READY = "v3-ready"
    PLAIN_HELLO = "plain-hello"
    PLAIN_WELCOME = "plain-welcome"
    PLAIN_INITIATE = "plain-initiate"
    CURVE_HELLO = "curve-hello"
    CURVE_WELCOME = "curve-welcome"
    CURVE_INITIATE = "curve-initiate"
    CURVE_READY = "curve-ready"
    TRAFFIC = "traffic"


#: The command each handshake state waits for (any other is a protocol error).
EXPECTED = {
    State.V3_READY: b"READY",
    State.PLAIN_HELLO: b"HELLO",
    State.PLAIN_WELCOME: b"WELCOME",
    State.PLAIN_INITIATE: b"INITIATE",
    State.CURVE_HELLO: b"HELLO",
    State.CURVE_WELCOME: b"WELCOME",
    State.CURVE_INITIATE: b"INITIATE",
    State.CURVE_READY: b"READY",
}
