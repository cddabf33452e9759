"""A protocol's options: one schema for every place, one validation path."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import anyio
import pytest
from anyio.streams.stapled import StapledObjectStream

from sota_dispatch import (
    ConnectionContext,
    Dispatcher,
    Failure,
    FrameSemantics,
    Option,
    OptionSchema,
    get_protocol,
    register_protocol,
    unregister_protocol,
)


class Tuned(Dispatcher):
    """A protocol with options of every place and a rule across two."""

    options: ClassVar[OptionSchema] = OptionSchema(
        depth=Option("how deep", Option.positive_int, 8),
        quiet=Option("1: say nothing", Option.flag, False, places=frozenset({"service"})),
        wait=Option("seconds", Option.seconds, None, places=frozenset({"service", "listener", "cluster"})),
        user=Option("who", Option.text_of_at_most(4), places=frozenset({"cluster"})),
        password=Option("secret", places=frozenset({"cluster"})),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any], place: Any) -> dict[str, str]:
        if (values.get("user") is None) != (values.get("password") is None):
            return {"password" if values.get("password") is None else "user": "user and password go together"}
        return {}


def test_values_are_read_and_defaulted_per_place() -> None:
    assert Tuned.option_values({"depth": "3"}, "service") == {"depth": 3, "quiet": False, "wait": None}
    assert Tuned.option_values({"wait": "0.5", "user": "me", "password": "pw"}, "cluster") == {
        "wait": 0.5,
        "user": "me",
        "password": "pw",
    }


def test_every_problem_is_named_by_its_option() -> None:
    errors = Tuned.option_errors({"depth": "0", "quiet": "yes", "nope": "1", "user": "x"}, "service")
    assert errors == {
        "depth": "expected a positive integer, got '0'",
        "quiet": "expected 0 or 1, got 'yes'",
        "nope": "unknown option (options: depth, quiet, wait)",
        "user": "not an option of a service (it applies to: cluster; options here: depth, quiet, wait)",
    }


def test_an_option_of_another_place_is_refused_not_ignored() -> None:
    assert set(Tuned.option_errors({"quiet": "1"}, "listener")) == {"quiet"}
    assert set(Tuned.option_errors({"depth": "2"}, "cluster")) == {"depth"}
    assert Tuned.option_errors({"depth": "2"}, "listener") == {}


def test_rules_across_options_run_once_each_value_is_fine() -> None:
    assert Tuned.option_errors({"user": "me"}, "cluster") == {"password": "user and password go together"}
    assert Tuned.option_errors({"user": "toolong"}, "cluster") == {"user": "at most 4 bytes"}
    assert Tuned.option_errors({"user": "me", "password": "pw"}, "cluster") == {}


def test_validate_options_reports_every_bad_option_at_once() -> None:
    with pytest.raises(ValueError, match="depth: expected a positive integer") as info:
        Tuned.validate_options({"depth": "x", "wait": "-1"})
    assert "wait: expected a number of seconds above zero, got '-1'" in str(info.value)


def test_seconds_refuse_what_is_not_a_finite_positive_number() -> None:
    for raw in ("0", "-1", "nan", "inf", "soon", ""):
        with pytest.raises(ValueError, match="seconds above zero"):
            Option.seconds(raw)
    assert Option.seconds("0.25") == 0.25


def test_a_schema_extends_with_or() -> None:
    class Deeper(Tuned):
        options: ClassVar[OptionSchema] = Tuned.options | OptionSchema(depth=Option("deeper", Option.positive_int, 99))

    assert Deeper.option_values({}, "listener") == {"depth": 99, "wait": None}
    assert Tuned.option_values({}, "listener") == {"depth": 8, "wait": None}
    with pytest.raises(TypeError, match="expected an Option"):
        OptionSchema(depth="help text")  # type: ignore[arg-type]


class OldStyle(Dispatcher):
    """A 0.1 subclass: options as name -> help, read with option(name, default, convert)."""

    options = {"greeting": "what to say"}  # type: ignore[assignment]  # noqa: RUF012


def test_a_01_options_mapping_still_works() -> None:
    assert isinstance(OldStyle.options, OptionSchema)
    assert OldStyle.options.help("service") == {"greeting": "what to say"}
    assert OldStyle.option_errors({"greeting": "hi"}) == {}
    assert set(OldStyle.option_errors({"other": "1"})) == {"other"}


def test_a_connection_reads_its_options() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    stream: Any = StapledObjectStream(send, receive)
    with send, receive:
        tuned = Tuned(stream, ConnectionContext(connection_id=1, options={"depth": "5"}))
        assert tuned.option("depth") == 5
        assert tuned.option("quiet") is False
        old = OldStyle(stream, ConnectionContext(connection_id=2, options={"greeting": "hi"}))
        assert old.option("greeting") == "hi"
        assert old.option("greeting", "hello", str.upper) == "HI"
        assert old.option("absent", 7, int) == 7
        with pytest.raises(KeyError, match="no option 'absent'"):
            old.option("absent")


class Halfway(FrameSemantics):
    @classmethod
    def server_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> Any:
        return None


class Both(Halfway):
    @classmethod
    def client_codec(cls, options: Mapping[str, Any], max_frame_size: int) -> Any:
        return None


class ServedBoth(Both, Dispatcher):
    """Both codecs and what the proxy needs besides (the registry checks)."""

    async def serve(self) -> None:
        return None

    @classmethod
    def encode_request(cls, frame: Any, upstream_id: int) -> bytes:
        return b""

    @classmethod
    def encode_response(cls, response: Any, request: Any) -> bytes:
        return b""

    @classmethod
    def error_reply(cls, request: Any, failure: Failure, detail: str = "") -> bytes:
        return b""

    @classmethod
    def response_id(cls, frame: Any) -> int | None:
        return None


def test_a_class_with_both_codecs_is_proxiable() -> None:
    assert not Dispatcher.proxiable
    assert not Halfway.proxiable
    assert Both.proxiable
    assert ServedBoth.proxiable
    assert Both.protocol_name == "Both"  # a class without a name gets its own


@pytest.fixture
def served_both() -> Iterator[str]:
    register_protocol("test_served_both", ServedBoth)
    register_protocol("test_old_style", OldStyle)
    yield "test_served_both"
    unregister_protocol("test_served_both")
    unregister_protocol("test_old_style")


def test_the_registry_offers_proxiable_classes_to_the_proxy(served_both: str) -> None:
    assert get_protocol(served_both).protocol_class is ServedBoth
    assert get_protocol("test_old_style").protocol_class is None
