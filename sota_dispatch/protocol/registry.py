"""Which protocols exist: explicit registrations plus installed plugins.

A plugin distribution declares its dispatcher under the entry-point group
``sota_dispatch.protocols``; the registry scans that group once per process,
lazily (a scan costs about 2 ms), and imports a plugin only when it is asked
for. Two sources claiming one name is an error that names both, because
silently picking one would serve the wrong protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..errors import DuplicateProtocolError, PluginLoadError, UnknownProtocolError
from .options import OptionSchema
from .semantics import FrameSemantics
from .sniff import Match

if TYPE_CHECKING:
    from anyio.abc import ByteStream

    from .context import ConnectionContext
    from .dispatcher import Dispatcher

__all__ = [
    "ENTRY_POINT_GROUP",
    "DispatcherFactory",
    "Match",
    "ProtocolInfo",
    "available_protocols",
    "get_protocol",
    "register_protocol",
    "sniff",
    "unregister_protocol",
]

#: The entry-point group a plugin distribution registers its protocol under.
ENTRY_POINT_GROUP = "sota_dispatch.protocols"

#: Anything that builds the dispatcher of one connection; a
#: :class:`~sota_dispatch.Dispatcher` subclass is one.
DispatcherFactory: TypeAlias = "Callable[[ByteStream, ConnectionContext], Dispatcher]"


@attrs.frozen
class ProtocolInfo:
    """A registered protocol: its name, how to build it, where it came from."""

    name: str
    factory: DispatcherFactory
    #: Who registered it, for error messages: a module or an entry point.
    source: str
    description: str = ""
    #: The protocol's options, for every place they come from.
    options: OptionSchema = attrs.field(factory=OptionSchema)
    sniffer: Callable[[bytes], Match] | None = None
    #: The protocol's class when the bundled proxy can forward it (it
    #: defines the codecs of both sides); None: served locally only.
    protocol_class: type[FrameSemantics] | None = None

    def sniff(self, prefix: bytes) -> Match:
        """Apply the protocol's sniffer; NO when it has none."""
        return Match.NO if self.sniffer is None else self.sniffer(prefix)


def _info(name: str, factory: Any, source: str) -> ProtocolInfo:
    doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
    sniffer = getattr(factory, "sniff", None)
    options = getattr(factory, "options", None)
    if isinstance(options, Mapping) and not isinstance(options, OptionSchema):
        options = OptionSchema.from_help(options)  # a plain factory's {name: help}
    proxiable = isinstance(factory, type) and issubclass(factory, FrameSemantics) and factory.proxiable
    return ProtocolInfo(
        name=name,
        factory=factory,
        source=source,
        description=doc[0] if doc else "",
        options=options if isinstance(options, OptionSchema) else OptionSchema(),
        sniffer=sniffer if callable(sniffer) else None,
        protocol_class=factory if proxiable else None,
    )


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._explicit: dict[str, ProtocolInfo] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._scan_error: DuplicateProtocolError | None = None
        self._loaded: dict[str, ProtocolInfo] = {}

    def _scan(self) -> dict[str, EntryPoint]:
        with self._lock:
            if self._scan_error is not None:
                raise self._scan_error.with_traceback(None)
            if self._entry_points is None:
                found: dict[str, EntryPoint] = {}
                for ep in entry_points(group=ENTRY_POINT_GROUP):
                    other = found.get(ep.name)
                    if other is not None and other.value != ep.value:
                        # Remembered: the installed set is wrong until the
                        # process restarts, and a rescan costs ~2 ms a call.
                        self._scan_error = DuplicateProtocolError(
                            f"protocol {ep.name!r} is declared by {_describe(other)} and by {_describe(ep)}"
                        )
                        raise self._scan_error
                    found[ep.name] = ep
                self._entry_points = found
            return self._entry_points

    def register(self, info: ProtocolInfo) -> None:
        eps = self._scan()
        existing = self._explicit.get(info.name)
        if existing is None and info.name in eps:
            existing = self._loaded.get(info.name) or ProtocolInfo(
                name=info.name, factory=_unloaded, source=_describe(eps[info.name])
            )
        if existing is not None:
            raise DuplicateProtocolError(
                f"protocol {info.name!r} is already registered by {existing.source}; {info.source} registers it again"
            )
        self._explicit[info.name] = info

    def unregister(self, name: str) -> None:
        self._explicit.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._explicit) | set(self._scan()))

    def get(self, name: str) -> ProtocolInfo:
        info = self._explicit.get(name) or self._loaded.get(name)
        if info is not None:
            return info
        ep = self._scan().get(name)
        if ep is None:
            available = ", ".join(self.names()) or "none installed"
            raise UnknownProtocolError(f"unknown protocol {name!r}; available: {available}")
        try:
            factory = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"protocol {name!r} ({_describe(ep)}) failed to load: {exc!r}") from exc
        info = _info(name, factory, _describe(ep))
        self._loaded[name] = info
        return info


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" in distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.value!r}{where}"


def _unloaded(stream: ByteStream, context: ConnectionContext) -> Dispatcher:  # pragma: no cover
    raise AssertionError("placeholder factory is never called")


_REGISTRY = _Registry()


def register_protocol(name: str, factory: DispatcherFactory, *, source: str | None = None) -> ProtocolInfo:
    """Register ``factory`` under ``name`` for this process.

    ``factory`` is usually a :class:`~sota_dispatch.Dispatcher` subclass; its
    ``sniff`` classmethod, ``options`` and docstring become the protocol's
    sniffer, options and description, and the proxy can forward it when it
    defines its codecs. Raises
    :class:`~sota_dispatch.DuplicateProtocolError`, naming both sources, when
    the name is taken by another registration or an installed plugin.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"invalid protocol name {name!r}: use letters, digits, '_' and '-'")
    if source is None:
        module = getattr(factory, "__module__", "?")
        qualname = getattr(factory, "__qualname__", repr(factory))
        source = f"register_protocol({module}.{qualname})"
    info = _info(name, factory, source)
    _REGISTRY.register(info)
    return info


def unregister_protocol(name: str) -> None:
    """Forget an explicit registration (installed plugins stay visible)."""
    _REGISTRY.unregister(name)


def get_protocol(name: str) -> ProtocolInfo:
    """Return the protocol registered or installed under ``name``.

    Raises :class:`~sota_dispatch.UnknownProtocolError` listing the available
    names when there is none.
    """
    return _REGISTRY.get(name)


def available_protocols() -> list[str]:
    """Names of every registered or installed protocol, sorted."""
    return _REGISTRY.names()


def sniff(prefix: bytes, names: list[str] | None = None) -> dict[str, Match]:
    """Ask each protocol (or those in ``names``) whether ``prefix`` is its own.

    Returns ``{name: Match}``. A caller doing auto-detection picks the single
    YES, reads more while any says NEED_MORE, and gives up when all say NO.
    """
    return {name: get_protocol(name).sniff(prefix) for name in (names or available_protocols())}
