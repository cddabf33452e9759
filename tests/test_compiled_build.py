"""The build in use, as reported, and the compiled core against its source.

``build_info()`` must say what Python imports (CI's compiled run sets
``SOTA_EXPECT_COMPILED`` and requires every module the wheels' build hooks
name to be compiled; the pure-Python run requires none), and the pure
copies :func:`~sota_dispatch.testing.pure_python` loads must really be the
sources, sharing every module that is not compiled.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import sota_xprotocol.hessian2.values
from sota_dispatch import build_info
from sota_dispatch.testing import build_spelling, pure_python

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = [ROOT, *(ROOT / "protocols" / name for name in ("simple_line", "zmtp", "xprotocol"))]


def hooked_modules() -> set[str]:
    """Every module a project's mypyc build hook compiles."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    names = set()
    for project in PROJECTS:
        config = tomllib.loads((project / "pyproject.toml").read_text())
        hooks = config["tool"]["hatch"]["build"]["targets"]["wheel"].get("hooks", {})
        for path in hooks.get("mypyc", {}).get("include", []):
            names.add(path.removesuffix(".py").replace("/", "."))
    return names


def test_the_build_in_use_is_reported_as_it_is() -> None:
    info = build_info()
    if os.environ.get("SOTA_EXPECT_COMPILED"):
        assert set(info.compiled) == hooked_modules()
        assert info.describe() == f"compiled (mypyc): {len(hooked_modules())} modules"
    else:
        assert info.compiled == ()
        assert info.describe() == "pure Python"
    version = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--version"], capture_output=True, text=True, check=True
    )
    assert f"; {info.describe()}; loop: " in version.stdout


def test_pure_copies_run_the_source_and_share_what_is_not_compiled() -> None:
    pure = pure_python("sota_xprotocol.hessian2.decode")
    installed = importlib.import_module("sota_xprotocol.hessian2.decode")
    if "sota_xprotocol.hessian2.decode" in build_info().compiled:
        assert pure.__name__ == "_sota_pure.sota_xprotocol.hessian2.decode"
        assert str(pure.__file__).endswith("decode.py")
        assert pure is not installed
    else:  # nothing compiled: the module itself is its source
        assert pure is installed
    # values.py is never compiled: both builds decode into its classes, and
    # it keeps its own name and spec.
    shared = pure_python("sota_xprotocol.hessian2.values")
    assert shared is sota_xprotocol.hessian2.values
    assert shared.__spec__ is not None
    assert shared.__spec__.name == "sota_xprotocol.hessian2.values"
    assert pure.decode(b"\x91") == (1, 1)


#: Public classes of compiled modules, which users and plugin authors subclass.
SUBCLASSED = [
    ("sota_dispatch.io.reader", "BufferedReader"),
    ("sota_dispatch.io.chunks", "ChunkBuffer"),
    ("sota_dispatch.io.clock", "SystemClock"),
    ("sota_dispatch.io.clock", "ManualClock"),
    ("sota_dispatch.io.budget", "BufferBudget"),
    ("sota_dispatch.io.writer", "BufferedWriter"),
    ("sota_dispatch.io.outbox", "Outbox"),
    ("sota_dispatch.protocol.loop", "CodecLoop"),
    ("sota_dispatch.protocol.multiplexer", "StreamMultiplexer"),
    ("sota_dispatch.protocol.multiplexer", "PendingStream"),
    ("sota_xprotocol.framing", "FrameDecoder"),
    ("sota_xprotocol.bolt", "BoltDecoder"),
    ("sota_xprotocol.dubbo", "DubboDecoder"),
    ("sota_zmtp.frames", "FrameReader"),
    ("sota_simple_line.codec", "LineCodec"),
]


@pytest.mark.parametrize(("module", "name"), SUBCLASSED)
def test_public_classes_can_be_subclassed_in_python(module: str, name: str) -> None:
    # A compiled class refuses interpreted subclasses unless it allows them.
    base: type[Any] = getattr(importlib.import_module(module), name)
    subclass: Any = type(f"My{name}", (base,), {"extra": 1})
    instance = subclass.__new__(subclass)
    assert isinstance(instance, base)
    assert instance.extra == 1


def test_a_plugin_decoder_subclass_decodes() -> None:
    from sota_xprotocol.bolt import BoltDecoder, BoltFrame, heartbeat_request

    class CountingDecoder(BoltDecoder):
        fed = 0

        def feed(self, data: bytes) -> list[BoltFrame]:
            self.fed += 1
            return super().feed(data)

    decoder = CountingDecoder()
    frames = decoder.feed(heartbeat_request(7).encode())
    assert [(f.request_id, decoder.fed) for f in frames] == [(7, 1)]


def test_build_spelling_flips_a_pure_modules_flag_and_skips_the_other_spelling_of_a_compiled_one() -> None:
    pure = types.ModuleType("pure_one")
    pure.__file__ = "/somewhere/pure_one.py"
    pure._COMPILED = False  # type: ignore[attr-defined]
    with build_spelling(pure, True):
        assert pure._COMPILED is True
    assert pure._COMPILED is False
    native = types.ModuleType("native_one")
    native.__file__ = "/somewhere/native_one.cpython-311-x86_64-linux-gnu.so"
    native._COMPILED = True
    with build_spelling(native, True):
        assert native._COMPILED is True
    with pytest.raises(pytest.skip.Exception, match="its own spelling only"), build_spelling(native, False):
        raise AssertionError("the block must not run")
