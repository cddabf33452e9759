"""Shared by every test directory: every async test runs on asyncio, trio and uvloop.

Modules with async tests set ``pytestmark = pytest.mark.anyio``; collection
fails for an async test without it, so none can silently run on one backend
(or not at all). ``echo_lines`` registers the core's test protocol
(:class:`sota_dispatch.testing.EchoLines`) for a test that needs one.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from sota_dispatch import register_protocol, unregister_protocol
from sota_dispatch.testing import EchoLines


@pytest.fixture(params=["asyncio", "trio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, bool]]:
    """asyncio with its own loop, trio, and asyncio on uvloop (which the
    bundled server picks whenever it is installed, and whose transports
    fail in their own ways: a reset peer leaves no socket behind)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
        return ("asyncio", {"use_uvloop": True})
    backend: str = request.param
    return backend


@pytest.fixture
def backend_args(anyio_backend: str | tuple[str, dict[str, bool]]) -> list[str]:
    """The ``serve`` command-line flags that run the current test's backend
    in a child process (``--backend asyncio`` alone would pick uvloop)."""
    backend = anyio_backend
    if isinstance(backend, tuple):
        return ["--backend", "asyncio"]
    if backend == "asyncio":
        return ["--backend", "asyncio", "--no-uvloop"]
    return ["--backend", str(backend)]


@pytest.fixture
def echo_lines() -> Iterator[str]:
    """EchoLines registered as ``echo_lines`` for the test (auto-detection
    offers it then); its name."""
    register_protocol("echo_lines", EchoLines)
    yield "echo_lines"
    unregister_protocol("echo_lines")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        is_async = function is not None and inspect.iscoroutinefunction(function)
        if is_async and item.get_closest_marker("anyio") is None:
            raise pytest.UsageError(f"{item.nodeid}: async test without pytestmark = pytest.mark.anyio")
