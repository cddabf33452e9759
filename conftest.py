"""Shared by every test directory: every async test runs on asyncio and on trio.

Modules with async tests set ``pytestmark = pytest.mark.anyio``; collection
fails for an async test without it, so none can silently run on one backend
(or not at all).
"""

from __future__ import annotations

import inspect

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        is_async = function is not None and inspect.iscoroutinefunction(function)
        if is_async and item.get_closest_marker("anyio") is None:
            raise pytest.UsageError(f"{item.nodeid}: async test without pytestmark = pytest.mark.anyio")
