"""What the xprotocol tests share (not a test module): captured vectors,
real peers (anthunder, dubbo-ssl-python) and their quirks, request builders,
services.

The peer libraries are blocking, so each runs in a worker thread while the
server runs in the test's event loop. Their quirks (xprotocol-notes section
3) are avoided: anthunder's sync Client needs a span context;
dubbo-ssl-python cannot send maps or None, and must not be asked for dubbo
version 2.0.x.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import itertools
import json
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from sota_dispatch import DispatcherFactory, testing
from sota_dispatch.testing import build_spelling
from sota_xprotocol import DubboEchoDispatcher, JavaDate, bolt, dubbo
from sota_xprotocol.service import echo_dubbo


@asynccontextmanager
async def serving(factory: DispatcherFactory) -> AsyncIterator[tuple[str, int]]:
    """:func:`sota_dispatch.testing.serving`, as ``(host, port)`` for the peer libraries."""
    async with testing.serving(factory) as server:
        assert server.address is not None
        host, _, port = server.address.rpartition(":")
        yield host, int(port)


_SERVICE_NUMBERS = itertools.count(1)


def anthunder_service() -> str:
    """A service name no call in this process used: anthunder's SERVICE_MAP
    refuses to map a name again (once a port named it, a later test that got
    the same port from the OS failed with a KeyError)."""
    return f"com.example.EchoService{next(_SERVICE_NUMBERS)}:1.0"


def anthunder_calls(host: str, port: int, bodies: list[bytes], service: str | None = None) -> list[bytes]:
    from anthunder import SERVICE_MAP, Client
    from mytracer import SpanContext

    service = service or anthunder_service()
    SERVICE_MAP[service] = (host, port)
    client = Client("sota-tests")
    return [client.invoke_sync(service, "echo", body, spanctx=SpanContext(), timeout_ms=5000) for body in bodies]


#: Seconds a dubbo-ssl-python call may wait for its answer. The library's
#: default is forever: were its reader thread ever lost, a test would hang
#: (a worker thread cannot be cancelled) instead of failing.
DUBBO_CALL_TIMEOUT = 30


def close_dubbo_connection(address: str, pool: Any = None) -> None:
    """Close dubbo-ssl-python's pooled connection to ``address`` (``host:port``)
    in a way its reader thread survives.

    The library (0.9.6) keeps one connection per address in a pool (by
    default its global ``connection_pool``) and never closes them. One
    thread per pool reads them all, forever: it select()s on the pool's
    connections and reads the ready ones. Closing a socket that thread is
    about to select() on kills it: select() gets -1 from the closed
    socket's fileno() (a ValueError) or a descriptor closed under it (EBADF,
    on which the loop quietly ends). Every later call in the process then
    waits for an answer nobody reads (a run of the suite hung so).

    So: take the connection out of the pool (in a new dict: the library's
    heartbeat thread may be iterating the old one), shut the socket down,
    which wakes a select() holding it with the end of stream the library's
    own close path handles, and close its descriptor only once nothing
    refers to the connection any more, the reader thread included.
    """
    if pool is None:
        from dubbo_ssl.connection.connections import connection_pool

        pool = connection_pool
    with pool._conn_lock:
        connection = pool._connection_pool.get(address)
        if connection is None:
            return
        pool._connection_pool = {key: value for key, value in pool._connection_pool.items() if key != address}
    sock: socket.socket = connection._Connection__sock
    weakref.finalize(connection, sock.close)
    with contextlib.suppress(OSError):  # the peer may have gone already
        sock.shutdown(socket.SHUT_RDWR)


def dubbo_calls(
    host: str, port: int, arguments: list[Any], concurrency: int = 1, verify: str | None = None
) -> list[Any]:
    """Calls through dubbo-ssl-python; ``verify``: over TLS, trusting this CA file.

    Over TLS, call one at a time: the library's reader select()s on its
    sockets and reads one frame's bytes, so answers that arrive in one TLS
    record leave the later ones decrypted in the SSL object's buffer, where
    select() does not see them; the call then waits for its read timeout
    (seen under load in CI: 4 concurrent calls, one timed out after 30 s).
    """
    from dubbo_ssl.client import DubboClient

    address = f"{host}:{port}"
    client = DubboClient("com.example.EchoService", group="g1", version="1.0.0", host=address, verify=verify)

    def call(argument: Any) -> Any:
        return client.call("echo", (argument,), timeout=DUBBO_CALL_TIMEOUT)

    try:
        if concurrency == 1:
            return [call(argument) for argument in arguments]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(call, arguments))
    finally:
        close_dubbo_connection(address)  # so the server need not wait for it


# Caucho 4.0.38 on OpenJDK 17, each value read back and re-written by Java
# itself (vectors/Hessian2Edges.java writes this file).
EDGES = dict(
    line.rstrip("\n").split("\t")
    for line in (Path(__file__).parent / "vectors" / "hessian2_java_edges.tsv").read_text().splitlines()
    if line.strip()
)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


FIRST_DATETIME_MS, LAST_DATETIME_MS = -62135596800000, 253402300799999  # 0001-01-01, 9999-12-31T23:59:59.999


def decoded_date(millis: int) -> dt.datetime | JavaDate:
    """What a date decodes to: a UTC datetime in years 1-9999, else a JavaDate."""
    if FIRST_DATETIME_MS <= millis <= LAST_DATETIME_MS:
        return EPOCH + dt.timedelta(milliseconds=millis)
    return JavaDate(millis)


java_millis = (
    st.integers(-(2**63), 2**63 - 1)
    | st.integers(-(2**31), 2**31 - 1).map(lambda minutes: minutes * 60000)  # the 'K' form
    | st.integers(FIRST_DATETIME_MS - 10**6, FIRST_DATETIME_MS + 10**6)  # datetime's ends
    | st.integers(LAST_DATETIME_MS - 10**6, LAST_DATETIME_MS + 10**6)
    | st.sampled_from([-(2**63), 2**63 - 1, -(2**31) * 60000, (2**31 - 1) * 60000, 2**31 * 60000])
)


def java_string(text: str) -> str:
    """``text`` as a Java String comes back: adjacent surrogates joined into
    one code point, lone ones kept."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


