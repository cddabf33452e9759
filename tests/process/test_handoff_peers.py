"""Connection hand-off under load from real peers: two hot restarts, and no client notices.

A proxy (``--workers 2 --restart-socket``) in front of three echo services
(ZMTP, bolt, dubbo; each its own process) is replaced twice by the same
command while 20 pyzmq DEALERs (libzmq), 20 bolt clients (blocking sockets)
and 20 dubbo-ssl-python connection pools keep calling it. Each client
counts its own connects (a socket monitor for libzmq, the pool's
``_new_connection`` for dubbo-ssl-python, one socket per bolt client):
every one stays on its first TCP connection, every request is answered with
its own payload, none fails.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from sota_dispatch.testing import ServeProcess, serve_process

zmq = pytest.importorskip("zmq")
pytest.importorskip("sota_zmtp")
pytest.importorskip("dubbo_ssl")
bolt = pytest.importorskip("sota_xprotocol.bolt")

pytestmark = pytest.mark.anyio

CLIENTS = 20
#: Seconds a single call may take before the client counts it failed.
CALL_TIMEOUT = 10.0


@attrs.define
class Client:
    """One client's record: answers, failures, its connects."""

    name: str
    answered: int = 0
    failures: list[str] = attrs.Factory(list)
    connects: int = 0


