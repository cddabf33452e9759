"""bolt and dubbo for the client tool (``python -m sota_dispatch.call``).

The requests are the ones the echo services and their tests use, which are
the ones real peers send: a bolt RPC request with SOFA-RPC's class name
(``com.alipay.sofa.rpc.core.request.SofaRequest``), the service and method
in the header map SOFA-RPC routes on, the payload as the content as
anthunder sends it (codec 11, protobuf: the bytes as given); a dubbo
invocation in hessian2 whose arguments are ``java.lang.String``\\ s (a
command line has only text), with the service's path, version and group
where Java puts them. :class:`~sota_xprotocol.BoltDispatcher` and
:class:`~sota_xprotocol.DubboDispatcher` call these from their
``call_request`` and ``describe_answer``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sota_xprotocol.bolt as bolt
import sota_xprotocol.dubbo as dubbo
import sota_xprotocol.hessian2 as hessian2
from sota_dispatch import CallAnswer, ProtocolError

__all__ = [
    "DUBBO_PROTOCOL_VERSION",
    "SOFA_REQUEST",
    "bolt_call_request",
    "describe_bolt_answer",
    "describe_dubbo_answer",
    "dubbo_call_request",
]

#: The class name of a SOFA-RPC request (anthunder's and Java's).
SOFA_REQUEST = b"com.alipay.sofa.rpc.core.request.SofaRequest"
#: bolt's codec number for protobuf content, as anthunder sends it.
_PROTOBUF = 11
#: The dubbo protocol version a Java 2.7/3.x consumer writes.
DUBBO_PROTOCOL_VERSION = "2.0.2"
#: Java's version of a service that names none.
_NO_VERSION = "0.0.0"


def bolt_call_request(words: Sequence[str], fields: Mapping[str, str]) -> bolt.BoltFrame:
    """A SOFA-RPC bolt request: the one word as the content; ``service``
    (required) as ``service`` and ``sofa_head_target_service``, ``method``
    as ``sofa_head_method_name``, every other field a header as given."""
    if len(words) > 1:
        raise ValueError(f"a bolt request carries one payload; got {len(words)} words (quote it as one)")
    header = dict(fields)
    service = header.pop("service", None)
    if not service:
        raise ValueError("--service NAME is required (the SOFA service, such as com.example.Echo:1.0)")
    method = header.pop("method", None)
    routed = {"service": service, "sofa_head_target_service": service}
    if method:
        routed["sofa_head_method_name"] = method
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        0,
        codec=_PROTOBUF,
        class_name=SOFA_REQUEST,
        header_bytes=bolt.encode_header_map({**routed, **header}),
        content=words[0].encode() if words else b"",
    )


def describe_bolt_answer(frame: bolt.BoltFrame) -> CallAnswer:
    """``SUCCESS: <content>``, or the status's name and number for any
    other (an error answer)."""
    try:
        name = bolt.ResponseStatus(frame.status).name
    except ValueError:
        name = "UNKNOWN_STATUS"
    content = CallAnswer.text_of(frame.content)
    ok = frame.status == bolt.ResponseStatus.SUCCESS
    try:
        header: dict[str, str] = frame.header
    except ProtocolError:
        header = {}
    data = {
        "status": frame.status,
        "status_name": name,
        "class_name": CallAnswer.text_of(frame.class_name),
        "header": header,
        "content": content,
    }
    shown = name if ok else f"{name} (status {frame.status})"
    text = f"{shown}: {content}" if content else shown
    return CallAnswer(ok=ok, text=text, data=data)


def dubbo_call_request(words: Sequence[str], fields: Mapping[str, str]) -> dubbo.DubboFrame:
    """A two-way hessian2 invocation of ``method`` (required) on ``service``
    (required): each word a ``String`` argument. Fields ``version`` (default
    ``0.0.0``), ``group`` and ``dubbo`` (the protocol version, default
    2.0.2) go where Java puts them; every other field is an attachment."""
    attachments = dict(fields)
    service = attachments.pop("service", None)
    method = attachments.pop("method", None)
    if not service:
        raise ValueError("--service NAME is required (the interface, such as com.example.Echo)")
    if not method:
        raise ValueError("--method NAME is required")
    version = attachments.pop("version", _NO_VERSION)
    protocol_version = attachments.pop("dubbo", DUBBO_PROTOCOL_VERSION)
    attachments.update(path=service, interface=service)
    if version != _NO_VERSION:
        attachments["version"] = version
    descriptor = "Ljava/lang/String;" * len(words)
    values: list[Any] = [protocol_version, service, version, method, descriptor, *words, attachments]
    body = b"".join(hessian2.encode(value) for value in values)
    return dubbo.DubboFrame(dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, 0, body)


def describe_dubbo_answer(frame: dubbo.DubboFrame) -> CallAnswer:
    """``OK: <value as JSON>``; an exception result or any status but OK
    is an error answer, shown with the status's name and its message."""
    try:
        name = dubbo.DubboStatus(frame.status).name
    except ValueError:
        name = "UNKNOWN_STATUS"
    data: dict[str, Any] = {"status": frame.status, "status_name": name}
    try:
        values = hessian2.decode_all(frame.body)
    except (ProtocolError, hessian2.NeedMoreData) as exc:
        data["error"] = f"undecodable body: {exc}"
        return CallAnswer(ok=False, text=f"{name} (status {frame.status}): {data['error']}", data=data)
    if frame.status != dubbo.DubboStatus.OK:
        message = values[0] if values else ""
        data["error"] = _jsonable(message)
        return CallAnswer(ok=False, text=f"{name} (status {frame.status}): {message}", data=data)
    kind = values[0] if values else None
    try:
        result = dubbo.ResponseType(kind if isinstance(kind, int) else -1)
    except ValueError:
        data["error"] = f"response type {kind!r} is not one of dubbo's"
        return CallAnswer(ok=False, text=f"{name}: {data['error']}", data=data)
    with_attachments = result in _WITH_ATTACHMENTS
    if with_attachments and len(values) > 1 and isinstance(values[-1], dict):
        data["attachments"] = _jsonable(values[-1])
    value = values[1] if result not in _NULLS and len(values) > 1 else None
    data["type"] = result.name.lower()
    if result in (dubbo.ResponseType.EXCEPTION, dubbo.ResponseType.EXCEPTION_WITH_ATTACHMENTS):
        data["exception"] = _jsonable(value)
        return CallAnswer(ok=False, text=f"{name}: exception {_exception_line(value)}", data=data)
    data["value"] = _jsonable(value)
    return CallAnswer(ok=True, text=f"{name}: {json.dumps(data['value'], ensure_ascii=False)}", data=data)


_NULLS = frozenset({dubbo.ResponseType.NULL, dubbo.ResponseType.NULL_WITH_ATTACHMENTS})
_WITH_ATTACHMENTS = frozenset(
    {
        dubbo.ResponseType.VALUE_WITH_ATTACHMENTS,
        dubbo.ResponseType.NULL_WITH_ATTACHMENTS,
        dubbo.ResponseType.EXCEPTION_WITH_ATTACHMENTS,
    }
)


def _exception_line(value: Any) -> str:
    """A Java exception (a hessian object) as ``Class: message``."""
    if isinstance(value, hessian2.HessianObject):
        message = value.fields.get("detailMessage")
        return f"{value.type}: {message}" if message else value.type
    return repr(value)


def _jsonable(value: Any) -> Any:
    """A decoded hessian2 value as JSON-ready values: bytes as text (bad
    bytes escaped), dates in ISO 8601, objects as their type and fields,
    map keys as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return CallAnswer.text_of(bytes(value))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, hessian2.JavaDate):
        return {"millis": value.millis}
    if isinstance(value, hessian2.HessianObject):
        return {"type": value.type, "fields": _jsonable(value.fields)}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return repr(value)
