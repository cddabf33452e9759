"""The sans-I/O engine against bytes real libzmq 4.3.5 peers send (zmtp-notes)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sota_dispatch import LimitExceeded, ProtocolError
from sota_dispatch.testing import transient_bytes
from sota_zmtp import Limits, PeerError, SocketType, ZmtpEngine, encode_message
from sota_zmtp.wire import encode_command, encode_properties, parse_command, parse_properties

NULL_MECH = b"NULL" + bytes(16)


def v3_greeting(major: int = 3, minor: int = 1, mechanism: bytes = NULL_MECH, pad: int = 1) -> bytes:
    return b"\xff" + pad.to_bytes(8, "big") + b"\x7f" + bytes((major, minor)) + mechanism + b"\x00" + bytes(31)


def ready(socket_type: bytes = b"DEALER", identity: bytes = b"", name: bytes = b"Socket-Type") -> bytes:
    data = bytes((len(name),)) + name + len(socket_type).to_bytes(4, "big") + socket_type
    data += b"\x08Identity" + len(identity).to_bytes(4, "big") + identity
    return encode_command(b"READY", data)


# Exact bytes from zmtp-notes 1.3/1.4 (pyzmq 27.3.0, libzmq 4.3.5).
LIBZMQ_DEALER_READY = (
    bytes.fromhex("0431055245414459")
    + b"\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity"
    + bytes.fromhex("00000008")
    + b"client-1"
)
LIBZMQ_TO_V2_SERVER = (
    bytes.fromhex("ff00000000000000097f0305")
    + b"\x00\x08client-1"
    + b"\x01\x05hello\x01\x05world"
    + bytes.fromhex("02000000000000012c")
    + b"L" * 300
)
REQ_TO_V2_SERVER = (
    bytes.fromhex("ff00000000000000017f03030000")
    + b"\x01\x00"
    + b"\x01\x05hello\x01\x05world"
    + bytes.fromhex("02000000000000012c")
    + b"L" * 300
)


def router() -> ZmtpEngine:
    return ZmtpEngine(
        SocketType.ROUTER,
        limits=Limits(max_frame_size=1 << 20, max_message_size=4 << 20, max_parts=64),
        probe_downgrade=True,
    )


def test_sends_signature_and_major_at_once() -> None:
    engine = router()
    assert engine.data_to_send() == bytes.fromhex("ff00000000000000017f03")
    assert ZmtpEngine(SocketType.DEALER, identity=b"client-1").data_to_send() == bytes.fromhex("ff00000000000000097f03")


def test_libzmq_dealer_3x_handshake_then_message() -> None:
    engine = router()
    engine.data_to_send()
    assert ready(identity=b"client-1") == LIBZMQ_DEALER_READY
    messages = engine.feed(v3_greeting(pad=9) + LIBZMQ_DEALER_READY + encode_message([b"a", b"b" * 300]))
    assert engine.ready
    assert engine.version == (3, 1)
    assert engine.peer_socket_type is SocketType.DEALER
    assert engine.peer_identity == b"client-1"
    assert messages == [[b"a", b"b" * 300]]
    sent = engine.data_to_send()
    assert sent[:2] == b"\x01N"  # minor 1, mechanism NULL
    assert sent[53:] == ready(socket_type=b"ROUTER", identity=b"")  # libzmq sends an empty Identity


@pytest.mark.parametrize(
    ("capture", "frames"),
    [
        (LIBZMQ_TO_V2_SERVER, [b"hello", b"world", b"L" * 300]),
        (REQ_TO_V2_SERVER, [b"", b"hello", b"world", b"L" * 300]),
    ],
)
def test_libzmq_style_revision_3_then_socket_type_negotiates_2_0(capture: bytes, frames: list[bytes]) -> None:
    engine = router()
    engine.data_to_send()
    assert engine.feed(capture) == [frames]
    assert engine.version == (2, 0)
    assert engine.data_to_send() == b"\x06\x00\x00"  # ROUTER, empty identity frame


def test_raw_2_0_peer_with_revision_1_and_identity_frame() -> None:
    engine = router()
    engine.data_to_send()
    messages = engine.feed(bytes.fromhex("ff00000000000000067f0105") + b"\x00\x05alice" + encode_message([b"hi"]))
    assert engine.version == (2, 0)
    assert engine.peer_identity == b"alice"
    assert engine.peer_socket_type is SocketType.DEALER
    assert messages == [[b"hi"]]
    assert engine.encode([b"reply"]) == b"\x00\x05reply"


@pytest.mark.parametrize(
    ("major", "minor", "version"), [(3, 0, (3, 0)), (3, 1, (3, 1)), (3, 7, (3, 1)), (4, 0, (3, 1))]
)
def test_versions(major: int, minor: int, version: tuple[int, int]) -> None:
    engine = router()
    engine.feed(v3_greeting(major, minor) + ready())
    assert engine.version == version


def test_nothing_can_be_sent_before_the_peers_ready() -> None:
    engine = router()
    engine.feed(v3_greeting())
    with pytest.raises(RuntimeError, match="handshake"):
        engine.encode([b"too early"])
    engine.feed(ready())
    assert engine.encode([b"now"]) == b"\x00\x03now"


def test_property_names_are_case_insensitive() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready(name=b"socket-TYPE", identity=b"x"))
    assert engine.peer_socket_type is SocketType.DEALER
    assert engine.peer_identity == b"x"


def test_ping_is_answered_with_context_capped_at_16_bytes() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    engine.data_to_send()
    engine.feed(bytes.fromhex("04070450494e470014"))  # libzmq's PING, TTL 2 s, no context
    assert engine.data_to_send() == bytes.fromhex("0405") + b"\x04PONG"
    engine.feed(encode_command(b"PING", b"\x00\x14" + b"c" * 20))
    assert engine.data_to_send() == encode_command(b"PONG", b"c" * 16)
    engine.feed(bytes.fromhex("04050450494e47"))  # no TTL: libzmq over-reads; we answer empty
    assert engine.data_to_send() == encode_command(b"PONG")
    engine.feed(encode_command(b"PONG", b"ctx") + encode_command(b"HELLO", b"ignored"))
    assert engine.pongs == [b"ctx"]
    assert engine.pings_answered == 3


def test_our_ping() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    engine.data_to_send()
    engine.ping(20, b"ctx")
    assert engine.data_to_send() == encode_command(b"PING", b"\x00\x14ctx")


def test_peer_error_and_libzmq_malformed_error() -> None:
    engine = router()
    with pytest.raises(PeerError, match="400"):
        engine.feed(v3_greeting() + bytes.fromhex("04095e52524f5203343030"))
    engine = router()
    engine.feed(v3_greeting() + ready())
    with pytest.raises(PeerError, match="go away"):
        engine.feed(encode_command(b"ERROR", b"\x07go away"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a ZMTP 2.0\\+ greeting"),
        (bytes.fromhex("ff00000000000000017e03"), "not a ZMTP 2.0\\+ greeting"),
        (bytes.fromhex("ff00000000000000017f00"), "ZMTP 1.0"),
        (v3_greeting(mechanism=b"PLAIN" + bytes(15)), "mechanism b'PLAIN'"),
        (v3_greeting(mechanism=b"null" + bytes(16)), "mechanism b'null'"),
        (v3_greeting() + encode_message([b"early"]), "message frame before the handshake completed"),
        (v3_greeting() + encode_command(b"HELLO"), "unexpected command"),
        (v3_greeting() + ready(socket_type=b"PUB"), "cannot talk to a ROUTER"),
        (v3_greeting() + ready(socket_type=b"dealer"), "cannot talk to a ROUTER"),
        (v3_greeting() + bytes.fromhex("040d055245414459") + b"\x0bSocket-T", "truncated metadata"),
        (v3_greeting() + bytes.fromhex("0408055245414459") + b"\x00ab", "empty name"),
        (v3_greeting() + bytes.fromhex("040f055245414459") + b"\x01a\x00\x00\x00\x09abc", "past the end"),
        (v3_greeting() + ready() + bytes.fromhex("0800"), "reserved bits"),
        (v3_greeting() + ready() + bytes.fromhex("0500"), "command frame with the MORE flag"),
        (
            v3_greeting() + ready() + bytes.fromhex("0101") + b"a" + encode_command(b"PING", b"\x00\x00"),
            "inside a multipart",
        ),
        (v3_greeting() + ready() + bytes.fromhex("04" + "0a") + b"\x20abc" + bytes(6), "command name length"),
    ],
)
def test_bad_input_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        router().feed(data)


def test_incompatible_socket_type_gets_an_error_command() -> None:
    engine = router()
    engine.data_to_send()
    with pytest.raises(ProtocolError):
        engine.feed(v3_greeting() + ready(socket_type=b"PUB"))
    assert engine.data_to_send().endswith(encode_command(b"ERROR", b"\x13invalid socket type"))


@pytest.mark.parametrize("size", [2**64 - 1, 2**63 - 1, (1 << 20) + 1])
def test_oversized_long_frame_fails_on_its_header(size: int) -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    with pytest.raises(LimitExceeded):
        engine.feed(b"\x02" + size.to_bytes(8, "big"))  # nothing of the body needed


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    assert engine.feed(encode_message([b"x" * (1 << 20)])) == [[b"x" * (1 << 20)]]


def test_multipart_bomb_stops_at_max_parts() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    with pytest.raises(LimitExceeded, match="64 parts"):
        engine.feed(b"\x01\x00" * 1_000_000)


def test_message_size_limit_counts_all_parts() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    part = encode_message([b"y" * (1 << 20), b""])[:-2]  # one MORE part of 1 MiB
    with pytest.raises(LimitExceeded, match="message of"):
        engine.feed(part * 5)


def test_identity_longer_than_255_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="identity of 300 bytes"):
        router().feed(v3_greeting() + ready(identity=b"i" * 300))


def test_large_frame_in_many_chunks_is_joined_once() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    data = encode_message([b"z" * 700_000])
    messages: list[list[bytes]] = []
    for i in range(0, len(data), 1000):
        messages += engine.feed(data[i : i + 1000])
        assert engine.buffered <= len(data)
    assert messages == [[b"z" * 700_000]]


def test_a_read_after_an_unfinished_frame_is_parsed_in_place() -> None:
    """Not joined with the unfinished frame's bytes whole: that copied
    every byte received once more (1 MiB here) in an object as large as
    the read."""
    engine = router()
    engine.feed(v3_greeting() + ready())
    one = encode_message([b"m" * 1000])
    half = len(one) // 2
    assert transient_bytes(engine.feed, one[:half], one[half:] + one * 1_000 + one[:half]) < len(one) * 1_000 // 8
    assert engine.buffered == half


# -- properties ---------------------------------------------------------------

messages_strategy = st.lists(st.lists(st.binary(max_size=300), min_size=1, max_size=4), max_size=5)


def session(messages: list[list[bytes]], *, v2: bool) -> bytes:
    head = bytes.fromhex("ff00000000000000017f0105") + b"\x00\x00" if v2 else v3_greeting() + ready()
    return head + b"".join(encode_message(m) for m in messages)


@settings(max_examples=150)
@given(messages=messages_strategy, v2=st.booleans(), cut=st.integers(min_value=0))
def test_any_split_gives_the_same_messages(messages: list[list[bytes]], v2: bool, cut: int) -> None:
    data = session(messages, v2=v2)
    cut %= len(data) + 1
    engine = router()
    got = engine.feed(data[:cut]) + engine.feed(data[cut:])
    assert got == messages


#: A message (its parts), or a PING to answer (its context), in traffic.
traffic_strategy = st.lists(
    st.lists(st.binary(max_size=300), min_size=1, max_size=4) | st.binary(max_size=16).map(lambda c: [c, None]),
    max_size=8,
)


def traffic_bytes(items: list[list[bytes | None]]) -> bytes:
    return b"".join(
        encode_command(b"PING", b"\x00\x14" + (item[0] or b""))
        if item[-1] is None
        else encode_message([part for part in item if part is not None])
        for item in items
    )


@settings(max_examples=200)
@given(items=traffic_strategy, cuts=st.lists(st.integers(0, 5000), max_size=8), bad=st.booleans())
def test_any_reads_give_the_same_messages_pongs_and_error(
    items: list[list[bytes | None]], cuts: list[int], bad: bool
) -> None:
    """Frames (a short or long header, a command) cut anywhere, over many
    reads: the messages, the PONGs and a bad frame's error come as they do
    from one read, the error after the messages before it."""
    data = traffic_bytes(items) + (b"\xf8\x00" if bad else b"")

    def run(bounds: list[int]) -> tuple[list[list[bytes]], bytes, bool]:
        engine = router()
        engine.feed(v3_greeting() + ready())
        engine.data_to_send()
        got: list[list[bytes]] = []
        pos = 0
        try:
            for cut in [*sorted({c % (len(data) + 1) for c in bounds}), len(data)]:
                got += engine.feed(data[pos:cut])
                pos = cut
            engine.check()
        except ProtocolError:
            return got, engine.data_to_send(), True
        return got, engine.data_to_send(), False

    whole = run([])
    assert whole[0] == [item for item in items if item[-1] is not None]
    assert whole[2] == bad
    assert run(cuts) == whole


@settings(max_examples=30, deadline=None)
@given(messages=messages_strategy)
def test_byte_by_byte_at_every_offset(messages: list[list[bytes]]) -> None:
    data = session(messages, v2=False)
    engine = router()
    got: list[list[bytes]] = []
    for i in range(len(data)):
        got += engine.feed(data[i : i + 1])
    assert got == messages


@settings(max_examples=300)
@given(data=st.binary(max_size=200), prefix=st.sampled_from([b"", v3_greeting(), v3_greeting() + ready()]))
def test_garbage_raises_only_protocol_errors(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        router().feed(prefix + data)


@settings(max_examples=300)
@given(data=st.data())
def test_mutated_handshakes_raise_only_protocol_errors(data: st.DataObject) -> None:
    good = bytearray(v3_greeting() + ready(identity=b"me") + encode_message([b"hello", b"x" * 260]))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(good) - 1))
        good[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    engine = router()
    try:
        engine.feed(bytes(good[:cut]))
        engine.feed(bytes(good[cut:]))
    except ProtocolError:
        pass


@given(st.lists(st.tuples(st.text(alphabet="abcXYZ-", min_size=1, max_size=10), st.binary(max_size=40)), max_size=5))
def test_properties_round_trip(props: list[tuple[str, bytes]]) -> None:
    decoded = parse_properties(encode_properties(props))
    assert decoded == {name.lower(): value for name, value in props}


@given(st.binary(min_size=1, max_size=255), st.binary(max_size=400))
def test_commands_round_trip(name: bytes, data: bytes) -> None:
    frame = encode_command(name, data)
    header = 9 if frame[0] & 0x02 else 2
    assert parse_command(frame[header:]) == (name, data)


def test_two_engines_complete_the_handshake_without_deadlock() -> None:
    server = router()
    client = ZmtpEngine(SocketType.DEALER, identity=b"me")
    for _ in range(10):  # bounded ping-pong of whatever each side has to say
        server.feed(client.data_to_send())
        client.feed(server.data_to_send())
    assert server.ready
    assert client.ready
    assert server.peer_identity == b"me"
    assert client.feed(server.encode([b"hi"])) == [[b"hi"]]


def test_a_connecting_engine_answers_major_3_at_once() -> None:
    client = ZmtpEngine(SocketType.DEALER)
    client.data_to_send()
    client.feed(bytes.fromhex("ff00000000000000017f03"))
    assert client.data_to_send()[:5] == b"\x01NULL"


# -- PLAIN (RFC 24) ------------------------------------------------------------


def plain_pair(password: bytes = b"secret") -> tuple[ZmtpEngine, ZmtpEngine]:
    server = ZmtpEngine(
        SocketType.ROUTER, plain_authenticator=lambda u, p: (u, p) == (b"admin", b"secret"), probe_downgrade=True
    )
    client = ZmtpEngine(SocketType.DEALER, identity=b"c", plain_credentials=(b"admin", password))
    return server, client


def exchange_until_quiet(a: ZmtpEngine, b: ZmtpEngine) -> None:
    for _ in range(10):
        b.feed(a.data_to_send())
        a.feed(b.data_to_send())


def test_plain_handshake_both_ways() -> None:
    server, client = plain_pair()
    exchange_until_quiet(client, server)
    assert server.ready
    assert client.ready
    assert server.user_id == b"admin"
    assert server.peer_identity == b"c"
    assert server.feed(client.encode([b"x"])) == [[b"x"]]


def test_plain_wrong_password_gets_error() -> None:
    server, client = plain_pair(password=b"wrong")
    with pytest.raises(ProtocolError, match="authentication failed for user b'admin'"):
        exchange_until_quiet(client, server)
    with pytest.raises(PeerError, match="invalid username or password"):
        client.feed(server.data_to_send())


def test_plain_client_against_a_null_server_is_a_mechanism_mismatch() -> None:
    _, client = plain_pair()
    with pytest.raises(ProtocolError, match=r"mechanism b'(NULL|PLAIN)'"):
        exchange_until_quiet(client, router())


@pytest.mark.parametrize("hello", [b"", b"\x05adm", b"\x05admin", b"\x05admin\x07secret", b"\x00\x00x"])
def test_malformed_plain_hello(hello: bytes) -> None:
    server, _ = plain_pair()
    greeting = v3_greeting(mechanism=b"PLAIN" + bytes(15))
    with pytest.raises(ProtocolError, match="malformed PLAIN HELLO"):
        server.feed(greeting + encode_command(b"HELLO", hello))


def test_libzmq_plain_server_malformed_error_is_a_peer_error() -> None:
    _, client = plain_pair()
    greeting = b"\xff" + bytes(7) + b"\x01\x7f\x03\x01" + b"PLAIN" + bytes(15) + b"\x01" + bytes(31)
    with pytest.raises(PeerError, match="400"):
        client.feed(greeting + bytes.fromhex("04095e52524f5203343030"))


@pytest.mark.parametrize(
    "frames",
    [
        [b"m" * 101],  # one part over the limit
        [b"m" * 10, b"m" * 95],  # the last part pushes the total over
    ],
)
def test_message_size_limit_is_checked_on_each_header(frames: list[bytes]) -> None:
    engine = ZmtpEngine(SocketType.ROUTER, limits=Limits(max_message_size=100))
    engine.feed(v3_greeting() + ready())
    data = encode_message(frames)
    with pytest.raises(LimitExceeded, match=r"message of 10[15]"):
        engine.feed(data[: len(data) - len(frames[-1])])  # the last header, none of its body


def test_handshake_frames_are_small_before_authentication() -> None:
    server, _ = plain_pair()
    greeting = v3_greeting(mechanism=b"PLAIN" + bytes(15))
    with pytest.raises(LimitExceeded, match="handshake frame"):
        server.feed(greeting + b"\x06" + (15 << 20).to_bytes(8, "big"))


def test_refusal_by_the_owner_is_an_error_instead_of_our_ready() -> None:
    def refuse(engine: ZmtpEngine) -> None:
        raise ProtocolError(f"identity {engine.peer_identity!r} is already connected")

    engine = ZmtpEngine(SocketType.ROUTER, on_peer_ready=refuse, probe_downgrade=True)
    engine.data_to_send()
    with pytest.raises(ProtocolError, match="already connected"):
        engine.feed(v3_greeting() + ready(identity=b"dup"))
    sent = engine.data_to_send()
    assert b"READY" not in sent
    assert sent.endswith(engine.error("identity b'dup' is already connected"))


def test_messages_before_garbage_are_handed_out_first() -> None:
    engine = router()
    engine.feed(v3_greeting() + ready())
    assert engine.feed(encode_message([b"good"]) + b"\x08\x00") == [[b"good"]]
    with pytest.raises(ProtocolError, match="reserved bits"):
        engine.check()
    with pytest.raises(ProtocolError, match="reserved bits"):
        engine.feed(b"")
