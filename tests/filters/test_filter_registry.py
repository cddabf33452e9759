"""Stream filters are found as protocols are: registrations and installed entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sota_dispatch import DuplicateFilterError, PluginLoadError, UnknownFilterError
from sota_dispatch.filters import FilterRequest, StreamFilter, available_filters, get_filter, register_filter
from sota_dispatch.filters import registry as filter_registry
from sota_dispatch.filters.registry import _new_registry

#: A filter distribution's module, as a third party would write it.
TAGGER = '''
from sota_dispatch.filters import StreamFilter
from sota_dispatch import Option, OptionSchema
from sota_dispatch.protocol.options import FILTER


class Tagger(StreamFilter):
    """Tags requests (a third-party filter)."""

    options = OptionSchema(tag=Option("the tag", Option.text, "t", FILTER))

    def on_request(self, request):
        request.metadata["tag"] = self.values["tag"]
'''


def test_a_filter_installed_by_its_entry_point_is_found(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        "tagger", {"tagger": "tagger_mod:Tagger"}, modules={"tagger_mod": TAGGER}, group="sota_dispatch.filters"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(filter_registry, "_REGISTRY", _new_registry())
    assert "tagger" in available_filters()
    info = get_filter("tagger")
    assert info.description == "Tags requests (a third-party filter)."
    assert "tagger 1.0" in info.source
    assert list(info.options) == ["tag"]
    with pytest.raises(
        DuplicateFilterError, match=r"'tagger' is already registered by entry point 'tagger_mod:Tagger'"
    ):
        register_filter("tagger", StreamFilter)


def test_the_cli_lists_installed_filters(install_plugin: Callable[..., dict[str, str]]) -> None:
    env = install_plugin(
        "tagger", {"tagger": "tagger_mod:Tagger"}, modules={"tagger_mod": TAGGER}, group="sota_dispatch.filters"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--list-filters"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    lines = done.stdout.splitlines()
    names = [line.split("\t")[0] for line in lines if not line.startswith(" ")]
    assert names == ["fault_inject", "local_rate_limit", "rbac", "tagger"]
    assert "    tag: ...\tthe tag" in lines


def test_two_distributions_declaring_one_filter_name_both(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for dist in ("one", "two"):
        install_plugin(dist, {"same": f"{dist}_mod:Cls"}, group="sota_dispatch.filters")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateFilterError, match=r"stream filter 'same' is declared by ") as raised:
        _new_registry().names()
    assert "one_mod:Cls" in str(raised.value)
    assert "two_mod:Cls" in str(raised.value)


def test_a_broken_or_wrong_plugin_is_a_clear_error(
    install_plugin: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = {"broken_mod": "raise ImportError('missing dependency xyz')\n", "wrong_mod": "class NotAFilter: pass\n"}
    install_plugin(
        "odd",
        {"broken": "broken_mod:F", "wrong": "wrong_mod:NotAFilter"},
        modules=modules,
        group="sota_dispatch.filters",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = _new_registry()
    with pytest.raises(PluginLoadError, match=r"stream filter 'broken' .*odd 1.0.*missing dependency xyz"):
        fresh.get("broken")
    with pytest.raises(PluginLoadError, match=r"stream filter 'wrong' .* not a StreamFilter subclass"):
        fresh.get("wrong")


def test_registrations_are_checked_and_can_be_undone() -> None:
    class Mine(StreamFilter):
        def on_request(self, request: FilterRequest) -> None:
            return None

    with pytest.raises(ValueError, match="invalid stream filter name"):
        register_filter("bad name", Mine)
    with pytest.raises(TypeError, match="expected a StreamFilter subclass"):
        register_filter("mine", object)  # type: ignore[arg-type]
    with pytest.raises(DuplicateFilterError, match="'rbac' is already registered by entry point"):
        register_filter("rbac", Mine)
    info = register_filter("test_mine", Mine)
    try:
        assert get_filter("test_mine") is info
        assert "register_filter(" in info.source
    finally:
        filter_registry.unregister_filter("test_mine")
    with pytest.raises(UnknownFilterError, match=r"unknown stream filter 'test_mine'; available: fault_inject"):
        get_filter("test_mine")