#: Text with lone surrogates (which st.text() never generates), as decoded.
surrogate_text = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=40).map(java_string)

#: Any value hessian2 round-trips (maps keyed by strings).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**31), max_value=2**31 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | surrogate_text
    | st.binary(max_size=40)
    | java_millis.map(decoded_date)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


answered_order: list[int] = []


class Reversing(DubboEchoDispatcher):
    """Holds the answers until all 50 calls are in, then answers newest first."""

    held: list[tuple[int, bytes]] | None = None

    def on_request(self, frame: dubbo.DubboFrame) -> bytes | None:
        held = self.held = self.held or []
        reply = echo_dubbo(frame)
        if reply:
            held.append((frame.request_id, reply))
        if len(held) >= 50:
            for request_id, held_reply in reversed(held):
                answered_order.append(request_id)
                self.writer.write(held_reply)
            held.clear()
        return None


SERVICE = "com.example.EchoService:1.0"


class UpperService:
    """An anthunder service: answers with the body upper-cased."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def echo(self, body: bytes) -> bytes:
        return body.upper()


@contextmanager
def anthunder_server() -> Iterator[tuple[str, int, Any]]:
    """anthunder 0.8.1's AioListener in a thread of its own, serving
    :class:`UpperService` as SERVICE: ``(host, port, listener)``."""
    import socket

    from anthunder import AioListener

    with socket.socket() as probe:  # pick a free port for it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = AioListener(("127.0.0.1", port), "sota-tests")
    listener.handler.register_interface(SERVICE, UpperService)
    thread = threading.Thread(target=listener.run_forever, daemon=True)
    thread.start()
    # run_forever binds in its thread, and anthunder says nothing when it
    # has: a proxy that connects first is refused (seen once under CI load).
    # Connect until it accepts (it offers no event to wait on), within 10 s.
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    try:
        yield "127.0.0.1", port, listener
    finally:
        listener._loop.call_soon_threadsafe(listener._loop.stop)
        thread.join(10)
        listener.shutdown()


def request(content: bytes, request_id: int = 7) -> bolt.BoltFrame:
    header = {"service": SERVICE, "sofa_head_target_service": SERVICE, "sofa_head_method_name": "echo"}
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        request_id,
        codec=11,
        timeout=5000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        header_bytes=bolt.encode_header_map(header),
        content=content,
    )


def dubbo_request(argument: Any) -> dubbo.DubboFrame:
    from sota_xprotocol import hessian2

    body = b"".join(
        hessian2.encode(v)
        for v in ("2.7.23", "com.example.EchoService", "1.0.0", "echo", "Ljava/lang/Object;", argument, {"group": "g1"})
    )
    return dubbo.DubboFrame(dubbo.FLAG_REQUEST | dubbo.FLAG_TWOWAY | dubbo.HESSIAN2, 0, 0, body)


# -- captured vectors -------------------------------------------------------------

VECTORS = Path(__file__).parent / "vectors"


def captured(name: str) -> list[dict[str, Any]]:
    """The rows of the capture ``vectors/NAME`` (a JSON object a line)."""
    return [json.loads(line) for line in (VECTORS / name).read_text().splitlines()]


#: anthunder 0.8.1's bolt bytes, captured on loopback: each direction's joined.
STREAMS = {
    d: b"".join(bytes.fromhex(r["hex"]) for r in captured("bolt_anthunder.jsonl") if r["dir"] == d)
    for d in ("c2s", "s2c")
}
#: dubbo-ssl-python 0.9.6 and a provider, captured on loopback.
DUBBO_ROWS = captured("dubbo_ssl_python.jsonl")
#: The requests of dubbo-ssl-python 0.9.6.
REQUESTS = [bytes.fromhex(r["hex"]) for r in DUBBO_ROWS if r["kind"] == "client->server"]


#: The two spellings of a codec's fixed headers (``_COMPILED`` in bolt and dubbo).
SPELLINGS = ["struct", "arithmetic"]


@contextmanager
def header_spelling(module: Any, spelling: str) -> Iterator[None]:
    """Run with ``spelling`` of ``module``'s fixed headers: ``struct`` (the
    interpreter's) or ``arithmetic`` (the compiled build's). The pure-Python
    build can run either; a compiled module runs its own only (skipped)."""
    with build_spelling(module, spelling == "arithmetic"):
        yield
