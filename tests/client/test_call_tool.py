"""The client tool (``python -m sota_dispatch.call``) against real sockets, no plugin.

Its protocols are the core's own test protocols with call support
(call_protocols.py): lines answered in order, and idproto answered by id.
Every exit status is reached the way a user reaches it: an answer, an
error answer, a server that never answers, one that closes mid-request, a
refused port, a usage error; and TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from call_protocols import CallIds, CallLines, call, raw_server, registered

from sota_dispatch import ServerTLS
from sota_dispatch.testing import free_port, serve_process, serving

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def call_protocols() -> Iterator[None]:
    with registered():
        yield


async def test_one_answer_is_printed_with_its_latency() -> None:
    async with serving(CallLines) as server:
        assert server.address is not None
        code, out, err = await call("--protocol", "call_lines", server.address, "hello", "there")
    assert (code, err) == (0, "")
    line, latency = out.splitlines()
    assert line == "echo:hello there"
    assert latency.startswith("answered in ")
    assert latency.endswith(" ms")


async def test_json_gives_the_protocols_data() -> None:
    async with serving(CallIds) as server:
        assert server.address is not None
        code, out, _ = await call("--protocol", "call_ids", server.address, "shout", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["ok"] is True
    assert record["answer"] == {"status": 0, "body": "SHOUT"}  # idproto's service upper-cases
    assert record["latency_ms"] >= 0


async def test_an_error_answer_exits_1() -> None:
    async with serving(CallLines) as server:
        assert server.address is not None
        code, out, err = await call("--protocol", "call_lines", server.address, "please", "fail")
    assert code == 1
    assert out.splitlines()[0] == "echo:please fail"
    assert out.splitlines()[1].startswith("error answer in ")
    assert err == ""


async def test_a_refused_port_is_one_plain_line_and_exit_2() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, err = await call("--protocol", "call_lines", address, "hi")
    assert code == 2
    assert out == ""
    assert err == f"error: cannot connect to {address}: connection refused\n"


async def test_a_server_that_never_answers_times_out_with_exit_1() -> None:
    async with raw_server() as address:
        code, out, err = await call("--protocol", "call_lines", address, "hi", "--timeout", "0.3")
    assert code == 1
    assert out == ""
    assert err == "error: timeout: no answer within 0.3s\n"


async def test_a_timeout_with_json_is_a_json_object_too() -> None:
    async with raw_server() as address:
        code, out, err = await call("--protocol", "call_ids", address, "hi", "--timeout", "0.2", "--json")
    assert code == 1
    assert json.loads(out) == {
        "protocol": "idproto",
        "ok": False,
        "error": "timeout",
        "detail": "timeout: no answer within 0.2s",
    }
    assert err.startswith("error: timeout")


async def test_a_server_that_closes_before_answering_exits_1() -> None:
    async with raw_server(answer_after=1) as address:
        code, _, err = await call("--protocol", "call_lines", address, "hi")
    assert code == 1
    assert err.startswith(f"error: {address} closed the connection before answering")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["127.0.0.1:1", "x"], "--protocol NAME is required"),
        (["--protocol", "call_lines"], "HOST:PORT is required"),
        (["--protocol", "nope", "127.0.0.1:1", "x"], "nope"),
        (["--protocol", "echo_lines", "127.0.0.1:1", "x"], "protocol echo_lines has no call support"),
        (["--protocol", "call_lines", "localhost", "x"], "expected HOST:PORT"),
        (["--protocol", "call_lines", "127.0.0.1:1", "x", "-H", "novalue"], "-H 'novalue': expected NAME=VALUE"),
        (["--protocol", "call_lines", "127.0.0.1:1", "x", "-H", "a=1"], "call_lines: no headers here"),
        (["--protocol", "call_lines", "127.0.0.1:1", "x", "-o", "bogus=1"], "-o bogus"),
    ],
)
async def test_usage_errors_exit_2_before_connecting(argv: list[str], message: str) -> None:
    # Port 1 refuses: a usage error must be found before any connection.
    code, out, err = await call(*argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert len(err.splitlines()) == 1


async def test_argparse_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = await call("--protocol", "call_lines", "127.0.0.1:1", "--count", "0")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument -n/--count: expected at least 1")
    assert len(err.splitlines()) == 1


async def test_list_protocols_names_only_those_with_call_support() -> None:
    code, out, _ = await call("--list-protocols")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0
    assert "call_lines" in names
    assert "call_ids" in names
    assert "echo_lines" not in names


async def test_tls_verified_against_a_ca(tls_files: object) -> None:
    files = tls_files
    tls = ServerTLS([(files.cert_chain, files.private_key, ())])  # type: ignore[attr-defined]
    async with serving(CallLines, tls=tls) as server:
        assert server.address is not None
        verified = await call("--protocol", "call_lines", server.address, "secret", "--tls-ca", files.ca_file)  # type: ignore[attr-defined]
        untrusted = await call("--protocol", "call_lines", server.address, "secret", "--tls")
        insecure = await call("--protocol", "call_lines", server.address, "secret", "--tls-insecure")
        plain = await call("--protocol", "call_lines", server.address, "secret", "--timeout", "0.5")
    assert verified[0] == 0
    assert verified[1].startswith("echo:secret\n")
    assert untrusted[0] == 2
    assert untrusted[2].startswith(f"error: cannot connect to {server.address}: TLS: ")
    assert "certificate" in untrusted[2]
    assert insecure[0] == 0
    assert plain[0] == 1  # a TLS server does not answer a plaintext line


#: A plugin module for child processes: CallLines without the test's imports.
CHILD_PLUGIN = """
from sota_dispatch import CallAnswer
from sota_dispatch.testing import ECHO_MARK, EchoLines


class CallLines(EchoLines):
    @classmethod
    def call_request(cls, words, fields):
        return ECHO_MARK + " ".join(words).encode() + b"\\n"

    @classmethod
    def describe_answer(cls, frame):
        return CallAnswer(ok=True, text=frame.decode().rstrip())
"""


def test_the_program_calls_the_serve_program_and_names_a_refusal(install_plugin: Callable[..., dict[str, str]]) -> None:
    plugin = install_plugin("call-lines", {"call_lines": "child_plugin:CallLines"}, {"child_plugin": CHILD_PLUGIN})
    env = {**os.environ, **plugin}
    command = [sys.executable, "-m", "sota_dispatch.call", "--protocol", "call_lines"]
    with serve_process(["--protocol", "call_lines", "--listen", "127.0.0.1:0"], env=env) as server:
        answered = subprocess.run([*command, server.address, "hi"], capture_output=True, text=True, timeout=60, env=env)
    refused = f"127.0.0.1:{free_port()}"
    failed = subprocess.run([*command, refused, "hi"], capture_output=True, text=True, timeout=60, env=env)
    assert (answered.returncode, answered.stderr) == (0, "")
    assert answered.stdout.splitlines()[0] == "echo:hi"
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr == f"error: cannot connect to {refused}: connection refused\n"
