"""simple_line over TLS in real processes: ``openssl s_client`` as the client.

The service is ``python -m sota_dispatch.serve --protocol simple_line
--tls-cert ... --tls-key ...`` on each backend; certificates come from
trustme (``tls_files``). Also: mutual TLS with an allow-list, rotation on
SIGHUP, and a proxy process that terminates TLS and originates it to a TLS
service, reloading its certificates through the admin endpoint.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.tls import TLSAttribute

from sota_dispatch.testing import ServeProcess, serve_process

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

QUERY = b"a=1&b=2\r\n"
ANSWER = b'receive:{"a":["1"],"b":["2"]}\r\n'


def s_client_exchange(address: str, files: Any, *extra: str) -> bytes:
    """One query through ``openssl s_client``; its answer line (b"" if the
    server refused the client: the process ends without one)."""
    command = ["openssl", "s_client", "-connect", address, "-servername", "localhost"]
    command += ["-CAfile", files.ca_file, "-verify_return_error", "-quiet", *extra]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killer = threading.Timer(20, process.kill)  # a hung client cannot hang the test
    killer.start()
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(QUERY)
        process.stdin.flush()
        return process.stdout.readline()
    finally:
        process.kill()
        process.communicate()
        killer.cancel()


def service_args(files: Any, backend_args: list[str], *extra: str) -> list[str]:
    return [
        "--protocol",
        "simple_line",
        "--listen",
        "127.0.0.1:0",
        *backend_args,
        "--tls-cert",
        files.cert_chain,
        "--tls-key",
        files.private_key,
        *extra,
    ]


def clean_stop(process: ServeProcess) -> None:
    assert process.stop() == 0, "".join(process.stderr_lines)
    assert "Traceback" not in "".join(process.stderr_lines)


async def test_openssl_s_client_talks_to_a_tls_simple_line_service(tls_files: Any, backend_args: list[str]) -> None:
    with serve_process(service_args(tls_files, backend_args)) as service:
        answer = await anyio.to_thread.run_sync(s_client_exchange, service.address, tls_files)
        assert answer == ANSWER
        # A client that does not trust the certificate's CA gives up by itself.
        stranger = Path(tls_files.directory) / "stranger.pem"
        stranger.write_bytes(tls_files.stranger.cert_pem.bytes())
        strange = await anyio.to_thread.run_sync(
            lambda: s_client_exchange(service.address, tls_files, "-CAfile", str(stranger))
        )
        assert strange == b""
        clean_stop(service)


async def test_mutual_tls_with_an_allow_list_in_a_process(tls_files: Any, backend_args: list[str]) -> None:
    mtls = ("--tls-client-ca", tls_files.ca_file, "--tls-allow-name", "client.example")
    outsider = tls_files.issue("outsider", "outsider.example")
    with serve_process(service_args(tls_files, backend_args, *mtls)) as service:
        for extra, served in [
            ((), False),  # no certificate
            (("-cert", outsider[0], "-key", outsider[1]), False),  # not on the allow-list
            (("-cert", tls_files.client_chain, "-key", tls_files.client_key), True),
        ]:
            answer = await anyio.to_thread.run_sync(partial(s_client_exchange, service.address, tls_files, *extra))
            assert (answer == ANSWER) is served, (extra, answer)
        clean_stop(service)


async def peer_certificate(address: str, files: Any) -> tuple[bytes, Any]:
    host, port = address.rsplit(":", 1)
    with anyio.fail_after(10):
        stream = await anyio.connect_tcp(
            host, int(port), tls=True, ssl_context=files.client_context(), tls_hostname="localhost"
        )
    certificate = stream.extra(TLSAttribute.ssl_object).getpeercert(binary_form=True)
    assert certificate is not None
    return certificate, stream


async def ask(stream: Any) -> bytes:
    await stream.send(QUERY)
    data = b""
    with anyio.fail_after(10):
        while not data.endswith(b"\r\n"):
            data += await stream.receive()
    return bytes(data)


async def test_sighup_rotates_the_certificate_and_open_connections_go_on(
    tls_files: Any, backend_args: list[str]
) -> None:
    with serve_process(service_args(tls_files, backend_args)) as service:
        before, old = await peer_certificate(service.address, tls_files)
        async with old:
            assert await ask(old) == ANSWER
            tls_files.issue("server", "localhost", "127.0.0.1")  # the new files in place
            service.process.send_signal(signal.SIGHUP)
            await anyio.to_thread.run_sync(service.wait_for_line, "TLS reloaded")
            after, new = await peer_certificate(service.address, tls_files)
            async with new:
                assert await ask(new) == ANSWER
            assert after != before
            assert await ask(old) == ANSWER  # the open connection keeps its session
        clean_stop(service)


PROXY = """
listeners:
  - name: front
    address: 127.0.0.1:0
    protocol: simple_line
    tls:
      certificates: [{{cert_chain: {cert}, private_key: {key}}}]
    routes: [{{cluster: service}}]
clusters:
  - name: service
    endpoints: [{service}]
    tls: {{ca_file: {ca}, server_name: localhost}}
admin: 127.0.0.1:0
"""


async def test_a_proxy_process_terminates_and_originates_tls(tls_files: Any, backend_args: list[str]) -> None:
    from simple_line_support import admin_of, curl

    with serve_process(service_args(tls_files, backend_args)) as service:
        config = Path(tls_files.directory) / "proxy.yaml"
        config.write_text(
            PROXY.format(
                cert=tls_files.cert_chain, key=tls_files.private_key, ca=tls_files.ca_file, service=service.address
            )
        )
        with anyio.fail_after(60):
            checked = await anyio.run_process(
                [sys.executable, "-m", "sota_dispatch.serve", "--config", str(config), "--check-config"], check=False
            )
        assert checked.returncode == 0, checked.stderr
        with serve_process(["--config", str(config), *backend_args]) as proxy:
            answer = await anyio.to_thread.run_sync(s_client_exchange, proxy.address, tls_files)
            assert answer == ANSWER
            before, old = await peer_certificate(proxy.address, tls_files)
            async with old:
                tls_files.issue("server", "localhost", "127.0.0.1")
                admin = await admin_of(proxy)
                status, body = await curl(f"{admin}/reload_certificates", "-X", "POST")
                assert (status, body) == (200, "reloaded\n")
                after, new = await peer_certificate(proxy.address, tls_files)
                async with new:
                    assert await ask(new) == ANSWER
                assert after != before
                assert await ask(old) == ANSWER
            clean_stop(proxy)
        clean_stop(service)


def test_check_config_reads_the_certificates(tls_files: Any, tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        PROXY.format(
            cert=tmp_path / "absent.pem", key=tls_files.private_key, ca=tls_files.private_key, service="127.0.0.1:1"
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2
    assert f"listeners[0].tls.certificates[0].cert_chain: no such file: {tmp_path / 'absent.pem'}" in checked.stderr
    assert "clusters[0].tls.ca_file: cannot load" in checked.stderr
