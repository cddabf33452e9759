"""Stream filters in a running proxy, over real TCP on 127.0.0.1.

The listener speaks echo_lines (answers in request order, no ids) or
idproto (ids, answers in any order); each backend is a local echo service
of the same protocol. Built-in filters are found through sota-dispatch's
own entry points; the test filters are registered for the test.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute
from idproto import OK, REQUEST, Frame, IdProto

from sota_dispatch.config import parse_config
from sota_dispatch.filters import (
    FilterContext,
    FilterRequest,
    FilterResult,
    StreamFilter,
    register_filter,
    unregister_filter,
)
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import EchoLines, connect, free_port, running_proxy, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("echo_lines")]


def document(
    backend: str,
    filters: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
    protocol: str = "echo_lines",
) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "in",
                "address": "127.0.0.1:0",
                "protocol": protocol,
                "routes": routes or [{"cluster": "echo"}],
                "stream_filters": filters,
            }
        ],
        "clusters": [{"name": "echo", "endpoints": [backend]}],
    }


async def read_lines(stream: ByteStream, count: int) -> list[bytes]:
    data = b""
    with anyio.fail_after(10):
        while data.count(b"\n") < count:
            data += await stream.receive()
    return data.splitlines(keepends=True)


async def ask(proxy: Proxy, *lines: bytes) -> list[bytes]:
    """Send ``lines`` pipelined on one connection; the answers, in order."""
    async with await connect(proxy.addresses["in"]) as stream:
        await stream.send(b"".join(lines))
        return await read_lines(stream, len(lines))


async def test_rbac_denies_by_attribute_with_the_protocols_error_reply() -> None:
    rbac = {"type": "rbac", "config": {"attribute": "echo", "prefix": "secret"}}
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [rbac]))) as proxy:
            answers = await ask(proxy, b"echo:open\n", b"echo:secret/1\n", b"echo:also open\n")
            assert answers[0] == b"echo:open\n"
            assert answers[1].startswith(b"error:denied: ref ")
            assert answers[2] == b"echo:also open\n"  # the connection goes on
            [listener] = proxy.listeners
            assert listener.stats.local_replies == {"denied": 1}


async def test_rbac_by_client_address_deny_and_allow() -> None:
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        for config, served in [
            ({"source": "127.0.0.0/8"}, False),  # deny loopback
            ({"source": "10.0.0.0/8,::1"}, True),  # deny others
            ({"action": "allow", "source": "10.0.0.0/8"}, False),  # allow others only
            ({"action": "allow", "source": "127.0.0.1"}, True),
        ]:
            rbac = {"type": "rbac", "config": config}
            async with running_proxy(parse_config(document(backend.address, [rbac]))) as proxy:
                [answer] = await ask(proxy, b"echo:x\n")
                assert (answer == b"echo:x\n") is served, (config, answer)


async def test_a_route_per_filter_config_overrides_the_listeners() -> None:
    rbac = {"type": "rbac", "config": {"source": "127.0.0.0/8"}}  # the listener denies loopback
    routes: list[dict[str, Any]] = [
        {
            "cluster": "echo",
            "match": [{"attribute": "echo", "prefix": "vip"}],
            "per_filter_config": {"rbac": {"action": "allow", "source": "127.0.0.0/8"}},
        },
        {"cluster": "echo"},
    ]
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [rbac], routes))) as proxy:
            answers = await ask(proxy, b"echo:vip 1\n", b"echo:plain\n", b"echo:vip 2\n")
            assert answers[0] == b"echo:vip 1\n"
            assert answers[1].startswith(b"error:denied")
            assert answers[2] == b"echo:vip 2\n"


async def test_fault_inject_aborts_with_the_configured_failure() -> None:
    fault = {"type": "fault_inject", "config": {"abort_percent": 100, "abort_failure": "upstream_reset"}}
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [fault]))) as proxy:
            answers = await ask(proxy, b"echo:1\n", b"echo:2\n")
            assert all(a.startswith(b"error:upstream reset: fault injected; ref ") for a in answers), answers


async def test_fault_inject_aborts_its_share_of_requests() -> None:
    fault = {"type": "fault_inject", "config": {"abort_percent": 20}}
    count = 10_000
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [fault]))) as proxy:
            answers = await ask(proxy, *(b"echo:%d\n" % i for i in range(count)))
    aborted = sum(a.startswith(b"error:internal error: fault injected") for a in answers)
    served = sum(a == b"echo:%d\n" % i for i, a in enumerate(answers))
    assert aborted + served == count
    assert 0.18 * count <= aborted <= 0.22 * count, aborted  # 20% +- 2 points (5 standard deviations)


class Hold(StreamFilter):
    """Test filter: a request whose frame holds ``b"slow"`` waits for
    ``release``; ``began`` is set when it starts waiting, ``answered`` when
    any other request is answered."""

    began: ClassVar[anyio.Event]
    release: ClassVar[anyio.Event]
    answered: ClassVar[anyio.Event]

    def on_request(self, request: FilterRequest) -> FilterResult:
        if b"slow" in _payload(request.frame):
            return self._hold()
        return None

    async def _hold(self) -> None:
        Hold.began.set()
        await Hold.release.wait()

    def on_response(self, request: FilterRequest) -> None:
        if b"slow" not in _payload(request.frame):
            Hold.answered.set()


def _payload(frame: Any) -> bytes:
    return frame.body if isinstance(frame, Frame) else bytes(frame)


@pytest.fixture
def hold() -> Iterator[str]:
    Hold.began, Hold.release, Hold.answered = anyio.Event(), anyio.Event(), anyio.Event()
    register_filter("test_hold", Hold)
    yield "test_hold"
    unregister_filter("test_hold")


async def test_a_waiting_filter_holds_only_its_request_and_keeps_the_order(hold: str) -> None:
    # The slow request waits in its filter; the client's next request is
    # read, sent upstream and answered meanwhile, but its answer is written
    # only after the slow one's (echo_lines clients expect request order).
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        config = parse_config(document(backend.address, [{"type": hold}]))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            await stream.send(b"echo:slow\necho:fast\n")
            with anyio.fail_after(10):
                await Hold.began.wait()
                await Hold.answered.wait()  # the fast one went upstream and came back
            with anyio.move_on_after(0.2):
                early = await stream.receive()
                pytest.fail(f"an answer overtook the waiting request: {early!r}")
            Hold.release.set()
            assert await read_lines(stream, 2) == [b"echo:slow\n", b"echo:fast\n"]


async def test_requests_held_by_a_filter_get_a_timeout_reply_at_the_drain_timeout(hold: str) -> None:
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        document_ = document(backend.address, [{"type": hold}])
        document_["drain_timeout"] = "300ms"
        async with running_proxy(parse_config(document_)) as proxy, await connect(proxy.addresses["in"]) as stream:
            await stream.send(b"echo:first\necho:slow\necho:after\n")
            with anyio.fail_after(10):
                await Hold.began.wait()
                await Hold.answered.wait()
            proxy.shutdown()  # the slow one is never released
            answers = await read_lines(stream, 3)
    assert answers[0] == b"echo:first\n"
    assert answers[1].startswith(b"error:timeout: the proxy shut down first (drain timeout 0.3s)"), answers
    assert answers[2] == b"echo:after\n"  # answered upstream before, written after the held one's


async def test_a_client_that_resets_while_its_request_is_held_harms_nobody(hold: str) -> None:
    # Hostile: requests are held in their filter, the client resets (RST,
    # not FIN) without reading; the held tasks end with the connection and
    # the next client is served.
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [{"type": hold}]))) as proxy:
            stream = await connect(proxy.addresses["in"])
            await stream.send(b"echo:slow 1\necho:slow 2\necho:fast\n" * 50)
            with anyio.fail_after(10):
                await Hold.began.wait()
            raw = stream.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # an RST
            [listener] = proxy.listeners
            assert await ask(proxy, b"echo:next\n") == [b"echo:next\n"]
            Hold.release.set()  # the held tasks' connection is gone: nothing to write to
            assert await ask(proxy, b"echo:after\n") == [b"echo:after\n"]
            assert listener.stats.decode_errors == 0


@pytest.fixture
def idproto_backend() -> Iterator[None]:
    from sota_dispatch import register_protocol, unregister_protocol

    register_protocol("idproto", IdProto)
    yield
    unregister_protocol("idproto")


@pytest.mark.usefixtures("idproto_backend")
async def test_a_waiting_filter_does_not_hold_up_other_requests_of_a_multiplexed_client(hold: str) -> None:
    async with serving(IdProto) as backend:
        assert backend.address is not None
        config = parse_config(document(backend.address, [{"type": hold}], protocol="idproto"))
        async with running_proxy(config) as proxy, await IdProto.connect(proxy.addresses["in"]) as client:
            slow: list[Frame] = []

            async def slow_call() -> None:
                slow.append(await client.request(Frame.make(REQUEST, 0, b"slow"), timeout=10))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                with anyio.fail_after(10):
                    await Hold.began.wait()
                fast = await client.request(Frame.make(REQUEST, 0, b"fast"), timeout=10)
                assert (fast.status, fast.body) == (OK, b"FAST")  # answered while slow waits
                assert not slow
                Hold.release.set()
            assert [(f.status, f.body) for f in slow] == [(OK, b"SLOW")]


async def test_fault_inject_delays_by_the_configured_time() -> None:
    fault = {"type": "fault_inject", "config": {"delay_percent": 100, "delay": "100ms"}}
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        config = parse_config(document(backend.address, [fault]))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            took = []
            for i in range(15):
                started = anyio.current_time()
                await stream.send(b"echo:%d\n" % i)
                assert await read_lines(stream, 1) == [b"echo:%d\n" % i]
                took.append(anyio.current_time() - started)
    took.sort()
    assert 0.1 <= took[len(took) // 2] <= 0.11, took  # the p50 within 10% of the delay


class Recorder(StreamFilter):
    """Test filter: raises on 'boom', routes 'elsewhere' by attribute, records outcomes."""

    outcomes: ClassVar[list[tuple[str, str | None]]] = []

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        super().__init__(options, context)

    def on_request(self, request: FilterRequest) -> FilterResult:
        echo = request.attributes["echo"]
        if echo == "boom":
            raise RuntimeError("a bug in a filter")
        if echo == "elsewhere":
            request.set_attribute("echo", "to-nowhere")
        request.metadata["echo"] = echo
        return None

    def on_response(self, request: FilterRequest) -> None:
        failure = request.failure.name if request.failure is not None else None
        Recorder.outcomes.append((request.metadata.get("echo", "?"), failure))
        assert request.outcome


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.outcomes = []
    register_filter("test_recorder", Recorder)
    yield "test_recorder"
    unregister_filter("test_recorder")


async def test_a_filter_that_raises_fails_only_its_request(recorder: str, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, [{"type": recorder}]))) as proxy:
            with caplog.at_level(logging.ERROR):
                answers = await ask(proxy, b"echo:a\n", b"echo:boom\n", b"echo:b\n")
            assert answers[0] == b"echo:a\n"
            assert answers[1].startswith(b"error:internal error: ref ")
            assert answers[2] == b"echo:b\n"
            assert await ask(proxy, b"echo:another connection\n") == [b"echo:another connection\n"]
    assert "stream filter test_recorder raised on a request" in caplog.text
    assert ("a", None) in Recorder.outcomes
    assert ("b", None) in Recorder.outcomes


async def test_attributes_a_filter_sets_are_what_routes_match(recorder: str) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    routes: list[dict[str, Any]] = [
        {"cluster": "dead", "match": [{"attribute": "echo", "exact": "to-nowhere"}]},
        {"cluster": "echo"},
    ]
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        doc = document(backend.address, [{"type": recorder}], routes)
        doc["clusters"].append({"name": "dead", "endpoints": [nowhere], "connect_timeout": 1})
        async with running_proxy(parse_config(doc)) as proxy:
            answers = await ask(proxy, b"echo:here\n", b"echo:elsewhere\n")
            assert answers[0] == b"echo:here\n"
            assert answers[1].startswith(b"error:"), answers[1]  # routed to the dead cluster
            assert proxy.clusters["dead"].stats.outcomes, "the rewritten request never reached the dead cluster"
    assert ("here", None) in Recorder.outcomes
    assert [failure for echo, failure in Recorder.outcomes if echo == "elsewhere"] not in ([], [None])


async def test_a_listener_without_filters_has_no_chain() -> None:
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, []))) as proxy:
            assert [listener.filters for listener in proxy.listeners] == [None]
            assert await ask(proxy, b"echo:x\n") == [b"echo:x\n"]
