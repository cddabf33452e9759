"""The serve command line, run as a real child process.

The child serves echo_lines (sota_dispatch.testing.EchoLines), installed for
it as a plugin is (see ``echo_lines_env``): the core needs no plugin here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from sota_dispatch.testing import ServeProcess, serve_process

pytestmark = pytest.mark.anyio


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def line_server(backend_args: list[str], echo_lines_env: dict[str, str]) -> Iterator[ServeProcess]:
    with serve_process(
        ["--protocol", "echo_lines", "--listen", "127.0.0.1:0", *backend_args], env=echo_lines_env
    ) as proc:
        yield proc


async def roundtrip(host: str, port: int, data: bytes, replies: int) -> bytes:
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(data)
        out = b""
        with anyio.fail_after(10):
            while out.count(b"\n") < replies:
                out += await stream.receive()
        return out


async def test_logs_one_listening_line_with_the_real_port(line_server: ServeProcess) -> None:
    assert line_server.port != 0
    assert await roundtrip(line_server.host, line_server.port, b"echo:a=1\r\n", 1) == b"echo:a=1\r\n"
    assert line_server.stop() == 0
    listening = [line for line in line_server.stderr_lines if "listening on" in line]
    assert len(listening) == 1
    assert f"listening on 127.0.0.1:{line_server.port}" in listening[0]
    assert "echo_lines" in listening[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits_zero(line_server: ServeProcess, signum: int) -> None:
    async with await anyio.connect_tcp(line_server.host, line_server.port) as stream:
        await stream.send(b"echo:x=1\n")
        with anyio.fail_after(10):
            assert await stream.receive() == b"echo:x=1\n"
        line_server.process.send_signal(signum)
        # The idle connection is closed as part of the drain...
        with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()
    # ...and the process exits 0, without a traceback.
    assert line_server.process.wait(20) == 0
    text = "".join(line_server.stderr_lines)
    assert "draining" in text
    assert "Traceback" not in text


def test_list_protocols_shows_installed_plugins(echo_lines_env: dict[str, str]) -> None:
    result = run_cli("--list-protocols", env=echo_lines_env)
    assert result.returncode == 0
    assert "echo_lines\tLines that start with echo:, each answered with itself" in result.stdout
    assert "max_line" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "nope"], "error: unknown protocol 'nope'; available: "),
        (
            ["--protocol", "echo_lines", "--listen", "localhost"],
            'error: --listen: expected HOST:PORT, got "localhost"',
        ),
        (["--protocol", "echo_lines", "--listen", "127.0.0.1:99999"], "error: --listen: port must be within"),
        (["--protocol", "echo_lines", "-o", "nope=1"], "has no option 'nope' for a local service (options: max_line)"),
        (["--protocol", "echo_lines", "-o", "max_line"], "--option expects NAME=VALUE"),
        (
            ["--protocol", "echo_lines", "-o", "max_line=lots"],
            "error: --option max_line: expected a positive integer, got 'lots'",
        ),
        ([], "error: --protocol is required"),
        (["--protocol", "echo_lines", "--drain-timeout", "nan"], "expected seconds >= 0"),
        (["--protocol", "echo_lines", "--drain-timeout", "-1"], "error: argument --drain-timeout: expected seconds"),
        (["--protocol", "echo_lines", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["--protocol", "echo_lines", "--listen", "ipc:///tmp/x"], "error: --listen: only tcp:// addresses"),
        (["--log-format", "xml"], "error: argument --log-format: invalid choice"),
    ],
)
def test_operator_errors_are_one_line_and_exit_2(args: list[str], message: str, echo_lines_env: dict[str, str]) -> None:
    result = run_cli(*args, env=echo_lines_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no usage block either


def test_backend_trio_without_trio_is_one_line() -> None:
    # trio is installed here: block its import the way Python allows.
    code = "import sys; sys.modules['trio'] = None; from sota_dispatch.serve import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--protocol", "echo_lines", "--backend", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --backend trio: trio is not installed (pip install 'sota-dispatch[trio]')"


def test_version_names_the_package_python_and_loop() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    line = result.stdout.strip()
    assert line.startswith("sota-dispatch ")
    assert sys.version.split()[0] in line
    assert "loop: asyncio (uvloop)" in line or "loop: asyncio)" in line
    assert "loop: trio" in run_cli("--version", "--backend", "trio").stdout
    assert "loop: asyncio)" in run_cli("--version", "--no-uvloop").stdout


def test_help_describes_both_modes_with_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("local service", "proxy", "examples:", "--listen tcp://*:5555", "-c FILE, --config FILE", "uvloop"):
        assert text in result.stdout


def console_script() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "sota-dispatch")
    if not os.path.exists(path):
        pytest.fail(f"the console script is not installed beside {sys.executable} (pip install -e .)")
    return path


def test_console_script_runs_serve_and_names_commands(echo_lines_env: dict[str, str]) -> None:
    script = console_script()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **echo_lines_env}
        return subprocess.run([script, *args], capture_output=True, text=True, timeout=60, env=env, check=False)

    assert run("--version").stdout.startswith("sota-dispatch ")
    listed = run("serve", "--list-protocols")
    assert listed.returncode == 0
    assert "echo_lines\t" in listed.stdout
    wrong = run("sevre")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: unknown command 'sevre' (commands: serve, call); did you mean 'serve'?"
    helped = run("--help")
    assert helped.returncode == 0
    assert "serve" in helped.stdout
    assert "call" in helped.stdout
    bad = run("serve", "--bogus")
    assert bad.returncode == 2
    assert "see sota-dispatch serve --help" in bad.stderr


async def test_tcp_url_listen_short_config_flag_and_critical_level(
    echo_lines_env: dict[str, str], backend_args: list[str], tmp_path: Any
) -> None:
    args = ["--protocol", "echo_lines", "--listen", "tcp://127.0.0.1:0", *backend_args]
    with serve_process(args, env=echo_lines_env) as proc:
        assert await roundtrip(proc.host, proc.port, b"echo:z=1\n", 1) == b"echo:z=1\n"
        assert proc.stop() == 0
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "listeners: [{name: l, protocol: echo_lines, address: 'tcp://127.0.0.1:0', routes: [{cluster: c}]}]\n"
        "clusters: [{name: c, endpoints: ['tcp://127.0.0.1:1']}]\n"
    )
    checked = run_cli("-c", str(config), "--check-config", "--log-level", "critical", env=echo_lines_env)
    assert checked.returncode == 0, checked.stderr
    assert "listeners l (echo_lines on tcp://127.0.0.1:0)" in checked.stdout


async def test_sighup_on_a_local_service_is_handled_not_fatal(line_server: ServeProcess) -> None:
    line_server.process.send_signal(signal.SIGHUP)
    await anyio.to_thread.run_sync(line_server.wait_for_line, "SIGHUP: reloading certificates", 10.0)
    assert await roundtrip(line_server.host, line_server.port, b"echo:after=1\n", 1) == b"echo:after=1\n"
    assert line_server.stop() == 0


def test_a_collector_threshold_below_one_is_refused(echo_lines_env: dict[str, str]) -> None:
    for value in ("0", "-5", "many"):
        refused = run_cli("--protocol", "echo_lines", "--gc-threshold", value, env=echo_lines_env)
        assert refused.returncode == 2
        assert f"--gc-threshold: expected a whole number >= 1, got '{value}'" in refused.stderr


def test_a_malloc_trim_threshold_that_is_no_size_is_refused(echo_lines_env: dict[str, str]) -> None:
    for value in ("-1", "lots", "12XB"):
        refused = run_cli("--protocol", "echo_lines", "--malloc-trim-threshold", value, env=echo_lines_env)
        assert refused.returncode == 2
        assert f"--malloc-trim-threshold: expected a size in bytes, e.g. 64MiB, got '{value}'" in refused.stderr


def test_port_in_use_is_exit_2(line_server: ServeProcess, echo_lines_env: dict[str, str]) -> None:
    result = run_cli("--protocol", "echo_lines", "--listen", line_server.address, env=echo_lines_env)
    assert result.returncode == 2
    assert f"error: cannot listen on {line_server.address}" in result.stderr
    assert "Traceback" not in result.stderr


PLUGIN = '''
from sota_dispatch import Dispatcher


class Reverse(Dispatcher):
    """Reverses each line."""

    async def serve(self) -> None:
        while True:
            line = await self.reader.read_until(b"\\n", max_bytes=1024)
            await self.writer.send(line[::-1] + b"\\n")
'''


async def test_plugin_installed_only_by_entry_point_is_listed_and_served(
    install_plugin: Callable[..., dict[str, str]], backend_args: list[str]
) -> None:
    env = install_plugin("reverse-plugin", {"reverse": "reverse_plugin:Reverse"}, modules={"reverse_plugin": PLUGIN})
    listed = run_cli("--list-protocols", env=env)
    assert "reverse\tReverses each line." in listed.stdout
    assert "distribution reverse-plugin 1.0" in listed.stdout
    args = ["--protocol", "reverse", "--listen", "127.0.0.1:0", *backend_args]
    with serve_process(args, env=env) as proc:
        assert await roundtrip(proc.host, proc.port, b"abc\nxy\n", 2) == b"cba\nyx\n"
        assert proc.stop() == 0


def test_no_uvloop_flag_and_log_level(echo_lines_env: dict[str, str]) -> None:
    args = ["--protocol", "echo_lines", "--listen", "127.0.0.1:0", "--no-uvloop", "--log-level", "debug"]
    with serve_process(args, env=echo_lines_env) as proc:
        assert proc.stop() == 0
