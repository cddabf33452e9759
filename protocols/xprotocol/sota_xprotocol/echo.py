"""What the echo services answer, as plain functions (compiled in the
compiled build: they run once per request; :mod:`~sota_xprotocol.service`
makes them the services' ``on_request``)."""

from __future__ import annotations

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
from sota_dispatch import ProtocolError

__all__ = ["echo_bolt", "echo_dubbo"]


def echo_bolt(frame: bolt.BoltFrame) -> bytes | None:
    """Echo: SUCCESS with the request's class name and content (oneway: none)."""
    if frame.type is bolt.FrameType.ONEWAY:
        return None
    return bolt.encode_reply(frame, class_name=frame.class_name, content=frame.content)  # status SUCCESS


def echo_dubbo(frame: dubbo.DubboFrame) -> bytes | None:
    """Echo: the first argument back (type "value"); events and oneway: none."""
    if frame.is_event or not frame.is_twoway:
        return None
    try:
        call = frame.call()
        arguments = frame.argument_bytes()
    except ProtocolError as exc:
        # The frame itself was sound; only its body is bad: answer, stay up.
        return dubbo.error_response(frame, dubbo.DubboStatus.BAD_REQUEST, f"400|{exc}").encode()
    # The first argument's own bytes go back: unchanged (a long stays a long,
    # an int[] stays typed), and never re-expanded from shared references.
    # They are walked over, not built, as a proxy does: an echo has no use
    # for the values.
    first = arguments[0] if arguments else None
    return dubbo.value_response(frame, encoded=first, dubbo_version=call.dubbo_version).encode()
