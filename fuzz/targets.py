"""Fuzz targets: every decoder a peer's bytes reach, and the config loader.

A target takes arbitrary bytes and may raise only its ``allowed``
exceptions (a codec: :class:`~sota_dispatch.ProtocolError`; the config:
:class:`~sota_dispatch.ConfigError`); anything else is a crash. Each
protocol target feeds a server codec (what the proxy's listeners run) and a
client codec (what reads upstream answers), split in two at a point the
input chooses, and then asks the protocol's frame semantics about every
frame it decoded (routing attributes, ids, timeouts, heartbeats: what the
proxy asks of a client's frame). ``seeds`` are real traffic: the captured
vectors of the tests, and frames our own encoders write.

Used by ``fuzz/run.py`` (atheris, coverage-guided) and by
``tests/test_fuzz_regressions.py`` (seeds and every saved crash, in CI).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sota_dispatch import ConfigError, ProtocolError, get_protocol

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocols" / "xprotocol" / "tests" / "vectors"
#: Saved inputs that once crashed a target: ``regressions/<target>/<name>``.
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
MAX_FRAME = 1 << 20


@attrs.frozen
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


def _split(data: bytes) -> tuple[bytes, bytes]:
    """The input, cut where its first byte says (every split gets tried)."""
    if not data:
        return b"", b""
    cut = data[0] % (len(data) + 1)
    return data[1 : 1 + cut], data[1 + cut :]


def _semantics(protocol: str, frames: list[Any]) -> None:
    """What the proxy asks of a client's frames (each may refuse with ProtocolError)."""
    semantics = get_protocol(protocol).protocol_class
    assert semantics is not None
    for frame in frames:
        for ask in (
            semantics.routing_attributes,
            semantics.is_request,
            semantics.is_heartbeat,
            semantics.is_oneway,
            semantics.timeout,
            semantics.response_id,
        ):
            with contextlib.suppress(ProtocolError):
                ask(frame)


def codec_target(protocol: str, role: str, prefix: Callable[[], bytes] = bytes) -> Callable[[bytes], None]:
    """Feed a ``role`` ("server" or "client") codec of ``protocol``:
    ``prefix()`` (a handshake, to reach the traffic), then the input in two parts."""

    def run(data: bytes) -> None:
        semantics = get_protocol(protocol).protocol_class
        assert semantics is not None
        if role == "server":
            codec = semantics.server_codec(semantics.option_values({}, "listener"), MAX_FRAME)
        else:
            codec = semantics.client_codec(semantics.option_values({}, "cluster"), MAX_FRAME)
        frames: list[Any] = []
        head = prefix()
        if head:
            frames += codec.feed(head)
        first, second = _split(data)
        frames += codec.feed(first)
        frames += codec.feed(second)
        codec.check()
        codec.data_to_send()
        if role == "server":
            _semantics(protocol, frames)

    return run


