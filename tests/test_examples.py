"""The examples in examples/ and the README stay runnable.

Examples that need a plugin are run in that plugin's suite (the ZMTP router,
each example proxy config with real backends); here every example config is
checked as ``serve --check-config`` does, once the protocols it names are
installed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import anyio
import anyio.to_thread
import pytest

from sota_dispatch import Server, available_protocols
from sota_dispatch.config import load_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.serve import main
from sota_dispatch.testing import exchange

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "examples" / "proxy").glob("*.yaml"))


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_shout_example_over_tcp() -> None:
    shout = load("shout")
    result = await exchange(shout.Shout, [b"hello\r\nwor", b"ld\r\n"])
    assert result.output == b"HELLO\r\nWORLD\r\n"
    server = Server(shout.Shout, "127.0.0.1:0")
    async with anyio.create_task_group() as tg:
        host, _, port = (await tg.start(server.serve)).rpartition(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(b"quiet\r\n")
            with anyio.fail_after(10):
                assert await stream.receive() == b"QUIET\r\n"
        server.shutdown()


def test_shout_example_is_short() -> None:
    code = [line for line in (ROOT / "examples" / "shout.py").read_text().splitlines() if line.strip()]
    assert len(code) <= 20


async def test_rpc_client_example() -> None:
    answers = await load("rpc_client").main()
    assert answers == {i: b"HELLO %d" % i for i in range(100)}


def test_readme_example_is_the_shout_example() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "shout.py").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    class_def = block.group(1)[block.group(1).index("class Shout") :]
    assert class_def.strip() in example


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert len(commands) == 2, "the README has exactly two set-up commands"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


@pytest.mark.parametrize("example", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.usefixtures("root_logging_restored")
def test_example_configs_are_valid(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(example)
    missing = {listener.protocol for listener in config.listeners} - {"auto", *available_protocols()}
    if missing:
        pytest.skip(f"protocol {', '.join(sorted(missing))} not installed")
    assert main(["--config", str(example), "--check-config"]) == 0
    assert capsys.readouterr().out.startswith("config OK: ")
    Proxy(config)  # protocols installed, options valid
