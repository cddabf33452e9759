"""The pure-Python source of a compiled module, loaded beside it.

A compiled build (see :mod:`sota_dispatch.compiled`) must behave exactly as
its sources do; the way to check that is to feed both the same inputs in
one process and compare. :func:`pure_python` loads a module's ``.py``
source under another name (``_sota_pure.`` + its name), with every module
it imports relatively that is compiled too loaded the same way, and every
other one (value classes, errors) shared with the compiled build, so both
sides build and raise the same classes and results compare with ``==``.
"""

from __future__ import annotations

import enum
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from ..compiled import build_info

__all__ = ["PURE_PREFIX", "both_builds", "build_spelling", "outcome", "plain", "pure_python"]

#: The name prefix of the pure copies.
PURE_PREFIX = "_sota_pure."


class _Shared(importlib.abc.Loader):
    """Aliases a module that is not compiled: both builds share it."""

    def __init__(self, real: str) -> None:
        self.real = real
        self.real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.real)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Already executed, under its own name; the import system has just
        put the alias's spec on it, and the module keeps its own."""
        module.__spec__ = self.real_spec


class _Package(importlib.abc.Loader):
    """A package of the pure copies: its path, not its ``__init__`` (whose
    imports would load the whole plugin again)."""

    def __init__(self, path: list[str]) -> None:
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__path__ = list(self.path)


class _PureFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == PURE_PREFIX[:-1]:  # the top: a package of no files
            top = importlib.machinery.ModuleSpec(fullname, _Package([]), is_package=True)
            top.submodule_search_locations = []
            return top
        if not fullname.startswith(PURE_PREFIX):
            return None
        real = fullname[len(PURE_PREFIX) :]
        spec = importlib.util.find_spec(real)
        if spec is None:
            return None
        if spec.submodule_search_locations is not None:
            locations = list(spec.submodule_search_locations)
            package = importlib.machinery.ModuleSpec(fullname, _Package(locations), is_package=True)
            package.submodule_search_locations = locations
            return package
        if isinstance(spec.loader, importlib.machinery.ExtensionFileLoader) and spec.origin:
            source = Path(spec.origin).parent / (real.rpartition(".")[2] + ".py")
            return importlib.util.spec_from_file_location(fullname, source)
        return importlib.machinery.ModuleSpec(fullname, _Shared(real))


_FINDER = _PureFinder()


def pure_python(name: str) -> ModuleType:
    """The module ``name`` as its ``.py`` source runs it, whatever build is
    installed (the module itself if it is not compiled)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return importlib.import_module(PURE_PREFIX + name)


def both_builds(name: str) -> tuple[ModuleType, ModuleType]:
    """``(compiled, pure)``: the module ``name`` as installed, compiled,
    and its pure-Python source, for a test that compares the two.

    Skips the test when ``name`` is not compiled here (nothing to compare:
    the pure-Python build runs), unless ``SOTA_EXPECT_COMPILED`` is set, as
    CI sets it for its compiled run: then a module that should be compiled
    but is not fails the test.
    """
    import pytest

    compiled = importlib.import_module(name)
    if name not in build_info().compiled:
        why = f"{name} is not compiled here (the pure-Python build runs)"
        if os.environ.get("SOTA_EXPECT_COMPILED"):
            pytest.fail(why)
        pytest.skip(why)
    return compiled, pure_python(name)


@contextmanager
def build_spelling(module: ModuleType, compiled: bool) -> Iterator[None]:
    """Run the block with the compiled build's spelling of ``module``
    (``compiled=True``) or the interpreter's, for a module that says some
    things two ways and picks one by the ``_COMPILED`` flag it sets itself.

    The pure-Python module runs either (the flag is a module global, set
    for the block and restored); a compiled module runs its own only, and
    the other skips the test.
    """
    import pytest

    if str(getattr(module, "__file__", "")).endswith(".py"):
        saved = getattr(module, "_COMPILED")  # noqa: B009  # a module's own flag, not in its type
        setattr(module, "_COMPILED", compiled)  # noqa: B010
        try:
            yield
        finally:
            setattr(module, "_COMPILED", saved)  # noqa: B010
    elif compiled:
        yield
    else:
        pytest.skip("the compiled module runs its own spelling only")


def plain(value: Any) -> Any:
    """``value`` in a form that compares equal across the two builds: each
    loads its own copy of a compiled module's classes (enums, frames), so
    these become their class name and fields (an attrs class's, or those
    a plain class names in ``__match_args__``), or their value."""
    if attrs.has(type(value)):
        fields = attrs.fields(type(value))
        return type(value).__qualname__, {f.name: plain(getattr(value, f.name)) for f in fields}
    names = getattr(type(value), "__match_args__", None)
    if names is not None and not isinstance(value, tuple):  # a plain value class (frames)
        return type(value).__qualname__, {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value).__name__, [plain(item) for item in value]
    if isinstance(value, dict):
        return type(value).__qualname__, [(plain(k), plain(v)) for k, v in value.items()]
    return value


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What ``call`` did, comparable across builds: what it returned
    (:func:`plain`), or the class name and message of what it raised."""
    try:
        return "returned", plain(call(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 (any: the builds must raise the same)
        return "raised", f"{type(exc).__qualname__}: {exc}"
