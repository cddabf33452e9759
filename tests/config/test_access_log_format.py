"""The access log format: compiled once, Envoy's operators or str.format, and
mistakes named with a hint."""

from __future__ import annotations

import pytest

from sota_dispatch import ConfigError
from sota_dispatch.config import parse_config
from sota_dispatch.config.access_log import FIELDS, compile_access_log
from sota_dispatch.logs import ACCESS_LOG_FORMAT
from sota_dispatch.proxy.observe import start_time


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "start_time": "2026-12-03T05:34:19.123Z",
        "listener": "rpc",
        "protocol": "bolt",
        "conn": 4,
        "stream": 2,
        "remote_address": "[::1]:5000",
        "local_address": "127.0.0.1:12200",
        "cluster": "up",
        "endpoint": "10.0.0.1:12200",
        "outcome": "success",
        "flags": "-",
        "status": 0,
        "attempts": 1,
        "duration_ms": 12.7,
        "upstream_ms": 10.0,
        "bytes": 99,
        "bytes_sent": 99,
        "bytes_received": 40,
    }
    assert set(base) == set(FIELDS)
    return {**base, **changes}


def test_envoy_operators_render_as_envoy_prints_them() -> None:
    form = compile_access_log(
        "%START_TIME(%Y/%m/%d %H:%M)% %DURATION% %RESPONSE_CODE% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
        "%UPSTREAM_HOST% %HOSTNAME% %BYTES_RECEIVED% {x}"
    )
    assert form.envoy
    line = form.render(record(status=None, bytes_received=None))
    date, time, duration, status, host, upstream, hostname, received, literal = line.split(" ")
    assert (date, time, duration, status, host, upstream, received, literal) == (
        "2026/12/03",
        "05:34",
        "12",  # whole milliseconds, as Envoy's %DURATION%
        "-",  # no status
        "::1",
        "10.0.0.1:12200",
        "-",  # a protocol that does not know its frames' sizes
        "{x}",  # braces are text in the Envoy form
    )
    assert hostname


def test_the_str_format_form_and_the_default_line_keep_working() -> None:
    assert not compile_access_log(ACCESS_LOG_FORMAT).envoy
    line = compile_access_log(ACCESS_LOG_FORMAT).render(record())
    assert line == (
        "rpc bolt conn=4 stream=2 cluster=up endpoint=10.0.0.1:12200 outcome=success attempts=1 "
        "duration_ms=12.700 bytes=99"
    )
    assert compile_access_log("{status:>4}|{upstream_ms}").render(record(upstream_ms=None)) == "   0|-"


def test_a_spec_a_missing_value_cannot_take_falls_back_to_pairs() -> None:
    line = compile_access_log("{status:d}").render(record(status=None))
    assert "status=-" in line
    assert "listener=rpc" in line


def test_a_format_is_compiled_once() -> None:
    assert compile_access_log("%UPSTREAM_HOST%") is compile_access_log("%UPSTREAM_HOST%")


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ("%UPSTREAM_HOTS% %DURATION%", "unknown operator %UPSTREAM_HOTS% (did you mean %UPSTREAM_HOST%?)"),
        ("%RESPONSE_DURATION%", "%RESPONSE_DURATION% is not supported here"),
        ("%DURATION(x)%", "%DURATION% takes no argument"),
        ("{listner}", "unknown field {listner} (did you mean {listener}?)"),
        ("{outcome!z}", "bad format"),
    ],
)
def test_mistakes_are_config_errors_naming_the_field(form: str, message: str) -> None:
    listener = {"name": "l", "address": "127.0.0.1:0", "protocol": "bolt", "routes": [{"cluster": "c"}]}
    document = {
        "listeners": [{**listener, "access_log": form}],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value).startswith(f"listeners[0].access_log: {message}"), str(caught.value)


def test_start_time_is_envoys_iso_8601_in_utc_with_milliseconds() -> None:
    # each second's text is kept; a new second must not reuse the last one's
    assert start_time(1733200000.9996) == "2024-12-03T04:26:40.999Z"
    assert start_time(1733200001.0004) == "2024-12-03T04:26:41.000Z"
    assert start_time(1733200000.5) == "2024-12-03T04:26:40.500Z"
