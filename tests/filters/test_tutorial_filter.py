"""The filter tutorial's package (examples/zone_tag), installed only through its
entry point, in a real proxy process.

The package is installed as pip leaves it (its module, and a dist-info with
the entry points its pyproject.toml declares), beside echo_lines for the
protocol; the proxy is ``python -m sota_dispatch.serve --config``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from sota_dispatch.testing import EchoLines, connect, serve_process, serving

pytestmark = pytest.mark.anyio

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "zone_tag"


@pytest.fixture
def zone_tag_env(install_plugin: Callable[..., dict[str, str]]) -> dict[str, str]:
    """A child process's environment with zone_tag and echo_lines installed."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["sota_dispatch.filters"]
    assert declared == {"zone_tag": "zone_tag:ZoneTag"}
    module = {"zone_tag": (PACKAGE / "zone_tag.py").read_text()}
    install_plugin(project["project"]["name"], declared, modules=module, group="sota_dispatch.filters")
    env = install_plugin("echo-lines", {"echo_lines": "sota_dispatch.testing:EchoLines"})
    return {**os.environ, **env}


CONFIG = """
listeners:
  - name: front
    address: 127.0.0.1:0
    protocol: echo_lines
    stream_filters:
      - type: zone_tag
        config: {{zones: "{zones}"}}
    routes:
      - cluster: local
        match: [{{attribute: zone, exact: local}}]
      - cluster: elsewhere
clusters:
  - name: local
    endpoints: [{backend}]
  - name: elsewhere
    endpoints: [127.0.0.1:1]
"""


async def ask(address: str, line: bytes) -> bytes:
    async with await connect(address) as stream:
        await stream.send(line)
        data = b""
        with anyio.fail_after(10):
            while not data.endswith(b"\n"):
                data += await stream.receive()
        return data


async def test_the_tutorial_filter_is_listed_and_routes_and_refuses(
    zone_tag_env: dict[str, str], tmp_path: Path
) -> None:
    async with serving(EchoLines) as backend:
        for zones, answer in [
            ("127.0.0.0/8=local,10.0.0.0/8=office", b"echo:hi\n"),  # tagged local: routed to the backend
            ("10.0.0.0/8=office", b"error:denied: unknown client; ref "),  # loopback is in no zone
        ]:
            path = tmp_path / "proxy.yaml"
            path.write_text(CONFIG.format(zones=zones, backend=backend.address))
            with serve_process(["--config", str(path)], env=zone_tag_env) as proxy:
                reply = await ask(proxy.address, b"echo:hi\n")
                assert reply.startswith(answer), (zones, reply)


ORDERED = """
listeners:
  - name: front
    address: 127.0.0.1:0
    protocol: echo_lines
    stream_filters: {chain}
    routes:
      - cluster: local
        match: [{{attribute: echo, prefix: vip}}]
        per_filter_config:
          zone_tag: {{zones: "127.0.0.0/8=trusted"}}
      - cluster: local
clusters:
  - name: local
    endpoints: [{backend}]
"""

#: rbac refuses requests tagged ``local``; it sees the tag only when zone_tag ran before it.
ZONE_TAG = '{type: zone_tag, config: {zones: "127.0.0.0/8=local"}}'
NO_LOCALS = "{type: rbac, config: {attribute: zone, exact: local}}"


async def test_the_chain_runs_in_its_order_and_a_route_overrides_the_tutorial_filter(
    zone_tag_env: dict[str, str], tmp_path: Path
) -> None:
    async with serving(EchoLines) as backend:
        for chain, plain in [
            (f"[{ZONE_TAG}, {NO_LOCALS}]", b"error:denied: ref "),  # tagged, then refused
            (f"[{NO_LOCALS}, {ZONE_TAG}]", b"echo:plain\n"),  # rbac ran before the tag existed
        ]:
            path = tmp_path / "proxy.yaml"
            path.write_text(ORDERED.format(chain=chain, backend=backend.address))
            with serve_process(["--config", str(path)], env=zone_tag_env) as proxy:
                assert (await ask(proxy.address, b"echo:plain\n")).startswith(plain), chain
                # The vip route's own zone_tag tags loopback "trusted": never refused.
                assert await ask(proxy.address, b"echo:vip\n") == b"echo:vip\n", chain


def test_the_tutorial_filter_is_listed_and_checks_its_options(zone_tag_env: dict[str, str], tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--list-filters"],
        capture_output=True,
        text=True,
        env=zone_tag_env,
        timeout=60,
        check=True,
    ).stdout
    assert "zone_tag\tSets the routing attribute ``zone`` from the client's address" in listed
    assert "zone-tag 1.0" in listed
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG.format(zones="10.0.0.0/8", backend="127.0.0.1:2"))
    done = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        env=zone_tag_env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "listeners[0].stream_filters[0].config.zones: expected NETWORK=ZONE, got '10.0.0.0/8'" in done.stderr