class Load:
    """Clients in threads until :meth:`stop`; :meth:`wait_each` waits for progress."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._progress = threading.Condition()

    def start(self, name: str, body: Callable[[Client, threading.Event, Callable[[], None]], None]) -> None:
        client = Client(name)
        self.clients.append(client)

        def answered() -> None:
            with self._progress:
                client.answered += 1
                self._progress.notify_all()

        def run() -> None:
            try:
                body(client, self.stopping, answered)
            except Exception as exc:  # noqa: BLE001 - recorded, asserted by the test
                client.failures.append(repr(exc))

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def wait_each(self, more: int, timeout: float = 60.0) -> None:
        """Until every client has ``more`` answers beyond its count now (or failed)."""
        targets = {id(c): c.answered + more for c in self.clients}
        deadline = time.monotonic() + timeout
        with self._progress:
            while not all(c.answered >= targets[id(c)] or c.failures for c in self.clients):
                left = deadline - time.monotonic()
                if left <= 0:
                    slow = [c.name for c in self.clients if c.answered < targets[id(c)]]
                    raise TimeoutError(f"no progress within {timeout}s: {slow[:5]}")
                self._progress.wait(left)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(CALL_TIMEOUT + 5)


def zmtp_client(port: int, number: int) -> Callable[[Client, threading.Event, Callable[[], None]], None]:
    def body(client: Client, stopping: threading.Event, answered: Callable[[], None]) -> None:
        context = zmq.Context.instance()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        monitor = dealer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        try:
            sequence = 0
            while not stopping.is_set():
                payload = f"z{number}-{sequence}".encode()
                dealer.send_multipart([b"", payload])
                if not dealer.poll(int(CALL_TIMEOUT * 1000)):
                    client.failures.append(f"no answer to {payload!r}")
                    return
                reply = dealer.recv_multipart()
                if reply[-1] != payload:
                    client.failures.append(f"{payload!r} answered with {reply!r}")
                    return
                answered()
                sequence += 1
                time.sleep(0.005)
        finally:
            from zmq.utils.monitor import recv_monitor_message

            while monitor.poll(100):
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_CONNECTED:
                    client.connects += 1
                else:
                    client.failures.append(f"libzmq saw the connection drop: {event}")
            dealer.disable_monitor()
            monitor.close()
            dealer.close()

    return body


def bolt_client(port: int, number: int) -> Callable[[Client, threading.Event, Callable[[], None]], None]:
    def body(client: Client, stopping: threading.Event, answered: Callable[[], None]) -> None:
        header = {"service": "com.example.Echo:1.0", "sofa_head_method_name": "echo"}
        with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as sock:
            client.connects += 1
            decoder = bolt.BoltDecoder()
            request_id = 0
            while not stopping.is_set():
                request_id += 1
                content = f"b{number}-{request_id}".encode()
                frame = bolt.BoltFrame(
                    bolt.FrameType.REQUEST,
                    bolt.CmdCode.RPC_REQUEST,
                    request_id,
                    codec=11,
                    timeout=5000,
                    class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
                    header_bytes=bolt.encode_header_map(header),
                    content=content,
                )
                sock.sendall(bolt.encode_frames([frame]))
                frames: list[Any] = []
                while not frames:
                    data = sock.recv(65536)
                    if not data:
                        client.failures.append(f"the connection closed before the answer to {request_id}")
                        return
                    frames = decoder.feed(data)
                reply = frames[0]
                if reply.request_id != request_id or reply.status != 0 or reply.content != content:
                    client.failures.append(f"request {request_id} answered with {reply!r}")
                    return
                answered()
                time.sleep(0.005)

    return body


def dubbo_client(port: int, number: int) -> Callable[[Client, threading.Event, Callable[[], None]], None]:
    from dubbo_ssl.connection.connections import SelectConnectionPool

    class CountingPool(SelectConnectionPool):  # type: ignore[misc]
        connects = 0

        def _new_connection(self, host: str, verify: Any) -> None:
            self.connects += 1
            super()._new_connection(host, verify)

    def body(client: Client, stopping: threading.Event, answered: Callable[[], None]) -> None:
        pool = CountingPool()
        host = f"127.0.0.1:{port}"
        sequence = 0
        try:
            while not stopping.is_set():
                argument = f"d{number}-{sequence}"
                request = {
                    "dubbo_version": "2.4.10",
                    "version": "1.0.0",
                    "method": "echo",
                    "path": "com.example.EchoService",
                    "arguments": (argument,),
                    "group": "g1",
                    "context": {},
                }
                result = pool.get(host, request, CALL_TIMEOUT)
                if result != argument:
                    client.failures.append(f"{argument!r} answered with {result!r}")
                    return
                answered()
                sequence += 1
                time.sleep(0.005)
        finally:
            client.connects = pool.connects
            connection = pool._connection_pool.pop(host, None)
            if connection is not None:  # see xprotocol_support.close_dubbo_connection
                sock = connection._Connection__sock
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    return body


def write_config(directory: Path, upstreams: dict[str, str]) -> str:
    document: dict[str, Any] = {
        "listeners": [
            {"name": name, "address": "127.0.0.1:0", "protocol": name, "routes": [{"cluster": name}]}
            for name in upstreams
        ],
        "clusters": [{"name": name, "endpoints": [address]} for name, address in upstreams.items()],
        "admin": {"address": "127.0.0.1:0"},
    }
    path = directory / "proxy.json"
    path.write_text(json.dumps(document))
    return str(path)


def metric_total(process: ServeProcess, name: str) -> float:
    """The sum of a metric's samples on a supervisor's admin ``/metrics``."""
    line = next(line for line in process.stderr_lines if "admin endpoint on" in line)
    admin = line.split("http://")[1].split("/")[0]
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def listener_ports(process: ServeProcess) -> dict[str, int]:
    """Each listener's port, from the "listening on" lines (logged before the admin's)."""
    process.wait_for_line("admin endpoint on")
    found = {}
    for line in process.stderr_lines:
        match = re.search(r"listening on \S+:(\d+) \(listener (\w+)\)", line)
        if match:
            found[match.group(2)] = int(match.group(1))
    return found


async def test_clients_stay_on_their_first_connection_across_two_hot_restarts(
    tmp_path: Path, backend_args: list[str]
) -> None:
    with ExitStack() as stack:
        upstreams = {}
        for protocol in ("zmtp", "bolt", "dubbo"):
            service = stack.enter_context(serve_process(["--protocol", protocol, "--listen", "127.0.0.1:0"]))
            upstreams[protocol] = service.address
        config = write_config(tmp_path, upstreams)
        restart = ["--restart-socket", str(tmp_path / "restart.sock"), "--restart-drain-time", "30"]
        command = ["--config", config, "--workers", "2", *restart, *backend_args]
        first = stack.enter_context(serve_process(command, timeout=60))
        ports = await anyio.to_thread.run_sync(listener_ports, first)
        assert set(ports) == {"zmtp", "bolt", "dubbo"}, first.stderr_lines

        load = Load()
        stack.callback(load.stop)
        for number in range(CLIENTS):
            load.start(f"zmtp-{number}", zmtp_client(ports["zmtp"], number))
            load.start(f"bolt-{number}", bolt_client(ports["bolt"], number))
            load.start(f"dubbo-{number}", dubbo_client(ports["dubbo"], number))
        await anyio.to_thread.run_sync(load.wait_each, 5)

        previous = first
        proxies = [first]
        stack.callback(lambda: print("".join(line for proxy in proxies for line in proxy.stderr_lines)))
        for epoch in (1, 2):
            successor = stack.enter_context(serve_process(command, timeout=60))
            proxies.append(successor)
            assert await anyio.to_thread.run_sync(listener_ports, successor) == ports
            # The old process moves its connections and exits well before its drain time.
            code = await anyio.to_thread.run_sync(previous.process.wait, 25)
            assert code == 0
            moved = await anyio.to_thread.run_sync(successor.wait_for_line, "taken over from epoch", 10)
            assert f"epoch {epoch - 1}" in moved
            await anyio.to_thread.run_sync(load.wait_each, 10)
            previous = successor
        load.stop()

        print(moved.strip())
        # The last process's metrics say so too: every connection was adopted.
        adopted = await anyio.to_thread.run_sync(metric_total, previous, "sota_downstream_connections_adopted_total")
        assert adopted == 3 * CLIENTS
        for client in load.clients:
            assert client.failures == [], client
            assert client.connects == 1, client
        assert sum(c.answered for c in load.clients) > 3 * CLIENTS * 25
        assert previous.stop() == 0