def _with_split(seeds: Callable[[], list[bytes]]) -> Callable[[], list[bytes]]:
    """Seeds for a codec target: traffic, behind the byte that says where
    the target cuts it (see :func:`_split`), in its middle."""
    return lambda: [bytes((len(seed) // 2 % 256,)) + seed for seed in seeds()]


def _captured(path: Path, key: str, values: tuple[str, ...]) -> list[bytes]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get(key) in values:
                found.append(bytes.fromhex(record["hex"])[:4096])
    return found


def _zmtp_start(side: str) -> bytes:
    """What one side of a ZMTP 3.1 DEALER-ROUTER handshake sends (greeting
    and READY), from our engines: ``side`` "dealer" or "router"."""
    from sota_zmtp.engine import ZmtpEngine
    from sota_zmtp.wire import SocketType

    dealer = ZmtpEngine(SocketType.DEALER, identity=b"fuzz")
    router = ZmtpEngine(SocketType.ROUTER)
    ours, theirs = (dealer, router) if side == "dealer" else (router, dealer)
    sent = b""
    for _ in range(3):
        out = ours.data_to_send()
        sent += out
        theirs.feed(out)
        ours.feed(theirs.data_to_send())
    return sent + ours.data_to_send()


def _zmtp_dealer_start() -> bytes:
    return _zmtp_start("dealer")


def _zmtp_router_start() -> bytes:
    return _zmtp_start("router")


def _zmtp_seeds() -> list[bytes]:
    from sota_zmtp.wire import encode_command, encode_message

    return [
        encode_message([b"\x00\x00\x00\x01", b"hello"]),
        encode_message([b"a" * 300, b"", b"b"]),
        encode_command(b"PING", b"\x00\x14ctx"),
        encode_command(b"ERROR", b"\x03400"),
    ]


def _line_seeds() -> list[bytes]:
    return [b"a=1&b=2\r\nkey=value&key1=value1\r\n", b"x=%41%zz&&=\r\n", b"k=v&" * 50 + b"\n"]


def _hessian_seeds() -> list[bytes]:
    path = VECTORS / "hessian2_java.tsv"
    if not path.exists():
        return []
    seeds = []
    for line in path.read_text().splitlines():
        if "\t" in line:
            seeds.append(bytes.fromhex(line.split("\t")[1])[:2048])
    return seeds[:200]


def _hessian(data: bytes) -> None:
    from sota_xprotocol.hessian2.decode import decode_all
    from sota_xprotocol.hessian2.skip import skip

    try:
        decode_all(data)
    finally:
        end = 0
        while end < len(data):
            end = skip(data, end)


def _config(data: bytes) -> None:
    from sota_dispatch.config.load import config_from_text
    from sota_dispatch.proxy import Proxy

    Proxy(config_from_text(data.decode("utf-8", "replace"), "fuzz.yaml"))


def _config_seeds() -> list[bytes]:
    return [path.read_bytes() for path in sorted((ROOT / "examples").rglob("*.yaml"))]


def _all() -> dict[str, Target]:
    from sota_xprotocol.hessian2.values import NeedMoreData

    codec = (ProtocolError,)
    bolt_in = lambda: _captured(VECTORS / "bolt_anthunder.jsonl", "dir", ("c2s",))  # noqa: E731
    bolt_out = lambda: _captured(VECTORS / "bolt_anthunder.jsonl", "dir", ("s2c",))  # noqa: E731
    dubbo_in = lambda: _captured(VECTORS / "dubbo_ssl_python.jsonl", "kind", ("client->server",))  # noqa: E731
    dubbo_out = lambda: _captured(VECTORS / "dubbo_ssl_python.jsonl", "kind", ("server->client",))  # noqa: E731
    targets = [
        Target("simple_line", codec_target("simple_line", "server"), codec, _with_split(_line_seeds)),
        Target("bolt", codec_target("bolt", "server"), codec, _with_split(bolt_in)),
        Target("bolt-answers", codec_target("bolt", "client"), codec, _with_split(bolt_out)),
        Target("dubbo", codec_target("dubbo", "server"), codec, _with_split(dubbo_in)),
        Target("dubbo-answers", codec_target("dubbo", "client"), codec, _with_split(dubbo_out)),
        Target("hessian2", _hessian, (ProtocolError, NeedMoreData), _hessian_seeds),
        Target("zmtp-handshake", codec_target("zmtp", "server"), codec, _with_split(lambda: [_zmtp_dealer_start()])),
        Target("zmtp", codec_target("zmtp", "server", _zmtp_dealer_start), codec, _with_split(_zmtp_seeds)),
        Target("zmtp-answers", codec_target("zmtp", "client", _zmtp_router_start), codec, _with_split(_zmtp_seeds)),
        Target("config", _config, (ConfigError,), _config_seeds),
    ]
    return {target.name: target for target in targets}


TARGETS = _all()


def check(target: Target, data: bytes) -> BaseException | None:
    """Run ``target`` on ``data``: the unexpected exception, if one escaped."""
    try:
        target.run(data)
    except target.allowed:
        return None
    except Exception as exc:  # noqa: BLE001 - anything else is what fuzzing looks for
        return exc
    return None


def regressions(target: str) -> list[Path]:
    """The saved crash inputs of ``target``."""
    folder = REGRESSIONS / target
    return sorted(folder.iterdir()) if folder.is_dir() else []
