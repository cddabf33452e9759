"""Named plugins: explicit registrations plus installed entry points.

Protocols (group ``sota_dispatch.protocols``) and stream filters (group
``sota_dispatch.filters``) are found the same way: a distribution declares
a name in the group, the registry scans the group once per process, lazily
(a scan costs about 2 ms), and imports a plugin only when it is asked for.
Two sources claiming one name is an error that names both, because silently
picking one would run the wrong code.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Protocol, TypeVar

from ..errors import PluginLoadError, SotaError

__all__ = ["PluginRegistry", "describe_entry_point"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...


InfoT = TypeVar("InfoT", bound=_Named)


class PluginRegistry(Generic[InfoT]):
    """The plugins of one entry-point group, by name.

    ``make(name, loaded object, source)`` builds the info kept for a plugin;
    ``noun`` names the kind in messages; ``unknown`` and ``duplicate`` are
    the errors raised for a name nobody declares and one declared twice.
    """

    def __init__(
        self,
        group: str,
        noun: str,
        make: Callable[[str, Any, str], InfoT],
        unknown: Callable[[str], SotaError],
        duplicate: Callable[[str], SotaError],
    ) -> None:
        self.group = group
        self.noun = noun
        self._make = make
        self._unknown = unknown
        self._duplicate = duplicate
        self._lock = threading.Lock()
        self._explicit: dict[str, InfoT] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._scan_error: SotaError | None = None
        self._loaded: dict[str, InfoT] = {}

    def _scan(self) -> dict[str, EntryPoint]:
        with self._lock:
            if self._scan_error is not None:
                raise self._scan_error.with_traceback(None)
            if self._entry_points is None:
                found: dict[str, EntryPoint] = {}
                for ep in entry_points(group=self.group):
                    other = found.get(ep.name)
                    if other is not None and other.value != ep.value:
                        # Remembered: the installed set is wrong until the
                        # process restarts, and a rescan costs ~2 ms a call.
                        self._scan_error = self._duplicate(
                            f"{self.noun} {ep.name!r} is declared by {describe_entry_point(other)} "
                            f"and by {describe_entry_point(ep)}"
                        )
                        raise self._scan_error
                    found[ep.name] = ep
                self._entry_points = found
            return self._entry_points

    def register(self, info: InfoT) -> None:
        """Add an explicit registration; a name taken by another is an error naming both."""
        eps = self._scan()
        existing = self._explicit.get(info.name) or self._loaded.get(info.name)
        source = existing.source if existing is not None else None
        if source is None and info.name in eps:
            source = describe_entry_point(eps[info.name])
        if source is not None:
            raise self._duplicate(
                f"{self.noun} {info.name!r} is already registered by {source}; {info.source} registers it again"
            )
        self._explicit[info.name] = info

    def unregister(self, name: str) -> None:
        self._explicit.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._explicit) | set(self._scan()))

    def get(self, name: str) -> InfoT:
        info = self._explicit.get(name) or self._loaded.get(name)
        if info is not None:
            return info
        ep = self._scan().get(name)
        if ep is None:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)  # a typo, not a guess
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self._unknown(
                f"unknown {self.noun} {name!r}{hint}; available: {', '.join(names) or 'none installed'}"
            )
        try:
            loaded = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"{self.noun} {name!r} ({describe_entry_point(ep)}) failed to load: {exc!r}") from exc
        info = self._make(name, loaded, describe_entry_point(ep))
        self._loaded[name] = info
        return info


def describe_entry_point(ep: EntryPoint) -> str:
    """An entry point as error messages name it: its target and distribution."""
    dist = getattr(ep, "dist", None)
    where = f" in distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.value!r}{where}"
