"""``python -m sota_dispatch.call --protocol bolt|dubbo`` against the bundled
echo services, a real SOFA-RPC server (anthunder's AioListener), and the
proxy's error answers; what a dubbo provider receives; how answers read."""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from xprotocol_support import SERVICE, anthunder_server

from sota_dispatch.client import run_call
from sota_dispatch.testing import free_port, serve_process, serving
from sota_xprotocol import BoltEchoDispatcher, DubboDispatcher, DubboEchoDispatcher, dubbo, hessian2

pytestmark = pytest.mark.anyio


async def call(protocol: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_call(["--protocol", protocol, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# -- bolt ---------------------------------------------------------------------------


async def test_bolt_echo() -> None:
    async with serving(BoltEchoDispatcher) as server:
        assert server.address is not None
        code, out, err = await call("bolt", server.address, "--service", SERVICE, "--method", "echo", "payload")
        json_code, json_out, _ = await call("bolt", server.address, "--service", SERVICE, "payload", "--json")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "SUCCESS: payload"
    answer = json.loads(json_out)["answer"]
    assert json_code == 0
    assert answer["status_name"] == "SUCCESS"
    assert answer["class_name"] == "com.alipay.sofa.rpc.core.request.SofaRequest"  # the echo keeps the request's
    assert answer["content"] == "payload"


async def test_bolt_to_a_real_sofa_rpc_server() -> None:
    with anthunder_server() as (host, port, _):
        argv = [f"{host}:{port}", "--service", SERVICE, "--method", "echo", "payload"]
        for _attempt in range(100):
            code, out, err = await call("bolt", *argv)
            if "connection refused" not in err:
                break
            await anyio.sleep(0.05)  # its listener thread may still be binding: the peer's own startup
    assert code == 0
    assert out.splitlines()[0] == "SUCCESS: PAYLOAD"  # its service upper-cases


async def test_bolt_load() -> None:
    async with serving(BoltEchoDispatcher) as server:
        assert server.address is not None
        code, out, _ = await call("bolt", server.address, "--service", SERVICE, "x", "-n", "500", "-c", "50", "--json")
    assert code == 0
    assert (json.loads(out)["count"], json.loads(out)["errors"]) == (500, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["payload"], "bolt: --service NAME is required"),
        (["--service", "s", "two", "words"], "bolt: a bolt request carries one payload; got 2 words"),
    ],
)
async def test_bolt_usage_errors(argv: list[str], message: str) -> None:
    code, _, err = await call("bolt", f"127.0.0.1:{free_port()}", *argv)
    assert code == 2
    assert err.startswith(f"error: {message}")


# -- dubbo --------------------------------------------------------------------------


async def test_dubbo_echo() -> None:
    async with serving(DubboEchoDispatcher) as server:
        assert server.address is not None
        code, out, err = await call("dubbo", server.address, "--service", "com.example.Echo", "--method", "echo", "arg")
        json_code, json_out, _ = await call(
            "dubbo", server.address, "--service", "com.example.Echo", "--method", "echo", "héllo", "--json"
        )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == 'OK: "arg"'
    answer = json.loads(json_out)["answer"]
    assert json_code == 0
    assert (answer["status_name"], answer["value"]) == ("OK", "héllo")
    assert answer["type"] == "value_with_attachments"  # dubbo 2.0.2 asks for the response's attachments


class RecordingProvider(DubboDispatcher):
    """Keeps every invocation it receives; answers null."""

    seen: ClassVar[list[dubbo.Invocation]] = []

    def on_request(self, frame: dubbo.DubboFrame) -> bytes:
        self.seen.append(frame.invocation())
        return dubbo.value_response(frame, None, dubbo_version="2.0.2").encode()


@pytest.fixture
def provider() -> type[RecordingProvider]:
    RecordingProvider.seen = []
    return RecordingProvider


async def test_dubbo_invocation_is_what_java_sends(provider: type[RecordingProvider]) -> None:
    async with serving(provider) as server:
        assert server.address is not None
        argv = ["--service", "com.example.Echo", "--method", "join", "a", "b", "-H", "group=g1", "-H", "version=1.0.0"]
        code, out, _ = await call("dubbo", server.address, *argv, "-H", "trace=t1")
    assert code == 0
    assert out.splitlines()[0] == "OK: null"
    [invocation] = provider.seen
    assert (invocation.dubbo_version, invocation.path, invocation.version) == ("2.0.2", "com.example.Echo", "1.0.0")
    assert (invocation.method, invocation.descriptor) == ("join", "Ljava/lang/String;Ljava/lang/String;")
    assert invocation.arguments == ("a", "b")
    assert invocation.attachments == {
        "path": "com.example.Echo",
        "interface": "com.example.Echo",
        "version": "1.0.0",
        "group": "g1",
        "trace": "t1",
    }


async def test_dubbo_needs_service_and_method() -> None:
    address = f"127.0.0.1:{free_port()}"
    no_service = await call("dubbo", address, "--method", "echo", "x")
    no_method = await call("dubbo", address, "--service", "s", "x")
    assert no_service[0] == no_method[0] == 2
    assert no_service[2] == "error: dubbo: --service NAME is required (the interface, such as com.example.Echo)\n"
    assert no_method[2] == "error: dubbo: --method NAME is required\n"


# -- error answers ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["bolt", "dubbo"])
async def test_the_proxys_error_answer_exits_1(protocol: str, backend_args: list[str]) -> None:
    refused = f"127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        command = ["--protocol", protocol, "--listen", "127.0.0.1:0", "--upstream", refused, *backend_args]
        proxy = await anyio.to_thread.run_sync(stack.enter_context, serve_process(command))
        code, out, _ = await call(protocol, proxy.address, "--service", "com.example.Echo", "--method", "echo", "x")
    assert code == 1
    assert out.splitlines()[1].startswith("error answer in ")
    expected = "NO_PROCESSOR (status 6)" if protocol == "bolt" else "no healthy upstream"
    assert expected in out.splitlines()[0]


def dubbo_answer(status: int, body: bytes) -> Any:
    return DubboDispatcher.describe_answer(dubbo.DubboFrame(dubbo.HESSIAN2, status, 1, body))


def test_a_java_exception_is_an_error_answer() -> None:
    exception = (
        b"C"
        + hessian2.encode("java.lang.IllegalStateException")
        + hessian2.encode(1)
        + hessian2.encode("detailMessage")
        + b"\x60"  # an object of class definition 0
        + hessian2.encode("boom")
    )
    answer = dubbo_answer(dubbo.DubboStatus.OK, hessian2.encode(int(dubbo.ResponseType.EXCEPTION)) + exception)
    assert answer.ok is False
    assert answer.text == "OK: exception java.lang.IllegalStateException: boom"
    assert answer.data["exception"] == {"type": "java.lang.IllegalStateException", "fields": {"detailMessage": "boom"}}


def test_a_failed_status_is_an_error_answer() -> None:
    answer = dubbo_answer(dubbo.DubboStatus.SERVICE_NOT_FOUND, hessian2.encode("no provider"))
    assert answer.ok is False
    assert answer.text == "SERVICE_NOT_FOUND (status 60): no provider"


def test_an_undecodable_body_is_an_error_answer_not_a_crash() -> None:
    answer = dubbo_answer(dubbo.DubboStatus.OK, b"\x91\xff")
    assert answer.ok is False
    assert answer.text.startswith("OK (status 20): undecodable body")
