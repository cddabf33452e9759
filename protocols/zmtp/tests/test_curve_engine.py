"""The CURVE engine without sockets: properties (round trip, every split,
garbage and tampering raise only ProtocolError), limits on sealed frames,
the writer hand-off, and the handshake's refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import LimitExceeded, ProtocolError
from sota_zmtp.curve import CurveClientKeys, CurveServerKeys, curve_keypair
from sota_zmtp.engine import Limits, ZmtpEngine
from sota_zmtp.wire import SocketType, encode_message

SERVER_PUBLIC, SERVER_SECRET = curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = curve_keypair()

messages_strategy = st.lists(st.lists(st.binary(max_size=300), min_size=1, max_size=4), min_size=1, max_size=5)


def pair(limits: Limits | None = None, allow: bool = True) -> tuple[ZmtpEngine, ZmtpEngine]:
    """A CURVE server and client engine, handshaken."""
    server = ZmtpEngine(
        SocketType.ROUTER, limits=limits, curve_server=CurveServerKeys(SERVER_SECRET, lambda key: allow)
    )
    client = ZmtpEngine(SocketType.DEALER, identity=b"c", curve_client=CurveClientKeys(SERVER_PUBLIC, CLIENT_SECRET))
    for _ in range(4):
        server.feed(client.data_to_send())
        client.feed(server.data_to_send())
    return server, client


def test_the_handshake_names_the_client_and_seals_everything_after_it() -> None:
    server, client = pair()
    assert (server.ready, client.ready) == (True, True)
    assert server.user_id == CLIENT_PUBLIC.encode()
    assert server.peer_identity == b"c"
    sealed = client.encode([b"secret", b"words"])
    assert b"secret" not in sealed
    assert server.feed(sealed) == [[b"secret", b"words"]]


@settings(max_examples=50, deadline=None)
@given(messages=messages_strategy, cut=st.integers(min_value=0))
def test_sealed_messages_round_trip_however_split(messages: list[list[bytes]], cut: int) -> None:
    server, client = pair()
    data = b"".join(client.encode(m) for m in messages)
    cut %= len(data) + 1
    assert server.feed(data[:cut]) + server.feed(data[cut:]) == messages


@settings(max_examples=20, deadline=None)
@given(messages=messages_strategy)
def test_sealed_messages_byte_by_byte(messages: list[list[bytes]]) -> None:
    server, client = pair()
    data = b"".join(client.encode(m) for m in messages)
    got: list[list[bytes]] = []
    for i in range(len(data)):
        got += server.feed(data[i : i + 1])
    assert got == messages


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_tampering_with_any_byte_raises_only_protocol_errors(data: st.DataObject) -> None:
    server, client = pair()
    sealed = bytearray(client.encode([b"hello", b"world"]))
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        server.feed(bytes(sealed))
        server.check()
    except ProtocolError:
        return
    # A size byte made larger leaves the frame incomplete: nothing delivered, nothing raised.
    assert server.buffered


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), stage=st.integers(min_value=0, max_value=3))
def test_garbage_during_the_handshake_raises_only_protocol_errors(data: bytes, stage: int) -> None:
    server = ZmtpEngine(SocketType.ROUTER, curve_server=CurveServerKeys(SERVER_SECRET))
    client = ZmtpEngine(SocketType.DEALER, curve_client=CurveClientKeys(SERVER_PUBLIC))
    for _ in range(stage):  # some steps of a real handshake, then garbage
        server.feed(client.data_to_send())
        client.feed(server.data_to_send())
    try:
        server.feed(data)
        server.check()
    except ProtocolError:
        pass


def test_plaintext_after_the_handshake_closes_the_connection() -> None:
    server, _ = pair()
    with pytest.raises(ProtocolError, match="frame flags 0x01 on a CURVE connection"):
        server.feed(encode_message([b"in", b"clear"]))


def test_sealed_frames_obey_the_limits_before_they_are_buffered() -> None:
    server, client = pair(Limits(max_frame_size=1000, max_message_size=1500, max_parts=3))
    assert server.feed(client.encode([b"x" * 1000])) == [[b"x" * 1000]]
    big = client.encode([b"x" * 1001])
    with pytest.raises(LimitExceeded):
        server.feed(big[:9])  # the header alone
    server, client = pair(Limits(max_frame_size=1000, max_message_size=1500, max_parts=3))
    with pytest.raises(LimitExceeded):
        server.feed(client.encode([b"x" * 800, b"y" * 800]))
    server, client = pair(Limits(max_frame_size=1000, max_message_size=1500, max_parts=3))
    with pytest.raises(LimitExceeded):
        server.feed(client.encode([b"a"] * 4))


def test_a_writer_takes_over_the_sealing_once() -> None:
    server, client = pair()
    seal = client.output_sealing()
    assert seal is not None
    assert client.output_sealing is not None
    plain = client.encode([b"one", b"two"])  # plaintext now: the writer seals
    assert plain == encode_message([b"one", b"two"])
    client.ping(5, b"ctx")
    sealed = seal(plain + client.data_to_send())
    assert server.feed(sealed) == [[b"one", b"two"]]
    assert server.pings_answered == 1
    with pytest.raises(ValueError, match="whole ZMTP frames"):
        seal(plain[:-1])


def test_refusals_during_the_handshake() -> None:
    with pytest.raises(ProtocolError, match=r"CURVE client key .* is not allowed"):
        pair(allow=False)
    stranger = ZmtpEngine(SocketType.DEALER, curve_client=CurveClientKeys(CLIENT_PUBLIC))  # wrong server key
    server = ZmtpEngine(SocketType.ROUTER, curve_server=CurveServerKeys(SERVER_SECRET))
    server.feed(stranger.data_to_send())
    stranger.feed(server.data_to_send())
    with pytest.raises(ProtocolError, match="HELLO box"):
        server.feed(stranger.data_to_send())
    with pytest.raises(ValueError, match="one mechanism"):
        ZmtpEngine(SocketType.DEALER, plain_credentials=(b"a", b"b"), curve_client=CurveClientKeys(SERVER_PUBLIC))
