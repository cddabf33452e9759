"""FilterChain on its own: order, local replies, waits, errors, route overrides.

Pure logic (no I/O): the requests are EchoLines frames, read through its
class as the proxy reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from sota_dispatch import ConnectionContext, Failure, ProtocolError
from sota_dispatch.filters import FilterChain, FilterContext, FilterRequest, LocalReply, StreamFilter
from sota_dispatch.testing import EchoLines

pytestmark = pytest.mark.anyio

CONTEXT = FilterContext("l")


def make_request(line: bytes = b"echo:hello\n") -> FilterRequest:
    return FilterRequest(line, EchoLines.bound_semantics(), "l", ConnectionContext(remote_address="10.1.2.3:4"), 7)


class Recording(StreamFilter):
    """Notes its name in the request's metadata, both ways."""

    def __init__(self, name: str, result: Any = None) -> None:
        super().__init__({}, CONTEXT)
        self.name = name
        self.result = result

    def on_request(self, request: FilterRequest) -> Any:
        request.metadata.setdefault("seen", []).append(self.name)
        return self.result

    def on_response(self, request: FilterRequest) -> None:
        request.metadata.setdefault("told", []).append(self.name)


def no_overrides(request: FilterRequest) -> Mapping[str, StreamFilter]:
    raise AssertionError("asked for route overrides although no route overrides a filter")


def test_filters_run_in_order_and_hear_of_the_answer_in_reverse() -> None:
    chain = FilterChain([("a", Recording("a")), ("b", Recording("b")), ("c", Recording("c"))])
    req = make_request()
    assert chain.run(req, no_overrides) is None
    assert req.metadata["seen"] == ["a", "b", "c"]
    req.outcome = "success"
    chain.responded(req)
    assert req.metadata["told"] == ["c", "b", "a"]
    chain.responded(req)  # told once only
    assert req.metadata["told"] == ["c", "b", "a"]


def test_a_local_reply_stops_the_chain_and_only_those_that_ran_hear_of_it() -> None:
    denied = LocalReply(Failure.DENIED, detail="no")
    chain = FilterChain([("a", Recording("a")), ("b", Recording("b", denied)), ("c", Recording("c"))])
    req = make_request()
    assert chain.run(req, no_overrides) is denied
    assert req.metadata["seen"] == ["a", "b"]
    chain.responded(req)
    assert req.metadata["told"] == ["b", "a"]


class Raising(StreamFilter):
    def __init__(self, error: Exception) -> None:
        super().__init__({}, CONTEXT)
        self.error = error

    def on_request(self, request: FilterRequest) -> None:
        raise self.error

    def on_response(self, request: FilterRequest) -> None:
        raise self.error


def test_a_filter_that_raises_fails_its_request_with_an_internal_reply(caplog: pytest.LogCaptureFixture) -> None:
    chain = FilterChain([("a", Recording("a")), ("boom", Raising(KeyError("k"))), ("c", Recording("c"))])
    req = make_request()
    with caplog.at_level(logging.ERROR, "sota_dispatch.filters.chain"):
        verdict = chain.run(req, no_overrides)
    assert isinstance(verdict, LocalReply)
    assert verdict.failure is Failure.INTERNAL
    assert "stream filter boom raised KeyError('k')" in verdict.detail
    assert req.metadata["seen"] == ["a"]
    assert "stream filter boom raised on a request" in caplog.text
    assert "KeyError" in caplog.text  # the traceback is logged


def test_on_response_errors_are_logged_and_the_rest_still_told(caplog: pytest.LogCaptureFixture) -> None:
    chain = FilterChain([("a", Recording("a")), ("boom", Raising(ValueError("x")))])
    req = make_request()
    chain.run(req, no_overrides)  # boom raises: a and boom ran
    with caplog.at_level(logging.ERROR, "sota_dispatch.filters.chain"):
        chain.responded(req)
    assert req.metadata["told"] == ["a"]
    assert "raised in on_response" in caplog.text


class Unreadable(EchoLines):
    @classmethod
    def routing_attributes(cls, frame: bytes) -> Mapping[str, str]:
        raise ProtocolError("no attributes in this frame")


class ReadsAttributes(StreamFilter):
    def __init__(self) -> None:
        super().__init__({}, CONTEXT)

    def on_request(self, request: FilterRequest) -> None:
        request.attributes  # noqa: B018


def test_a_request_whose_attributes_cannot_be_read_gets_a_codec_error_reply() -> None:
    chain = FilterChain([("reads", ReadsAttributes())])
    req = FilterRequest(b"echo:x\n", Unreadable.bound_semantics(), "l", ConnectionContext(), 1)
    verdict = chain.run(req, no_overrides)
    assert verdict == LocalReply(Failure.CODEC_ERROR, detail="no attributes in this frame")


