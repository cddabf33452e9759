"""bolt's constants: protocol versions, frame types, command codes,
response statuses and the fixed headers' layouts.

A module of its own (compiled in the compiled build) so that
:mod:`~sota_xprotocol.bolt`, which re-exports the public names, stays a
readable size; nothing here runs per frame but the layouts' pack and unpack.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

__all__ = ["BOLT_V1", "BOLT_V2", "DEFAULT_MAX_FRAME_SIZE", "CmdCode", "FrameType", "ResponseStatus"]

BOLT_V1: Final = 0x01
BOLT_V2: Final = 0x02
DEFAULT_MAX_FRAME_SIZE: Final = 8 * 1024 * 1024
_CRC_SWITCH: Final = 0x01


class FrameType(enum.IntEnum):
    RESPONSE = 0
    REQUEST = 1
    ONEWAY = 2


class CmdCode(enum.IntEnum):
    HEARTBEAT = 0
    RPC_REQUEST = 1
    RPC_RESPONSE = 2


class ResponseStatus(enum.IntEnum):
    """Bolt response statuses (hex values: they jump from 9 to 0x10)."""

    SUCCESS = 0x00
    ERROR = 0x01
    SERVER_EXCEPTION = 0x02
    UNKNOWN = 0x03
    SERVER_THREADPOOL_BUSY = 0x04
    ERROR_COMM = 0x05
    NO_PROCESSOR = 0x06
    TIMEOUT = 0x07
    CLIENT_SEND_ERROR = 0x08
    CODEC_EXCEPTION = 0x09
    CONNECTION_CLOSED = 0x10
    SERVER_SERIAL_EXCEPTION = 0x11
    SERVER_DESERIAL_EXCEPTION = 0x12


# Compiled once (struct's format cache costs a lookup per call, and these
# run per frame). Final: the compiled build reads a Final module constant
# directly, not through the module dict.
_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
#: Whole fixed headers, encoded with one pack and decoded with one unpack:
#: v1/v2 request (a timeout) and response (a status); v2 adds ver1 after
#: the proto and switch after the codec. Their sizes are the header sizes.
_V1_REQUEST: Final = struct.Struct(">BBHBIBiHHI")
_V1_RESPONSE: Final = struct.Struct(">BBHBIBHHHI")
_V2_REQUEST: Final = struct.Struct(">BBBHBIBBiHHI")
_V2_RESPONSE: Final = struct.Struct(">BBBHBIBBHHHI")
