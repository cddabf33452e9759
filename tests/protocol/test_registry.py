from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from sota_dispatch import (
    Dispatcher,
    DuplicateProtocolError,
    Match,
    Option,
    OptionSchema,
    PluginLoadError,
    UnknownProtocolError,
    available_protocols,
    get_protocol,
    register_protocol,
    sniff,
    unregister_protocol,
)
from sota_dispatch.protocol import registry
from sota_dispatch.protocol.registry import _new_registry
from sota_dispatch.testing import EchoLines


class Magic(Dispatcher):
    """Speaks only after the magic bytes MG."""

    options: ClassVar[OptionSchema] = OptionSchema(greeting=Option("what to say"))

    @classmethod
    def sniff(cls, prefix: bytes) -> Match:
        if len(prefix) < 2:
            return Match.NEED_MORE if b"MG".startswith(prefix) else Match.NO
        return Match.YES if prefix.startswith(b"MG") else Match.NO

    async def serve(self) -> None:
        await self.reader.read_exactly(2)


@pytest.fixture
def installed(install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """echo_lines installed as a plugin is, by its entry point, and a fresh
    process-wide registry that sees it; its name."""
    install_plugin("echo-lines", {"echo_lines": "sota_dispatch.testing:EchoLines"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", _new_registry())
    return "echo_lines"


@pytest.fixture
def magic() -> Iterator[str]:
    register_protocol("test_magic", Magic)
    yield "test_magic"
    unregister_protocol("test_magic")


def test_registered_protocol_is_found_with_metadata(magic: str) -> None:
    info = get_protocol(magic)
    assert info.factory is Magic
    assert info.description == "Speaks only after the magic bytes MG."
    assert info.options.help("service") == {"greeting": "what to say"}
    assert info.protocol_class is None  # no codecs: a local service only
    assert "tests.test_registry.Magic" in info.source or "test_registry.Magic" in info.source
    assert magic in available_protocols()


def test_duplicate_name_names_both_sources(magic: str) -> None:
    with pytest.raises(DuplicateProtocolError) as info:
        register_protocol(magic, Magic, source="second registration")
    message = str(info.value)
    assert "test_registry.Magic" in message
    assert "second registration" in message


def test_duplicate_of_an_installed_plugin_names_the_entry_point(installed: str) -> None:
    with pytest.raises(DuplicateProtocolError, match=r"entry point 'sota_dispatch.testing:EchoLines'"):
        register_protocol(installed, Magic)


def test_unknown_protocol_lists_the_available_ones(installed: str) -> None:
    with pytest.raises(UnknownProtocolError) as info:
        get_protocol("nope")
    assert "'nope'" in str(info.value)
    assert installed in str(info.value)


def test_installed_plugin_is_discovered_through_its_entry_point(installed: str) -> None:
    info = get_protocol(installed)
    assert info.source.startswith("entry point 'sota_dispatch.testing:EchoLines'")
    assert "distribution echo-lines 1.0" in info.source
    assert (info.factory, info.protocol_class) == (EchoLines, EchoLines)
    assert "max_line" in info.options


@pytest.mark.parametrize("name", ["", "has space", "semi;colon"])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid protocol name"):
        register_protocol(name, Magic)


def test_sniff_reports_each_protocol(installed: str, magic: str) -> None:
    assert sniff(b"M", [magic])[magic] is Match.NEED_MORE
    assert sniff(b"MG\x00", [magic])[magic] is Match.YES
    assert sniff(b"xx", [magic])[magic] is Match.NO
    verdicts = sniff(b"echo:1\r\n")
    assert verdicts[installed] is Match.YES
    assert verdicts[magic] is Match.NO


def test_a_dispatcher_without_sniffer_never_claims_a_connection() -> None:
    class Plain(Dispatcher):
        async def serve(self) -> None:
            return None

    register_protocol("test_plain", Plain)
    try:
        assert sniff(b"anything", ["test_plain"]) == {"test_plain": Match.NO}
    finally:
        unregister_protocol("test_plain")


def test_broken_plugin_is_a_clear_error(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {"broken_plugin": "raise ImportError('missing dependency xyz')\n"}
    install_plugin("broken-plugin", {"broken": "broken_plugin:Broken"}, modules=broken)
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = _new_registry()  # the process-wide registry has scanned already
    assert "broken" in fresh.names()
    with pytest.raises(PluginLoadError, match=r"'broken'.*broken-plugin 1.0.*missing dependency xyz"):
        fresh.get("broken")


def test_two_plugins_with_one_name_name_both(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for dist in ("one", "two"):
        install_plugin(dist, {"same": f"{dist}_mod:Cls"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateProtocolError) as raised:
        _new_registry().names()
    message = str(raised.value)
    assert "'same'" in message
    assert "one_mod:Cls" in message
    assert "two_mod:Cls" in message


def test_a_misspelt_protocol_gets_a_hint(installed: str) -> None:
    with pytest.raises(UnknownProtocolError, match=r"unknown protocol 'echo-lines' \(did you mean 'echo_lines'\?\)"):
        get_protocol("echo-lines")


class _LineCodec:
    """A codec of lines that lacks ``buffered`` (unless a subclass adds it)."""

    ready = True

    def feed(self, data: bytes) -> list[bytes]:
        return [data]

    def data_to_send(self) -> bytes:
        return b""

    def check(self) -> None:
        pass


class HalfProxiable(Dispatcher):
    """Defines both codecs, and nothing else the proxy needs."""

    @classmethod
    def server_codec(cls, options: object, max_frame_size: int) -> _LineCodec:  # type: ignore[override]
        return _LineCodec()

    @classmethod
    def client_codec(cls, options: object, max_frame_size: int) -> _LineCodec:  # type: ignore[override]
        return _LineCodec()


def test_an_incomplete_proxiable_class_fails_when_registered_naming_what_it_lacks() -> None:
    with pytest.raises(PluginLoadError) as raised:
        register_protocol("half", HalfProxiable)
    message = str(raised.value)
    for lack in ("no encode_request()", "no encode_response()", "no error_reply()", "no response_id()"):
        assert lack in message
    assert "server_codec() returns a codec without buffered" in message
    assert "half" not in available_protocols()  # not registered: it fails now, not per connection


def test_an_incomplete_plugin_fails_when_loaded(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("half-plugin", {"half": "tests_half_plugin:HalfProxiable"}, modules={"tests_half_plugin": HALF})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match=r"'half' \(entry point .*half-plugin 1.0.*\) defines both codecs"):
        _new_registry().get("half")


HALF = """
from sota_dispatch import Dispatcher


class Codec:
    ready = True
    buffered = 0

    def feed(self, data):
        return [data]

    def data_to_send(self):
        return b""

    def check(self):
        pass


class HalfProxiable(Dispatcher):
    pool_modes = frozenset({"pipeline"})

    @classmethod
    def server_codec(cls, options, max_frame_size):
        return Codec()

    @classmethod
    def client_codec(cls, options, max_frame_size):
        return Codec()
"""
