"""Which protocols exist: explicit registrations plus installed plugins.

A plugin distribution declares its dispatcher under the entry-point group
``sota_dispatch.protocols``; :class:`~.plugins.PluginRegistry` scans it once
per process and imports a plugin only when it is asked for. Two sources
claiming one name is an error that names both, because silently picking
one would serve the wrong protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..errors import DuplicateProtocolError, PluginLoadError, UnknownProtocolError
from .options import OptionSchema
from .plugins import PluginRegistry
from .proxiable import proxiable_problems
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
    if proxiable:
        problems = proxiable_problems(factory)
        if problems:
            listing = "; ".join(problems)
            raise PluginLoadError(f"protocol {name!r} ({source}) defines both codecs but cannot be proxied: {listing}")
    return ProtocolInfo(
        name=name,
        factory=factory,
        source=source,
        description=doc[0] if doc else "",
        options=options if isinstance(options, OptionSchema) else OptionSchema(),
        sniffer=sniffer if callable(sniffer) else None,
        protocol_class=factory if proxiable else None,
    )


def _new_registry() -> PluginRegistry[ProtocolInfo]:
    """A registry of protocols that has not scanned yet (the process has one)."""
    return PluginRegistry(ENTRY_POINT_GROUP, "protocol", _info, UnknownProtocolError, DuplicateProtocolError)


_REGISTRY = _new_registry()


def register_protocol(name: str, factory: DispatcherFactory, *, source: str | None = None) -> ProtocolInfo:
    """Register ``factory`` under ``name`` for this process.

    ``factory`` is usually a :class:`~sota_dispatch.Dispatcher` subclass; its
    ``sniff`` classmethod, ``options`` and docstring become the protocol's
    sniffer, options and description, and the proxy can forward it when it
    defines its codecs. A class that defines both codecs but lacks what the
    proxy needs besides raises :class:`~sota_dispatch.PluginLoadError`
    naming it (see :mod:`~sota_dispatch.protocol.proxiable`). Raises
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
