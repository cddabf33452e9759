"""The tutorial protocol with request ids (examples/idproto.py, docs/tutorial-ids.rst).

One class and its codec, and the core gives it every role: local serving, a
multiplexed client, proxying with the ids rewritten, health probes. Each is
shown here over real TCP on 127.0.0.1, with the example's own codec reading
the replies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream
from idproto import (
    HEARTBEAT,
    HEARTBEAT_REPLY,
    OK,
    REQUEST,
    RESPONSE,
    STATUS,
    Frame,
    IdCodec,
    IdProto,
)

from sota_dispatch import Failure, Match, ProtocolError, sniff, testing
from sota_dispatch.cluster.checks import probe
from sota_dispatch.config import HealthCheckConfig, ProxyConfig, parse_config
from sota_dispatch.testing import free_port, running_proxy, serving, without_ref

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"  # on sys.path (see conftest)

pytestmark = pytest.mark.anyio

#: The status a backend going down answers with (any status but OK would do).
UNAVAILABLE = STATUS[Failure.NO_HEALTHY_UPSTREAM]


async def connect(address: str | None) -> ByteStream:
    assert address is not None
    return await testing.connect(address)


async def read_frames(stream: ByteStream, count: int) -> list[Frame]:
    """The next ``count`` frames from ``stream``, read with the example's codec."""
    codec = IdCodec(1 << 20)
    frames: list[Frame] = []
    with anyio.fail_after(10):
        while len(frames) < count:
            frames += codec.feed(await stream.receive())
    return frames


async def call(address: str | None, frame: Frame) -> Frame:
    """One request on a connection of its own; its reply."""
    async with await connect(address) as stream:
        await stream.send(frame.raw)
        (reply,) = await read_frames(stream, 1)
        return reply


def answer(frame: Frame) -> tuple[int, int, int, bytes]:
    return frame.kind, frame.request_id, frame.status, frame.body


class Swapping(IdProto):
    """Holds each request until the next one arrives, then answers both, the
    later first: two requests are in flight at once, answered out of order.
    ``seen`` collects the ids that arrive."""

    seen: list[int]

    held: Frame | None = None

    def on_request(self, frame: Frame) -> bytes:
        Swapping.seen.append(frame.request_id)
        if self.held is None:
            self.held = frame
            return b""
        held, self.held = self.held, None
        return super().on_request(frame) + super().on_request(held)


class Draining(IdProto):
    """Up, but going down: heartbeats and requests get an error status."""

    @classmethod
    def heartbeat_reply(cls, frame: Frame) -> bytes:
        return Frame.make(HEARTBEAT_REPLY, frame.request_id, b"draining", UNAVAILABLE).raw

    def on_request(self, frame: Frame) -> bytes:
        return Frame.make(RESPONSE, frame.request_id, b"draining", UNAVAILABLE).raw


def proxy_config(endpoints: list[str | None], **cluster: Any) -> ProxyConfig:
    return parse_config(
        {
            "listeners": [
                {"name": "ids", "address": "127.0.0.1:0", "protocol": "idproto", "routes": [{"cluster": "backend"}]}
            ],
            "clusters": [{"name": "backend", "endpoints": endpoints, **cluster}],
        }
    )


# -- the codec, sans I/O --------------------------------------------------------------


def test_the_module_is_one_class_and_a_codec_under_100_lines() -> None:
    code = [line for line in (EXAMPLES / "idproto.py").read_text().splitlines() if line.strip()]
    assert len(code) < 100


def test_the_codec_finds_the_same_frames_however_the_bytes_are_split() -> None:
    frames = [Frame.make(REQUEST, 1, b"a" * 300), Frame.make(HEARTBEAT, 2), Frame.make(RESPONSE, 3, b"x", 4)]
    data = b"".join(frame.raw for frame in frames)
    for cut in range(len(data) + 1):
        codec = IdCodec(1024)
        assert codec.feed(data[:cut]) + codec.feed(data[cut:]) == frames, cut
        assert codec.buffered == 0
    codec = IdCodec(1024)
    assert [f for i in range(len(data)) for f in codec.feed(data[i : i + 1])] == frames


def test_bad_bytes_raise_once_the_frames_before_them_are_out() -> None:
    good = Frame.make(REQUEST, 1, b"ok")
    codec = IdCodec(1024)
    assert codec.feed(good.raw + b"\x00" * 11) == [good]
    with pytest.raises(ProtocolError, match="bad idproto header"):
        codec.check()
    with pytest.raises(ProtocolError):  # too large: refused on its header, before its body
        IdCodec(10).feed(Frame.make(REQUEST, 1, b"x" * 11).raw[:11])


def test_auto_detection_knows_idproto_by_its_first_byte(idproto: str) -> None:
    verdicts = sniff(Frame.make(REQUEST, 1, b"hello").raw)
    assert [name for name, verdict in verdicts.items() if verdict is Match.YES] == [idproto]
    assert IdProto.sniff(b"") is Match.NEED_MORE


# -- local serving --------------------------------------------------------------------