class Odd(StreamFilter):
    def __init__(self) -> None:
        super().__init__({}, CONTEXT)

    def on_request(self, request: FilterRequest) -> Any:
        return "continue"  # not an answer the API knows


def test_a_result_that_is_no_answer_fails_the_request() -> None:
    verdict = FilterChain([("odd", Odd())]).run(make_request(), no_overrides)
    assert isinstance(verdict, LocalReply)
    assert verdict.failure is Failure.INTERNAL
    assert "not None, a LocalReply or an awaitable" in verdict.detail


class Waiting(StreamFilter):
    """Waits for ``go``, then gives ``result``."""

    def __init__(self, go: anyio.Event, result: LocalReply | None = None) -> None:
        super().__init__({}, CONTEXT)
        self.go = go
        self.result = result

    def on_request(self, request: FilterRequest) -> Any:
        request.metadata.setdefault("seen", []).append("waiting")
        return self._wait()

    async def _wait(self) -> LocalReply | None:
        await self.go.wait()
        return self.result


async def test_an_awaitable_makes_the_rest_of_the_chain_a_coroutine() -> None:
    go = anyio.Event()
    chain = FilterChain([("a", Recording("a")), ("w", Waiting(go)), ("c", Recording("c"))])
    req = make_request()
    verdict = chain.run(req, no_overrides)
    assert verdict is not None
    assert not isinstance(verdict, LocalReply)
    assert req.metadata["seen"] == ["a", "waiting"]  # c waits for w
    go.set()
    with anyio.fail_after(5):
        assert await verdict is None
    assert req.metadata["seen"] == ["a", "waiting", "c"]


async def test_two_waits_in_a_row_and_a_reply_after_a_wait() -> None:
    first, second = anyio.Event(), anyio.Event()
    refused = LocalReply(Failure.RATE_LIMITED)
    chain = FilterChain([("w1", Waiting(first)), ("w2", Waiting(second, refused)), ("c", Recording("c"))])
    req = make_request()
    verdict = chain.run(req, no_overrides)
    assert verdict is not None
    assert not isinstance(verdict, LocalReply)
    first.set()
    second.set()
    with anyio.fail_after(5):
        assert await verdict is refused
    assert req.metadata["seen"] == ["waiting", "waiting"]


class FailingWait(StreamFilter):
    def __init__(self) -> None:
        super().__init__({}, CONTEXT)

    async def on_request(self, request: FilterRequest) -> None:
        raise RuntimeError("lost")


async def test_an_async_filter_that_raises_fails_its_request() -> None:
    verdict = FilterChain([("async", FailingWait())]).run(make_request(), no_overrides)
    assert verdict is not None
    assert not isinstance(verdict, LocalReply)
    with anyio.fail_after(5):
        reply = await verdict
    assert reply is not None
    assert reply.failure is Failure.INTERNAL


def test_a_route_override_replaces_the_listener_instance_for_its_requests() -> None:
    listener_one, override = Recording("listener"), Recording("route")
    chain = FilterChain([("x", listener_one), ("y", Recording("y"))], overridden=frozenset({"x"}))
    asked: list[str] = []

    def route_filters(request: FilterRequest) -> Mapping[str, StreamFilter]:
        asked.append(request.attributes["echo"])
        return {"x": override} if request.attributes["echo"] == "special" else {}

    special, plain = make_request(b"echo:special\n"), make_request(b"echo:plain\n")
    chain.run(special, route_filters)
    chain.run(plain, route_filters)
    assert special.metadata["seen"] == ["route", "y"]
    assert plain.metadata["seen"] == ["listener", "y"]
    assert asked == ["special", "plain"]  # only for the overridden filter


def test_request_attributes_are_read_once_and_can_be_changed() -> None:
    req = make_request(b"echo:hello\n")
    assert req.attributes == {"echo": "hello"}
    assert req.protocol == "echo_lines"
    assert req.peer_address == "10.1.2.3:4"
    matched: list[Mapping[str, str]] = []

    def match(request: FilterRequest) -> str:
        matched.append(dict(request.attributes))
        return request.attributes.get("echo", "none")

    assert req.matched(match) == "hello"
    assert req.matched(match) == "hello"  # kept
    req.set_attribute("echo", "changed")
    assert req.matched(match) == "changed"  # matched afresh
    req.set_attribute("echo", None)
    assert req.matched(match) == "none"
    assert len(matched) == 3
