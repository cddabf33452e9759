"""TLS on a Server, over real TCP on 127.0.0.1 with Python's ssl as the client.

Certificates come from trustme (the ``tls_files`` fixture). The hostile
peers: no certificate, a certificate from another CA or not on the
allow-list, plaintext on a TLS port, a handshake that never comes, garbage
instead of a ClientHello, an old TLS version; every one costs only its own
connection, while a good client is served throughout.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute

from sota_dispatch import ServerTLS
from sota_dispatch.io.tls import peer_names
from sota_dispatch.testing import EchoLines, connect, serving

pytestmark = pytest.mark.anyio


async def tls_connect(address: str, context: ssl.SSLContext, hostname: str = "localhost") -> ByteStream:
    host, port = address.rsplit(":", 1)
    with anyio.fail_after(10):
        return await anyio.connect_tcp(host, int(port), tls=True, ssl_context=context, tls_hostname=hostname)


async def ask(stream: ByteStream, line: bytes) -> bytes:
    await stream.send(line)
    data = b""
    with anyio.fail_after(10):
        while not data.endswith(b"\n"):
            data += await stream.receive()
    return data


async def refused(address: str, context: ssl.SSLContext) -> bool:
    """Whether the server refuses this client: at the handshake, or by
    closing the connection right after it (TLS 1.3 tells a client of its
    refused certificate only on its first read)."""
    try:
        stream = await tls_connect(address, context)
        async with stream:
            await ask(stream, b"echo:hello\n")
    except (ssl.SSLError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
        return True
    return False


async def closed_by_server(stream: ByteStream) -> bool:
    """Reads (a TLS alert, say) until the server closes; True when it did."""
    async with stream:
        try:
            with anyio.fail_after(10):
                while await stream.receive():
                    pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return True
    return False


def server_tls(files: Any, **kwargs: Any) -> ServerTLS:
    return ServerTLS([(files.cert_chain, files.private_key, ())], **kwargs)


async def test_a_python_ssl_client_is_served_over_tls(tls_files: Any) -> None:
    async with serving(EchoLines, tls=server_tls(tls_files)) as server:
        assert server.address is not None
        async with await tls_connect(server.address, tls_files.client_context()) as stream:
            assert stream.extra(TLSAttribute.tls_version) in ("TLSv1.2", "TLSv1.3")
            lines = b"".join(b"echo:%d\n" % i for i in range(2000))
            await stream.send(lines)
            data = b""
            with anyio.fail_after(10):
                while data.count(b"\n") < 2000:
                    data += await stream.receive()
            assert data == lines


async def test_mutual_tls_refuses_clients_without_a_good_certificate(tls_files: Any) -> None:
    tls = server_tls(
        tls_files, ca_file=tls_files.ca_file, require_client_certificate=True, allowed_names=["client.example"]
    )
    outsider = tls_files.issue("outsider", "outsider.example")
    forged = tls_files.issue("forged", "client.example", ca=tls_files.stranger)
    async with serving(EchoLines, tls=tls) as server:
        assert server.address is not None
        assert await refused(server.address, tls_files.client_context())  # no certificate
        assert await refused(server.address, tls_files.client_context(certificate=outsider))  # not allowed
        assert await refused(server.address, tls_files.client_context(certificate=forged))  # another CA
        good = tls_files.client_context(certificate=(tls_files.client_chain, tls_files.client_key))
        async with await tls_connect(server.address, good) as stream:
            assert await ask(stream, b"echo:in\n") == b"echo:in\n"
        assert tls.handshake_failures == 3


async def test_hostile_peers_cost_only_their_own_connection(tls_files: Any) -> None:
    tls = server_tls(tls_files, handshake_timeout=0.5)
    async with serving(EchoLines, tls=tls) as server:
        assert server.address is not None
        good = await tls_connect(server.address, tls_files.client_context())
        async with good:
            assert await ask(good, b"echo:before\n") == b"echo:before\n"
            # Plaintext on the TLS port, garbage after a record header, a
            # reset at once, and a peer that never says anything.
            plain = await connect(server.address)
            await plain.send(b"echo:plain\n")
            garbage = await connect(server.address)
            await garbage.send(b"\x16\x03\x01\x00\x05hello" + bytes(range(256)))
            reset = await connect(server.address)
            raw = reset.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await reset.aclose()
            silent = await connect(server.address)
            for stream in (plain, garbage, silent):
                assert await closed_by_server(stream)
            assert await ask(good, b"echo:after\n") == b"echo:after\n"
        assert tls.handshake_failures == 4


async def test_a_client_below_the_minimum_version_is_refused(tls_files: Any) -> None:
    async with serving(EchoLines, tls=server_tls(tls_files, min_version="1.3")) as server:
        assert server.address is not None
        old = tls_files.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert await refused(server.address, old)
        async with await tls_connect(server.address, tls_files.client_context()) as stream:
            assert stream.extra(TLSAttribute.tls_version) == "TLSv1.3"


async def test_plaintext_and_tls_on_one_port_when_allowed(tls_files: Any) -> None:
    async with serving(EchoLines, tls=server_tls(tls_files, allow_plaintext=True)) as server:
        assert server.address is not None
        async with await connect(server.address) as plain:
            assert await ask(plain, b"echo:plain\n") == b"echo:plain\n"
        async with await tls_connect(server.address, tls_files.client_context()) as secure:
            assert await ask(secure, b"echo:secure\n") == b"echo:secure\n"


async def test_sni_chooses_the_certificate(tls_files: Any) -> None:
    other = tls_files.issue("other", "other.example")
    tls = ServerTLS([(tls_files.cert_chain, tls_files.private_key, ()), (*other, ("other.example", "*.other.test"))])
    async with serving(EchoLines, tls=tls) as server:
        assert server.address is not None
        for hostname, names in [
            ("localhost", ("localhost", "127.0.0.1")),
            ("other.example", ("other.example",)),
            ("a.other.test", None),  # the wildcard picks "other", whose certificate does not name it
        ]:
            context = tls_files.client_context()
            if names is None:
                context.check_hostname = False
            async with await tls_connect(server.address, context, hostname) as stream:
                seen = stream.extra(TLSAttribute.ssl_object).getpeercert(binary_form=False)
                if names is not None:
                    assert peer_names(seen)[: len(names)] == names, hostname
                else:
                    assert "other.example" in peer_names(seen)
                assert await ask(stream, b"echo:x\n") == b"echo:x\n"


async def test_reloaded_certificates_serve_new_connections_while_old_ones_go_on(tls_files: Any) -> None:
    tls = server_tls(tls_files)
    async with serving(EchoLines, tls=tls) as server:
        assert server.address is not None
        first = await tls_connect(server.address, tls_files.client_context())
        async with first:
            before = first.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
            tls_files.issue("server", "localhost", "127.0.0.1")  # new files in place of the old ones
            tls.reload()
            assert tls.generation == 2
            async with await tls_connect(server.address, tls_files.client_context()) as second:
                after = second.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
                assert await ask(second, b"echo:new\n") == b"echo:new\n"
            assert after != before
            assert await ask(first, b"echo:old\n") == b"echo:old\n"


def test_file_problems_name_their_field(tls_files: Any, tmp_path: Any) -> None:
    from sota_dispatch import ConfigError

    cases = [
        (([(str(tmp_path / "absent.pem"), tls_files.private_key, ())],), {}, "certificates[0].cert_chain"),
        (([(tls_files.cert_chain, str(tmp_path / "absent.key"), ())],), {}, "certificates[0].private_key"),
        (([(tls_files.cert_chain, tls_files.client_key, ())],), {}, "certificates[0].cert_chain"),  # mismatched key
        (([(tls_files.cert_chain, tls_files.private_key, ())],), {"ca_file": tls_files.private_key}, "ca_file"),
        (([(tls_files.cert_chain, tls_files.private_key, ())],), {"require_client_certificate": True}, "ca_file"),
    ]
    for args, kwargs, path in cases:
        with pytest.raises(ConfigError) as caught:
            ServerTLS(*args, **kwargs)
        assert caught.value.path == path, caught.value
    tls = server_tls(tls_files)
    (tmp_path / "server.key").write_text("not a key")
    with pytest.raises(ConfigError):
        tls.reload()
    assert tls.generation == 1  # the old certificates stay


async def test_a_tls_client_that_never_reads_is_not_read_from_and_harms_nobody(tls_files: Any) -> None:
    async with serving(EchoLines, tls=server_tls(tls_files)) as server:
        assert server.address is not None
        greedy = await tls_connect(server.address, tls_files.client_context())
        async with greedy:
            chunk = b"echo:" + b"x" * 1000 + b"\n"
            sent = 0
            # It sends and never reads: once the server's answers fill its
            # writer and the socket, the server stops reading, and our sends
            # stall: the backpressure holds through TLS (memory stays bounded).
            with anyio.move_on_after(3) as stalled:
                while sent < 200 * 1024 * 1024:
                    await greedy.send(chunk * 64)
                    sent += len(chunk) * 64
            assert stalled.cancelled_caught, f"{sent} bytes accepted without a read"
            assert sent < 64 * 1024 * 1024, sent
            async with await tls_connect(server.address, tls_files.client_context()) as other:
                assert await ask(other, b"echo:served\n") == b"echo:served\n"