async def test_local_serving_answers_pipelined_requests_under_their_own_ids() -> None:
    async with serving(IdProto) as server, await connect(server.address) as stream:
        requests = [Frame.make(REQUEST, 7, b"hello"), Frame.make(HEARTBEAT, 8), Frame.make(REQUEST, 9, b"ids")]
        await stream.send(b"".join(request.raw for request in requests))  # pipelined, in one send
        replies = await read_frames(stream, 3)
    assert [answer(reply) for reply in replies] == [
        (RESPONSE, 7, OK, b"HELLO"),
        (HEARTBEAT_REPLY, 8, OK, b""),  # answered by the core, from heartbeat_reply()
        (RESPONSE, 9, OK, b"IDS"),
    ]


async def test_a_bad_frame_closes_the_connection_after_the_answers_before_it() -> None:
    async with serving(IdProto) as server, await connect(server.address) as stream:
        await stream.send(Frame.make(REQUEST, 1, b"first").raw + b"GET / HTTP/1.1\r\n")
        (reply,) = await read_frames(stream, 1)
        assert answer(reply) == (RESPONSE, 1, OK, b"FIRST")
        with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()


# -- the client role ------------------------------------------------------------------


async def test_a_client_sends_100_concurrent_requests_on_one_connection() -> None:
    Swapping.seen = []
    answers: dict[int, Frame] = {}
    async with serving(Swapping) as server:
        assert server.address is not None
        async with await IdProto.connect(server.address) as connection:

            async def one(i: int) -> None:
                answers[i] = await connection.request(Frame.make(REQUEST, 0, b"call %d" % i))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for i in range(100):
                        tg.start_soon(one, i)
        assert server.connections_total == 1
    # Each caller got its own answer, though they came back two by two swapped.
    assert {i: (frame.status, frame.body) for i, frame in answers.items()} == {
        i: (OK, b"CALL %d" % i) for i in range(100)
    }
    assert len({frame.request_id for frame in answers.values()}) == 100  # a fresh id each
    assert sorted(Swapping.seen) == sorted(frame.request_id for frame in answers.values())


# -- the proxy ------------------------------------------------------------------------


async def test_the_proxy_gives_two_clients_with_the_same_id_their_own_answers(idproto: str) -> None:
    Swapping.seen = []
    answers: dict[bytes, Frame] = {}
    async with serving(Swapping) as backend, running_proxy(proxy_config([backend.address])) as proxy:

        async def client(body: bytes) -> None:
            answers[body] = await call(proxy.addresses["ids"], Frame.make(REQUEST, 1, body))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client, b"alice")
                tg.start_soon(client, b"bob")
    # Both clients used id 1; both requests were in flight upstream at once, on
    # one multiplexed connection, under two ids the proxy chose.
    assert {body: answer(frame) for body, frame in answers.items()} == {
        b"alice": (RESPONSE, 1, OK, b"ALICE"),
        b"bob": (RESPONSE, 1, OK, b"BOB"),
    }
    assert len(Swapping.seen) == 2
    assert len(set(Swapping.seen)) == 2


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_the_proxys_failures_are_idproto_error_replies(idproto: str) -> None:
    async with running_proxy(proxy_config([closed_port()])) as proxy:  # nobody listens there
        reply = await call(proxy.addresses["ids"], Frame.make(REQUEST, 42, b"anyone?"))
    # The client's own id, the status of the failure, its text and a reference to quote.
    assert (reply.kind, reply.request_id) == (RESPONSE, 42)
    assert IdProto.status(reply) == STATUS[Failure.NO_HEALTHY_UPSTREAM]
    assert without_ref(reply.body) == b"no healthy upstream"


# -- health probes --------------------------------------------------------------------


async def test_the_health_probe_tells_a_healthy_endpoint_from_an_error_status() -> None:
    check = HealthCheckConfig(timeout=10.0)
    async with serving(IdProto) as healthy, serving(Draining) as draining:
        assert healthy.address is not None
        assert draining.address is not None
        assert await probe(healthy.address, check, IdProto)
        assert not await probe(draining.address, check, IdProto)
        assert not await probe(closed_port(), check, IdProto)


async def test_a_cluster_stops_sending_to_an_endpoint_its_probes_find_down(idproto: str) -> None:
    probed = 0
    judged = anyio.Event()

    class CountedDraining(Draining):
        @classmethod
        def heartbeat_reply(cls, frame: Frame) -> bytes:
            nonlocal probed
            probed += 1
            if probed == 3:
                # Checks go in rounds, each over every endpoint: the third probe
                # here means two rounds are over, and their verdicts are in.
                judged.set()
            return super().heartbeat_reply(frame)

    check = {"interval": "20ms", "timeout": "10s", "unhealthy_threshold": 2}
    async with serving(IdProto) as healthy, serving(CountedDraining) as draining:
        config = proxy_config([healthy.address, draining.address], health_check=check)
        async with running_proxy(config) as proxy:
            with anyio.fail_after(10):
                await judged.wait()
            cluster = proxy.clusters["backend"]
            assert [endpoint.address for endpoint in cluster.unhealthy] == [draining.address]
            replies = [await call(proxy.addresses["ids"], Frame.make(REQUEST, i, b"up?")) for i in range(4)]
    assert [answer(reply) for reply in replies] == [(RESPONSE, i, OK, b"UP?") for i in range(4)]
