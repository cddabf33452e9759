"""``python -m sota_dispatch.call --protocol simple_line`` against the bundled
echo service (in this process, and as ``python -m sota_dispatch.serve``) and
through the proxy (``serve --upstream``)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import anyio.to_thread
import pytest

from sota_dispatch.client import run_call
from sota_dispatch.testing import ServeProcess, free_port, serve_process, serving
from sota_simple_line import SimpleLineDispatcher

pytestmark = pytest.mark.anyio


async def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_call(["--protocol", "simple_line", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_a_query_is_echoed() -> None:
    async with serving(SimpleLineDispatcher) as server:
        assert server.address is not None
        code, out, err = await call(server.address, "a=1&b=2")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == 'receive:{"a":["1"],"b":["2"]}'
    assert re.fullmatch(r"answered in \d+\.\d{3} ms", out.splitlines()[1])


async def test_words_fields_and_service_make_one_query() -> None:
    async with serving(SimpleLineDispatcher) as server:
        assert server.address is not None
        code, out, _ = await call(server.address, "a=1", "b=2", "--service", "echo", "-H", "note=a b&c", "--json")
    assert code == 0
    answer = json.loads(out)["answer"]
    assert answer["receive"] == {"a": ["1"], "b": ["2"], "service": ["echo"], "note": ["a b&c"]}


async def test_a_bad_query_is_an_error_answer() -> None:
    async with serving(SimpleLineDispatcher) as server:
        assert server.address is not None
        code, out, _ = await call(server.address, "a=%zz")
        json_code, json_out, _ = await call(server.address, "a=%zz", "--json")
    assert code == 1
    assert out.splitlines()[0] == "error:bad percent escape at offset 2: '%zz'"
    assert json_code == 1
    assert json.loads(json_out)["ok"] is False


async def test_many_pipelined_requests_are_all_answered() -> None:
    async with serving(SimpleLineDispatcher) as server:
        assert server.address is not None
        code, out, _ = await call(server.address, "a=1", "-n", "1000", "--concurrency", "50", "--json")
    summary = json.loads(out)
    assert code == 0
    assert (summary["count"], summary["errors"]) == (1000, 0)


async def test_a_query_needs_words() -> None:
    code, _, err = await call(f"127.0.0.1:{free_port()}")
    assert code == 2
    assert err == "error: simple_line: no query: give one, such as 'a=1&b=2'\n"


@contextmanager
def echo_process(backend_args: list[str]) -> Iterator[ServeProcess]:
    with serve_process(["--protocol", "simple_line", "--listen", "127.0.0.1:0", *backend_args]) as process:
        yield process


async def test_through_the_proxy(backend_args: list[str]) -> None:
    async with serving(SimpleLineDispatcher) as echo:
        assert echo.address is not None
        proxy_args = ["--protocol", "simple_line", "--listen", "127.0.0.1:0", "--upstream", echo.address]
        refused = f"127.0.0.1:{free_port()}"
        down_args = ["--protocol", "simple_line", "--listen", "127.0.0.1:0", "--upstream", refused]
        with ExitStack() as stack:
            # Started from a thread: this loop serves the echo meanwhile.
            proxy = await anyio.to_thread.run_sync(stack.enter_context, serve_process([*proxy_args, *backend_args]))
            down = await anyio.to_thread.run_sync(stack.enter_context, serve_process([*down_args, *backend_args]))
            code, out, _ = await call(proxy.address, "a=1", "-n", "50", "-c", "5")
            one = await call(proxy.address, "via=proxy")
            down_code, down_out, _ = await call(down.address, "a=1")
    assert code == 0
    assert out.startswith("50 requests, 0 errors in ")
    assert one[0] == 0
    assert one[1].startswith('receive:{"via":["proxy"]}\n')
    assert down_code == 1  # the proxy's own error answer: no upstream to take it
    assert down_out.startswith("error:no healthy upstream")


def test_the_program_against_the_serve_program(backend_args: list[str]) -> None:
    with echo_process(backend_args) as echo:
        command = [sys.executable, "-m", "sota_dispatch.call", "--protocol", "simple_line", echo.address, "a=1&b=2"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == 'receive:{"a":["1"],"b":["2"]}'
