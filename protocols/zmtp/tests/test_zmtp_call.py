"""``python -m sota_dispatch.call --protocol zmtp`` against the bundled echo,
libzmq's ROUTER and REP sockets (pyzmq), and through the proxy.

The tool is a DEALER that sends ``[id, "", *words]`` as a REQ socket behind
a DEALER would: a ROUTER echoes it all, a REP answers behind the envelope,
and the proxy's error replies keep it; each answer is matched by its id.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager

import anyio
import anyio.to_thread
import pytest
import zmq
from anyio.abc import SocketAttribute, SocketStream

from sota_dispatch.client import run_call
from sota_dispatch.testing import free_port, serve_process, serving
from sota_zmtp import ZmtpEchoDispatcher

pytestmark = pytest.mark.anyio


async def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_call(["--protocol", "zmtp", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@contextmanager
def libzmq_echo(kind: int) -> Iterator[tuple[str, list[list[bytes]]]]:
    """A pyzmq ROUTER or REP echo in a thread of its own: its address, and
    every message it received (a ROUTER's with the peer's identity first).
    Stopped through an inproc socket: no timeouts, no polling."""
    ctx = zmq.Context()
    server = ctx.socket(kind)
    server.setsockopt(zmq.LINGER, 0)
    server.bind("tcp://127.0.0.1:*")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    stop_in, stop_out = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    stop_in.bind("inproc://stop")
    stop_out.connect("inproc://stop")
    received: list[list[bytes]] = []

    def run() -> None:
        poller = zmq.Poller()
        poller.register(server, zmq.POLLIN)
        poller.register(stop_in, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if stop_in in ready:
                return
            message = server.recv_multipart()
            received.append(message)
            server.send_multipart(message)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield endpoint.removeprefix("tcp://"), received
    finally:
        stop_out.send(b"stop")
        thread.join(10)
        for sock in (server, stop_in, stop_out):
            sock.close(0)
        ctx.term()


async def test_the_bundled_echo_answers_one_multipart_message() -> None:
    async with serving(ZmtpEchoDispatcher) as server:
        assert server.address is not None
        code, out, err = await call(server.address, "hello", "world")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == '["hello", "world"]'
    assert out.splitlines()[1].startswith("answered in ")


async def test_a_libzmq_router_sees_one_frame_per_word_and_our_identity() -> None:
    with libzmq_echo(zmq.ROUTER) as (address, received):
        code, out, _ = await call(address, "hello", "world", "-o", "identity=tool", "--json")
    assert code == 0
    assert json.loads(out)["answer"] == {"frames": ["hello", "world"]}
    [(identity, request_id, delimiter, *frames)] = received
    assert (identity, delimiter, frames) == (b"tool", b"", [b"hello", b"world"])
    assert len(request_id) == 4


async def test_a_libzmq_rep_answers_behind_the_envelope() -> None:
    with libzmq_echo(zmq.REP) as (address, received):
        code, out, _ = await call(address, "ping", "-n", "20")
    assert code == 0
    assert out.startswith("20 requests, 0 errors in ")
    assert received == [[b"ping"]] * 20  # REP hands over the body alone


async def test_many_in_flight_on_one_dealer() -> None:
    async with serving(ZmtpEchoDispatcher) as server:
        assert server.address is not None
        code, out, _ = await call(server.address, "x", "y", "-n", "1000", "--concurrency", "100", "--json")
    summary = json.loads(out)
    assert code == 0
    assert (summary["count"], summary["errors"]) == (1000, 0)


async def test_headers_are_a_usage_error() -> None:
    code, out, err = await call(f"127.0.0.1:{free_port()}", "x", "-H", "a=1")
    assert (code, out) == (2, "")
    assert err == "error: zmtp: a ZMTP message has no headers (a)\n"


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts and reads, never greets."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_a_server_that_never_greets_times_out() -> None:
    async with silent_server() as address:
        code, _, err = await call(address, "x", "--timeout", "0.3")
    assert code == 1
    assert err == "error: timeout: no zmtp handshake within 0.3s\n"


async def test_through_the_proxy_to_a_libzmq_router(backend_args: list[str]) -> None:
    with libzmq_echo(zmq.ROUTER) as (address, _), ExitStack() as stack:
        common = ["--protocol", "zmtp", "--listen", "127.0.0.1:0", *backend_args]
        proxy = await anyio.to_thread.run_sync(stack.enter_context, serve_process([*common, "--upstream", address]))
        refused = f"127.0.0.1:{free_port()}"
        down = await anyio.to_thread.run_sync(stack.enter_context, serve_process([*common, "--upstream", refused]))
        code, out, _ = await call(proxy.address, "via", "proxy")
        down_code, down_out, _ = await call(down.address, "x", "--json")
    assert code == 0
    assert out.splitlines()[0] == '["via", "proxy"]'
    assert down_code == 1  # the proxy's error reply, behind our envelope
    answer = json.loads(down_out)
    assert answer["ok"] is False
    assert answer["answer"]["frames"][0].startswith("error:no healthy upstream")
