"""Shared by the core's tests, which need no plugin installed.

Where a test needs real protocols it uses the core's own two: ``echo_lines``
(:class:`sota_dispatch.testing.EchoLines`, lines without ids; its fixture is
in the root conftest) and ``idproto`` (examples/idproto.py, the tutorial's
protocol: binary frames with request ids). ``install_plugin`` installs a
plugin distribution the way pip leaves one, for the registry and for child
processes (``echo_lines_env``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from sota_dispatch import register_protocol, unregister_protocol

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.append(str(EXAMPLES))  # idproto is a module of its own, as a reader would copy it

from idproto import IdProto  # noqa: E402

#: ``install_plugin(dist, {protocol: "module:attr"}, modules={"module": source})``
InstallPlugin = Callable[..., dict[str, str]]


@pytest.fixture
def idproto() -> Iterator[str]:
    """The tutorial's IdProto registered as ``idproto`` for the test, as an
    installed plugin's entry point would; its name."""
    register_protocol("idproto", IdProto)
    yield "idproto"
    unregister_protocol("idproto")


@pytest.fixture
def install_plugin(tmp_path: Path) -> InstallPlugin:
    """Installs a plugin distribution into ``tmp_path`` as pip would leave
    it: its modules (name -> source) and a dist-info declaring its protocols
    in the entry-point group (``group``: another, e.g. stream filters').
    Returns the environment of a child process that
    has it installed (PYTHONPATH). This process sees it once ``tmp_path`` is
    on ``sys.path`` and a registry scans afresh (the process-wide one has
    scanned already)."""

    def install(
        dist: str,
        protocols: Mapping[str, str],
        modules: Mapping[str, str] | None = None,
        group: str = "sota_dispatch.protocols",
    ) -> dict[str, str]:
        for module, source in (modules or {}).items():
            (tmp_path / f"{module}.py").write_text(source)
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        declared = "".join(f"{name} = {target}\n" for name, target in protocols.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{declared}")
        return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    return install


@pytest.fixture
def echo_lines_env(install_plugin: InstallPlugin) -> dict[str, str]:
    """The environment of a child process (``serve``) in which echo_lines is
    an installed plugin."""
    return install_plugin("echo-lines", {"echo_lines": "sota_dispatch.testing:EchoLines"})


@pytest.fixture
def root_logging_restored() -> Iterator[None]:
    """For tests that call ``sota_dispatch.serve.main``, which sets up logging
    as the CLI does: a handler on the ``sys.stderr`` of the moment, which in
    a test is pytest's capture file, closed after the test. Left in place,
    every later test's log lines hit a closed file."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
