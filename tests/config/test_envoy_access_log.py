"""The Envoy import's access loggers: a generic proxy's ``access_log`` is the
listener's access log, and what it cannot be is an error naming its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sota_dispatch import ConfigError
from sota_dispatch.config.envoy import from_envoy
from sota_dispatch.logs import ACCESS_LOG_FORMAT

EXAMPLE = Path(__file__).parents[2] / "examples" / "proxy" / "envoy.yaml"
FILE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
FORMAT = "[%START_TIME%] %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESPONSE_FLAGS% %DURATION%\n"
WHERE = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log"


def bootstrap(access_log: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document = copy.deepcopy(document)
    document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = (
        access_log
    )
    return document


def logger(typed_config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "envoy.access_loggers.file", "typed_config": typed_config}]


@pytest.mark.parametrize(
    ("typed_config", "expected"),
    [
        (
            {"@type": FILE, "path": "/dev/stdout", "log_format": {"text_format_source": {"inline_string": FORMAT}}},
            FORMAT,
        ),
        ({"@type": FILE, "path": "/dev/stderr", "log_format": {"text_format": FORMAT}}, FORMAT),
        ({"@type": FILE, "path": "/dev/stdout", "format": FORMAT}, FORMAT),
        ({"@type": STDOUT, "log_format": {"text_format_source": {"inline_string": FORMAT}}}, FORMAT),
        ({"@type": STDOUT}, ACCESS_LOG_FORMAT),  # no format: the native default line
    ],
)
def test_an_envoy_access_logger_is_the_listeners_access_log(typed_config: dict[str, Any], expected: str) -> None:
    listener = from_envoy(bootstrap(logger(typed_config))).listeners[0]
    assert listener.access_log == expected.rstrip("\n")


def test_without_an_access_logger_there_is_no_access_log() -> None:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    assert from_envoy(document).listeners[0].access_log is None


@pytest.mark.parametrize(
    ("access_log", "message"),
    [
        (
            logger({"@type": FILE, "path": "/var/log/envoy.log"}),
            f"{WHERE}[0].typed_config.path: the access log goes to the process's log",
        ),
        (
            logger({"@type": FILE, "path": "/dev/stdout", "log_format": {"json_format": {"a": "%DURATION%"}}}),
            f"{WHERE}[0].typed_config.log_format.json_format: not supported by sota-dispatch's Envoy subset",
        ),
        (
            [{"name": "x", "typed_config": {"@type": STDOUT}, "filter": {"status_code_filter": {}}}],
            f"{WHERE}[0].filter: not supported",
        ),
        (logger({"@type": STDOUT}) * 2, f"{WHERE}: expected a list of one access logger"),
        (logger({"@type": "type.googleapis.com/Other"}), f"{WHERE}[0].typed_config.@type: expected one of"),
        (
            logger({"@type": STDOUT, "log_format": {"text_format": "%UPSTREAM_HOTS%"}}),
            "listeners[0].access_log: unknown operator %UPSTREAM_HOTS% (did you mean %UPSTREAM_HOST%?)",
        ),
    ],
)
def test_what_the_subset_lacks_is_an_error_naming_its_path(access_log: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_envoy(bootstrap(access_log))
    assert str(caught.value).startswith(message), str(caught.value)
