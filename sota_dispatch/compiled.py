"""Which build is running: the pure-Python reference or the compiled one.

The hot modules (the codecs, hessian2 and ZMTP framing; the core's reader,
outbox, codec loop and multiplexer; the proxy's exchange, timers and pool)
can be compiled with mypyc into C extensions that sit beside their ``.py`` sources in a platform wheel
(``.ci/build-compiled``); Python imports an extension in preference to the
source beside it, and the pure-Python modules run wherever no compiled
wheel exists, as msgpack's and PyYAML's optional C paths do. The sources
stay the reference: both builds pass the same tests.

What is reported is what Python *would import now* (each module's spec),
not what a wheel holds: a source tree earlier on ``sys.path`` shadows an
installed compiled wheel, and this says so.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util

import attrs

__all__ = ["BuildInfo", "build_info"]


def _distributions() -> list[str]:
    """sota-dispatch and every installed protocol or filter plugin's
    distribution, bundled or third-party: their compiled modules count too."""
    # Imported here: the package's __init__ imports this module first.
    from .filters.registry import FILTER_ENTRY_POINT_GROUP
    from .protocol.registry import ENTRY_POINT_GROUP

    names = {"sota-dispatch"}
    for group in (ENTRY_POINT_GROUP, FILTER_ENTRY_POINT_GROUP):
        for entry in importlib.metadata.entry_points(group=group):
            if entry.dist is not None:
                names.add(entry.dist.name)
    return sorted(names)


@attrs.frozen
class BuildInfo:
    """The modules imported from C extensions (sorted), if any."""

    compiled: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``compiled (mypyc)`` or ``pure Python``."""
        return "compiled (mypyc)" if self.compiled else "pure Python"

    def describe(self) -> str:
        """One line for ``--version`` and bench headers."""
        if not self.compiled:
            return self.kind
        count = len(self.compiled)
        return f"{self.kind}: {count} module{'' if count == 1 else 's'}"


def _extension_modules(distribution: str) -> list[str]:
    """Module names of the C extensions a distribution installed (mypyc's
    shared ``*__mypyc`` runtime libraries left out)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = []
    for file in files:
        path = str(file)
        suffix = next((s for s in importlib.machinery.EXTENSION_SUFFIXES if path.endswith(s)), None)
        if suffix is None or "__mypyc" in path:
            continue
        names.append(path[: -len(suffix)].replace("/", ".").replace("\\", "."))
    return names


def _imports_extension(module: str) -> bool:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


@functools.cache
def build_info() -> BuildInfo:
    """Which build runs (computed once: finding a module's spec imports its
    parent package)."""
    candidates = [name for dist in _distributions() for name in _extension_modules(dist)]
    return BuildInfo(compiled=tuple(sorted(name for name in candidates if _imports_extension(name))))
