"""FrameSemantics.bound_semantics: the per-frame classmethods, bound once per class."""

from __future__ import annotations

from typing import Any

from sota_dispatch import FrameSemantics
from sota_dispatch.protocol.semantics import BoundSemantics


class Base(FrameSemantics):
    protocol_name = "base"

    @classmethod
    def is_request(cls, frame: Any) -> bool:
        return bool(frame.startswith(b"?"))

    @classmethod
    def encode_request(cls, frame: Any, upstream_id: int) -> bytes:
        return bytes(frame) + str(upstream_id).encode() + cls.protocol_name.encode()


class Derived(Base):
    protocol_name = "derived"

    @classmethod
    def is_oneway(cls, frame: Any) -> bool:
        return bool(frame.endswith(b"!"))


def test_bound_semantics_call_the_class_own_methods() -> None:
    bound = Derived.bound_semantics()
    assert isinstance(bound, BoundSemantics)
    assert bound.protocol is Derived
    assert bound.protocol_name == "derived"
    assert bound.is_request(b"?x")
    assert not bound.is_request(b"x")
    assert bound.is_oneway(b"?x!")
    assert not bound.is_oneway(b"?x")
    assert bound.encode_request(b"q", 7) == b"q7derived"  # cls is the subclass
    assert bound.timeout(b"q") is None  # the defaults where nothing overrides them
    assert dict(bound.routing_attributes(b"q")) == {}


def test_each_class_gets_its_own_bound_semantics_once() -> None:
    derived = Derived.bound_semantics()
    assert Derived.bound_semantics() is derived  # made once, then kept
    base = Base.bound_semantics()
    assert base is not derived
    assert base.protocol is Base
    assert not base.is_oneway(b"?x!")  # the parent's default, not the subclass's override
    assert base.encode_request(b"q", 7) == b"q7base"


def test_the_defaults_answer_as_before_whether_called_on_the_class_an_instance_or_bound() -> None:
    # The per-frame defaults are static methods now (compiled functions in
    # the compiled build): the class, an instance and the bound semantics
    # all give what the classmethods gave.
    class Plain(FrameSemantics):
        protocol_name = "plain"

    bound = Plain.bound_semantics()
    for owner in (Plain, Plain(), bound):
        assert owner.is_request(b"x") is True
        assert owner.is_oneway(b"x") is False
        assert owner.is_heartbeat(b"x") is False
        assert owner.response_id(b"x") is None
        assert owner.status(b"x") is None
        assert owner.timeout(b"x") is None


def test_a_subclass_overrides_a_default_with_a_classmethod_and_calls_it_through_super() -> None:
    class Timed(Base):
        protocol_name = "timed"

        @classmethod
        def timeout(cls, frame: Any) -> float | None:
            inherited = super().timeout(frame)
            return 2.5 if inherited is None else inherited

    assert Timed.bound_semantics().timeout(b"q") == 2.5
    assert Base.bound_semantics().timeout(b"q") is None
