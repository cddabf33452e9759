"""TLS through the proxy: terminated on a listener, originated to a cluster.

Real TCP on 127.0.0.1; the upstreams are our own TLS listener and a plain
Python ``ssl`` server in a thread (another implementation); certificates
come from trustme (``tls_files``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute

from sota_dispatch import ConfigError, ServerTLS
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import EchoLines, connect, running_proxy, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("echo_lines")]


def document(backend: str, listener_tls: Any = None, cluster_tls: Any = None) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "name": "in",
        "address": "127.0.0.1:0",
        "protocol": "echo_lines",
        "routes": [{"cluster": "echo", "retry": {"attempts": 1}}],
    }
    cluster: dict[str, Any] = {"name": "echo", "endpoints": [backend]}
    if listener_tls is not None:
        listener["tls"] = listener_tls
    if cluster_tls is not None:
        cluster["tls"] = cluster_tls
    return {"listeners": [listener], "clusters": [cluster]}


async def ask(stream: ByteStream, *lines: bytes) -> list[bytes]:
    await stream.send(b"".join(lines))
    data = b""
    with anyio.fail_after(10):
        while data.count(b"\n") < len(lines):
            data += await stream.receive()
    return data.splitlines(keepends=True)


async def tls_connect(address: str, context: ssl.SSLContext) -> ByteStream:
    host, port = address.rsplit(":", 1)
    with anyio.fail_after(10):
        return await anyio.connect_tcp(host, int(port), tls=True, ssl_context=context, tls_hostname="localhost")


@contextmanager
def python_ssl_echo(cert_chain: str, private_key: str) -> Iterator[str]:
    """A line echo server on stdlib ssl sockets, a thread per connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_chain, private_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(10)
                    while not stop.is_set():
                        data = tls.recv(65536)
                        if not data:
                            return
                        tls.sendall(data)  # echo_lines answers each line with itself
            except (OSError, ssl.SSLError):
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


async def test_tls_in_and_tls_out_to_our_own_tls_listener(tls_files: Any) -> None:
    listener_tls = {"certificates": [{"cert_chain": tls_files.cert_chain, "private_key": tls_files.private_key}]}
    cluster_tls = {"ca_file": tls_files.ca_file, "server_name": "localhost"}
    backend_tls = ServerTLS([(tls_files.cert_chain, tls_files.private_key, ())])
    async with serving(EchoLines, tls=backend_tls) as backend:
        assert backend.address is not None
        config = parse_config(document(backend.address, listener_tls, cluster_tls))
        async with running_proxy(config) as proxy:
            async with await tls_connect(proxy.addresses["in"], tls_files.client_context()) as stream:
                lines = [b"echo:%d\n" % i for i in range(500)]
                assert await ask(stream, *lines) == lines
            cluster = proxy.clusters["echo"]
            assert cluster.tls is not None
            assert backend_tls.handshake_failures == 0


async def test_tls_out_to_a_python_ssl_server_checks_its_name_by_the_endpoint_host(tls_files: Any) -> None:
    with python_ssl_echo(tls_files.cert_chain, tls_files.private_key) as backend:
        # No server_name: the certificate must name the endpoint's host (127.0.0.1, an IP SAN).
        config = parse_config(document(backend, cluster_tls={"ca_file": tls_files.ca_file}))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            assert await ask(stream, b"echo:a\n", b"echo:b\n") == [b"echo:a\n", b"echo:b\n"]


