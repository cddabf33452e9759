"""`python -m sota_dispatch.serve --protocol zmtp`, as a child process, with libzmq peers."""

from __future__ import annotations

import subprocess
import sys

import anyio.to_thread
import pytest
import zmq

from sota_dispatch.testing import serve_process

pytestmark = pytest.mark.anyio


def req_round_trip(address: str, frames: list[bytes], **plain: bytes) -> list[bytes]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.RCVTIMEO, 10_000)
        req.setsockopt(zmq.LINGER, 0)
        for name, value in plain.items():
            setattr(req, name, value)
        req.connect(f"tcp://{address}")
        req.send_multipart(frames)
        return req.recv_multipart()
    finally:
        ctx.destroy(0)


async def test_zmtp_echo_service(backend_args: list[str]) -> None:
    args = ["--protocol", "zmtp", "--listen", "127.0.0.1:0", *backend_args]
    with serve_process(args) as proc:
        message = [b"hello", b"", b"x" * 70_000]
        assert await anyio.to_thread.run_sync(req_round_trip, proc.address, message) == message
        assert proc.stop() == 0
    assert "Traceback" not in "".join(proc.stderr_lines)


async def test_zmtp_echo_service_with_plain_and_heartbeats(backend_args: list[str]) -> None:
    args = ["--protocol", "zmtp", "--listen", "127.0.0.1:0", *backend_args]
    args += ["-o", "plain_user=admin", "-o", "plain_password=secret", "-o", "heartbeat_interval=0.5"]
    with serve_process(args) as proc:
        reply = await anyio.to_thread.run_sync(
            lambda: req_round_trip(proc.address, [b"auth"], plain_username=b"admin", plain_password=b"secret")
        )
        assert reply == [b"auth"]
        assert proc.stop() == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("handover=2", "--option handover: expected 0 or 1, got '2'"),
        ("max_parts=0", "--option max_parts: expected a positive integer, got '0'"),
        ("send_hwm=lots", "--option send_hwm: expected a positive integer, got 'lots'"),
        ("heartbeat_interval=-1", "--option heartbeat_interval: expected a number of seconds above zero"),
        ("plain_user=admin", "--option plain_password: plain_user and plain_password go together"),
        ("plain_user=" + "u" * 256, "--option plain_user: at most 255 bytes"),
        ("identity=me", "has no option 'identity' for a local service"),
    ],
)
def test_bad_zmtp_options_exit_2(option: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sota_dispatch.serve", "--protocol", "zmtp", "-o", option],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
