from __future__ import annotations

import pytest

from sota_dispatch import format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7070", ("127.0.0.1", 7070)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
        (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
        # ZeroMQ's endpoints, as pyzmq users write them.
        ("tcp://127.0.0.1:5555", ("127.0.0.1", 5555)),
        ("TCP://[::1]:5555", ("::1", 5555)),
        ("tcp://*:5555", ("0.0.0.0", 5555)),
    ],
)
def test_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("localhost", "expected HOST:PORT"),
        (":80", "no host"),
        ("host:http", "numeric port"),
        ("host:70000", "0..65535"),
        ("::1:80", "expected HOST:PORT"),
        ("[::1]80", "IPV6"),
        ("ipc:///tmp/feeds", "only tcp://"),
        ("tcp://", "expected HOST:PORT"),
    ],
)
def test_errors_quote_the_input(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_address(text)
    assert text.strip() in str(info.value) or problem in str(info.value)


def test_format_round_trips() -> None:
    assert format_address(("::1", 5)) == "[::1]:5"
    assert parse_address(format_address(("::1", 5))) == ("::1", 5)
    assert format_address("/tmp/sock") == "/tmp/sock"
