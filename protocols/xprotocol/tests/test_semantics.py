"""The frame semantics of bolt and dubbo (their classes) on captured frames."""

from __future__ import annotations

from xprotocol_support import REQUESTS, STREAMS

from sota_xprotocol import BoltDispatcher as BOLT
from sota_xprotocol import DubboDispatcher as DUBBO
from sota_xprotocol import Failure, bolt, dubbo


def test_bolt_semantics() -> None:
    frame = BOLT.decoder(1 << 20).feed(STREAMS["c2s"])[0]
    assert BOLT.is_request(frame)
    assert not BOLT.is_oneway(frame)
    assert BOLT.timeout(frame) == 2.0
    assert BOLT.routing_attributes(frame)["service"] == "com.example.EchoService:1.0"
    rewritten = BOLT.with_request_id(frame, 77)
    assert BOLT.request_id(bolt.BoltDecoder().feed(rewritten)[0]) == 77
    [reply] = bolt.BoltDecoder().feed(BOLT.error_reply(frame, Failure.TIMEOUT))
    assert (reply.request_id, reply.status) == (frame.request_id, bolt.ResponseStatus.TIMEOUT)
    heartbeat = bolt.heartbeat_request(3)
    assert BOLT.is_heartbeat(heartbeat)
    assert bolt.BoltDecoder().feed(BOLT.heartbeat_reply(heartbeat))[0].is_heartbeat
    assert BOLT.id_bits == 32


def test_dubbo_semantics() -> None:
    frame = DUBBO.decoder(1 << 20).feed(REQUESTS[0])[0]
    assert DUBBO.is_request(frame)
    assert not DUBBO.is_oneway(frame)
    attributes = DUBBO.routing_attributes(frame)
    assert attributes["service"] == "com.example.EchoService"
    assert attributes["method"] == "echo"
    assert attributes["version"] == "1.0.0"
    assert attributes["group"] == "g1"
    assert attributes["traceId"] == "x-1"
    assert DUBBO.id_bits == 64
    rewritten = DUBBO.with_request_id(frame, 2**63)
    assert dubbo.DubboDecoder().feed(rewritten)[0].request_id == 2**63
    [reply] = dubbo.DubboDecoder().feed(DUBBO.error_reply(frame, Failure.NO_HEALTHY_UPSTREAM))
    assert reply.status == dubbo.DubboStatus.SERVICE_NOT_FOUND
    assert reply.body == b"\x17502|no healthy upstream"
    heartbeat = dubbo.heartbeat_request(9)
    assert DUBBO.is_heartbeat(heartbeat)
    assert DUBBO.heartbeat_reply(heartbeat).hex().startswith("dabb2214")