@pytest.mark.parametrize(
    "mistake",
    [
        {"server_name": "elsewhere.example"},  # the certificate does not name it
        {"ca": "stranger"},  # signed by a CA we do not trust
        {"ca": "system"},  # no ca_file: the system's CAs, which do not know the test CA
        {"allowed": "nobody.example"},  # the certificate names none of the allowed names
    ],
)
async def test_an_upstream_whose_certificate_does_not_verify_gets_the_client_an_error_reply(
    tls_files: Any, mistake: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    cluster_tls: dict[str, Any] = {"ca_file": tls_files.ca_file}
    if "server_name" in mistake:
        cluster_tls["server_name"] = mistake["server_name"]
    elif "allowed" in mistake:
        cluster_tls["allowed_names"] = [mistake["allowed"]]
    elif mistake["ca"] == "stranger":
        stranger = tls_files.directory / "stranger-ca.pem"
        stranger.write_bytes(tls_files.stranger.cert_pem.bytes())
        cluster_tls["ca_file"] = str(stranger)
    else:
        del cluster_tls["ca_file"]
    with python_ssl_echo(tls_files.cert_chain, tls_files.private_key) as backend:
        config = parse_config(document(backend, cluster_tls=cluster_tls))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            [answer] = await ask(stream, b"echo:x\n")
    assert answer.startswith(b"error:no healthy upstream: ref "), answer
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_allowed_names_replace_the_host_name_check(tls_files: Any) -> None:
    named = tls_files.issue("named", "echo.internal")  # does not name the endpoint's host, 127.0.0.1
    with python_ssl_echo(*named) as backend:
        cluster_tls = {"ca_file": tls_files.ca_file, "allowed_names": ["echo.internal"]}
        config = parse_config(document(backend, cluster_tls=cluster_tls))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            assert await ask(stream, b"echo:x\n") == [b"echo:x\n"]


async def test_verify_false_accepts_any_certificate(tls_files: Any) -> None:
    with python_ssl_echo(*tls_files.issue("anyone", "anyone.example", ca=tls_files.stranger)) as backend:
        config = parse_config(document(backend, cluster_tls={"verify": False}))
        async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
            assert await ask(stream, b"echo:x\n") == [b"echo:x\n"]


async def test_an_mtls_upstream_gets_the_cluster_client_certificate(tls_files: Any) -> None:
    backend_tls = ServerTLS(
        [(tls_files.cert_chain, tls_files.private_key, ())],
        ca_file=tls_files.ca_file,
        require_client_certificate=True,
        allowed_names=["client.example"],
    )
    async with serving(EchoLines, tls=backend_tls) as backend:
        assert backend.address is not None
        with_certificate = {
            "ca_file": tls_files.ca_file,
            "cert_chain": tls_files.client_chain,
            "private_key": tls_files.client_key,
        }
        for cluster_tls, served in [({"ca_file": tls_files.ca_file}, False), (with_certificate, True)]:
            config = parse_config(document(backend.address, cluster_tls=cluster_tls))
            async with running_proxy(config) as proxy, await connect(proxy.addresses["in"]) as stream:
                [answer] = await ask(stream, b"echo:x\n")
                assert (answer == b"echo:x\n") is served, answer


def test_tls_config_problems_name_their_paths(tls_files: Any, tmp_path: Any) -> None:
    doc = document(
        "127.0.0.1:1",
        {"certificates": [{"cert_chain": str(tmp_path / "nope.pem"), "private_key": tls_files.private_key}]},
        {"cert_chain": tls_files.client_chain, "private_key": tls_files.client_key, "ca_file": tls_files.private_key},
    )
    with pytest.raises(ConfigError) as caught:
        Proxy(parse_config(doc))
    assert [e.path for e in caught.value.errors] == [
        "listeners[0].tls.certificates[0].cert_chain",
        "clusters[0].tls.ca_file",
    ]
    # What the model checks without reading a file, all at once.
    doc = document(
        "127.0.0.1:1",
        {"certificates": [], "require_client_certificate": True, "min_version": 1.1, "handshake": 1},
        {"cert_chain": "a.pem", "verify": "yes"},
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    problems = [(e.path, e.problem) for e in caught.value.errors]
    assert [path for path, _ in problems] == [
        "listeners[0].tls.certificates",
        "listeners[0].tls.min_version",
        "listeners[0].tls.handshake",
        "clusters[0].tls.verify",
    ]
    assert problems[1][1] == "expected a TLS version of at least 1.2 (1.2 or 1.3), got 1.1"
    assert problems[2][1].startswith("unknown key")
    assert problems[3][1] == 'expected true or false, got "yes"'


async def test_reloading_the_proxy_certificates(tls_files: Any) -> None:
    listener_tls = {"certificates": [{"cert_chain": tls_files.cert_chain, "private_key": tls_files.private_key}]}
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        async with running_proxy(parse_config(document(backend.address, listener_tls))) as proxy:
            address = proxy.addresses["in"]
            old = await tls_connect(address, tls_files.client_context())
            async with old:
                before = old.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
                tls_files.issue("server", "localhost", "127.0.0.1")
                assert proxy.reload_certificates() == []
                async with await tls_connect(address, tls_files.client_context()) as new:
                    after = new.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
                    assert await ask(new, b"echo:new\n") == [b"echo:new\n"]
                assert before != after
                assert await ask(old, b"echo:old\n") == [b"echo:old\n"]
                (tls_files.directory / "server.key").write_text("broken")
                [problem] = proxy.reload_certificates()
                assert problem.path == "listeners[0].tls.certificates[0].cert_chain"
                async with await tls_connect(address, tls_files.client_context()) as kept:
                    assert await ask(kept, b"echo:kept\n") == [b"echo:kept\n"]


async def test_rbac_by_the_client_certificates_name_on_a_mutual_tls_listener(tls_files: Any) -> None:
    listener_tls = {
        "certificates": [{"cert_chain": tls_files.cert_chain, "private_key": tls_files.private_key}],
        "ca_file": tls_files.ca_file,
        "require_client_certificate": True,
    }
    outsider = tls_files.issue("outsider", "outsider.example")  # the same CA: the handshake succeeds
    async with serving(EchoLines) as backend:
        assert backend.address is not None
        doc = document(backend.address, listener_tls)
        doc["listeners"][0]["stream_filters"] = [
            {"type": "rbac", "config": {"principal": "client.example, orders.example", "action": "allow"}}
        ]
        async with running_proxy(parse_config(doc)) as proxy:
            for certificate, expected in [
                ((tls_files.client_chain, tls_files.client_key), b"echo:x\n"),
                (outsider, b"error:denied: ref "),
            ]:
                context = tls_files.client_context(certificate=certificate)
                async with await tls_connect(proxy.addresses["in"], context) as stream:
                    [answer] = await ask(stream, b"echo:x\n")
                    assert answer.startswith(expected), (certificate, answer)
