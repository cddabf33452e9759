"""The access log of an in-process proxy: Envoy's operators, the str.format
form, the JSON keys, and nothing at all when it is off."""

from __future__ import annotations

import json
import logging
import re

import pytest
from anyio.abc import SocketAttribute
from simple_line_support import backends, client, config, proxy_for

from sota_dispatch.config import parse_config
from sota_dispatch.logs import JsonFormatter
from sota_dispatch.proxy import observe
from sota_dispatch.testing import free_port

pytestmark = pytest.mark.anyio

ENVOY = (
    "[%START_TIME%] %PROTOCOL% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
    "%RESPONSE_CODE% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% sent=%BYTES_SENT% received=%BYTES_RECEIVED% "
    "from=%DOWNSTREAM_REMOTE_ADDRESS% "
    "%DURATION%ms {literal braces}"
)


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sota_dispatch.access"]


async def test_an_envoy_format_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    async with backends("A") as up:
        document = config([up[0][1]])
        document["listeners"][0]["access_log"] = ENVOY
        async with proxy_for(document) as proxy, client(proxy) as c:
            assert await c.call(b"hello") == [b"A:hello"]
            own = c.stream.extra(SocketAttribute.local_address)
    [record] = access_records(caplog)
    line = record.getMessage()
    pattern = (
        r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] simple_line backends (?P<up>\S+) - success - attempts=1 "
        r"sent=9 received=7 from=(?P<from>\S+) (?P<ms>\d+)ms \{literal braces\}"
    )
    found = re.fullmatch(pattern, line)
    assert found is not None, line
    assert found["up"] == up[0][1]
    assert found["from"] == f"{own[0]}:{own[1]}"  # the client's address as the proxy saw it
    assert record.stream == 1  # type: ignore[attr-defined]


async def test_a_failure_shows_envoys_response_flag_and_the_str_format_form_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: the connect fails, the endpoint is out
    document = config([dead], route={"retry": {"attempts": 2}})
    document["listeners"][0]["access_log"] = "{outcome} {flags} {attempts} {endpoint} {status} {duration_ms:.1f}"
    async with proxy_for(document) as proxy, client(proxy) as c:
        [reply] = await c.call(b"x")
    assert reply.startswith(b"error:")
    [record] = access_records(caplog)
    outcome, flags, attempts, endpoint, status, _ = record.getMessage().split(" ")
    assert (outcome, flags, attempts, endpoint, status) == ("no_healthy_upstream", "UH", "1", dead, "-")


async def test_json_puts_every_field_in_a_key_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    async with backends("A") as up:
        document = config([up[0][1]])
        document["listeners"][0]["access_log"] = True
        async with proxy_for(document) as proxy, client(proxy) as c:
            assert await c.call(b"one", b"two") == [b"A:one", b"A:two"]
    records = access_records(caplog)
    entries = [json.loads(JsonFormatter().format(r)) for r in records]
    assert [e["stream"] for e in entries] == [1, 2]
    first = entries[0]
    assert first["message"].startswith("lines simple_line conn=")  # the text line stays
    assert {k: first[k] for k in ("listener", "protocol", "cluster", "endpoint", "outcome", "flags", "attempts")} == {
        "listener": "lines",
        "protocol": "simple_line",
        "cluster": "backends",
        "endpoint": up[0][1],
        "outcome": "success",
        "flags": "-",
        "attempts": 1,
    }
    assert first["status"] is None  # simple_line has no statuses
    assert first["bytes_sent"] == len(b"A:one\r\n")
    assert first["bytes_received"] == len(b"one\r\n")
    assert first["conn"] == records[0].conn  # type: ignore[attr-defined]
    assert 0 <= first["upstream_ms"] <= first["duration_ms"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["start_time"])
    assert first["remote_address"].startswith("127.0.0.1:")


async def test_with_the_access_log_off_nothing_is_built(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")

    def refuse(*args: object) -> dict[str, object]:
        raise AssertionError("a record was built for a listener without an access log")

    monkeypatch.setattr(observe, "access_record", refuse)
    async with backends("A") as up, proxy_for(config([up[0][1]])) as proxy, client(proxy) as c:
        assert proxy.listeners[0].observer is None  # the request path tests one None
        assert await c.call(b"x") == [b"A:x"]
    assert access_records(caplog) == []


async def test_a_reload_turns_the_access_log_on_and_changes_its_format(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    async with backends("A") as up, proxy_for(config([up[0][1]])) as proxy, client(proxy) as c:
        assert await c.call(b"before") == [b"A:before"]
        on = config([up[0][1]])
        on["listeners"][0]["access_log"] = "first {outcome}"
        await proxy.apply(parse_config(on))
        assert await c.call(b"on") == [b"A:on"]
        on["listeners"][0]["access_log"] = "%RESPONSE_FLAGS% second"
        await proxy.apply(parse_config(on))
        assert await c.call(b"changed") == [b"A:changed"]
    assert [r.getMessage() for r in access_records(caplog)] == ["first success", "- second"]


async def test_a_request_in_flight_across_a_reload_is_logged_as_configured_when_it_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exchange keeps the observer of its start (as it keeps its route):
    the reload's access log covers the requests read after it, on the same
    client connection too, and one that turns the log off silences only those."""
    caplog.set_level(logging.INFO, logger="sota_dispatch.access")
    async with backends("A") as up, proxy_for(config([up[0][1]])) as proxy, client(proxy) as c:
        (a, address) = up[0]
        await c.send(b"x=1&hold=1")  # in flight, no access log, across the reload
        await a.wait_seen(1)
        on = config([address])
        on["listeners"][0]["access_log"] = "logged {outcome}"
        await proxy.apply(parse_config(on))
        await c.send(b"x=2&hold=1")  # read after it: logged
        await a.wait_seen(2)
        await proxy.apply(parse_config(config([address])))  # off again while it is in flight
        a.release.set()
        assert await c.replies(2) == [b"A:x=1&hold=1", b"A:x=2&hold=1"]
        assert await c.call(b"off") == [b"A:off"]
    assert [r.getMessage() for r in access_records(caplog)] == ["logged success"]
