"""The proxy's buffer budget against clients that each hold most of a huge
bolt frame (an overload fix).

32 clients each sending 14 MiB of a 15 MiB bolt frame once took the proxy
to 574 MB, with no bound but the frame size limit. With the default budget
the proxy's peak RSS now rises by less than 256 MiB, and a new client's
heartbeat is answered meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import yaml
from anyio.abc import SocketAttribute, SocketStream

from sota_dispatch import BufferedReader
from sota_dispatch.config import parse_config
from sota_dispatch.proxy import BufferBudget, Proxy
from sota_dispatch.testing import connect, running_proxy, serve_process, serving
from sota_xprotocol import BoltEchoDispatcher, bolt

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def big_request(request_id: int, size: int) -> bytes:
    return bolt.BoltFrame(
        bolt.FrameType.REQUEST,
        bolt.CmdCode.RPC_REQUEST,
        request_id,
        codec=11,
        timeout=30_000,
        class_name=b"com.alipay.sofa.rpc.core.request.SofaRequest",
        content=b"x" * size,
    ).encode()


def document(upstream: str, **overload: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "listeners": [{"name": "rpc", "address": "127.0.0.1:0", "protocol": "bolt", "routes": [{"cluster": "up"}]}],
        "clusters": [{"name": "up", "endpoints": [upstream]}],
    }
    if overload:
        doc["overload"] = overload
    return doc


class Holders:
    """Clients that each send most of a big frame and hold it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = 0  # finished sending, or closed by the proxy
        self.all_sent = anyio.Event()
        self.done = anyio.Event()

    async def hold(self, address: str, frame: bytes, keep_back: int) -> None:
        """Send all but the last ``keep_back`` bytes of ``frame``, then hold
        the connection until :attr:`done` (or until the proxy closes it)."""
        try:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                async with await connect(address) as stream:
                    if await send_most(stream, frame, keep_back):
                        self._one_sent()
                        await self.done.wait()
        finally:
            self._one_sent()

    def _one_sent(self) -> None:
        self.sent += 1
        if self.sent >= self.count:
            self.all_sent.set()


async def heartbeat(address: str) -> bolt.BoltFrame:
    async with await connect(address) as stream:
        await stream.send(bolt.heartbeat_request(77).encode())
        reader, decoder = BufferedReader(stream), bolt.BoltDecoder()
        with anyio.fail_after(10):
            while True:
                frames = decoder.feed(await reader.read_some())
                if frames:
                    return frames[0]


@contextlib.asynccontextmanager
async def budgeted_proxy() -> AsyncIterator[tuple[Proxy, BufferBudget, str]]:
    """A proxy with an 8 MiB buffer budget (large frames from 256 KiB) in
    front of a bolt echo: ``(proxy, its budget, its listener's address)``."""
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        doc = document(upstream.address, buffer_budget="8MiB", large_frame="256KiB")
        async with running_proxy(parse_config(doc)) as proxy:
            yield proxy, proxy.budget, proxy.addresses["rpc"]


async def test_partial_frames_stay_within_the_budget_and_others_are_served() -> None:
    async with budgeted_proxy() as (proxy, budget, address):
        holders = Holders(8)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, budget.held)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as clients:
                for i in range(8):
                    clients.start_soon(holders.hold, address, big_request(i, 4 * MiB), MiB)
                ack = await heartbeat(address)  # while they hold their frames
                assert (ack.request_id, ack.status, ack.is_heartbeat) == (77, 0, True)
                with anyio.fail_after(30):
                    await holders.all_sent.wait()
                    # 24 MiB sent against 8: most must go (refused at accept,
                    # a large frame refused, or shed), the rest hold theirs.
                    while (  # noqa: ASYNC110 - no event marks a budget action
                        budget.frames_refused + budget.connections_shed + budget.holders < 8
                        or budget.held < budget.holders * 3 * MiB  # the proxy has read what each sent
                    ):
                        await anyio.sleep(0.01)
                    # A shed connection counts until it has closed (a CI
                    # run under load saw 3 here: one being shed).
                    while budget.holders > 2:  # noqa: ASYNC110 - 3 MiB each within 8 MiB
                        await anyio.sleep(0.01)
                ack = await heartbeat(address)  # and once they hold all they can
                assert (ack.request_id, ack.status) == (77, 0)
                holders.done.set()
            tg.cancel_scope.cancel()
        # Past the budget a connection that grew waits for room, so each
        # of the 8 adds one read at most before it does: a chunk of up to
        # 256 KiB (asyncio's and uvloop's socket reads; trio's are 64 KiB),
        # and the event loop reads no further ahead. The 64 KiB each are
        # slack for the sampling (a CI run under load, with the old 64 KiB
        # reads, peaked 132 bytes over 8 MiB + 8 x 256 KiB). Without the
        # wait this peaked at 12-13 MiB: the others read on while the shed
        # connections closed.
        assert peak <= 8 * MiB + 8 * (256 + 64) * 1024
        assert budget.read_pauses >= 1
        assert budget.frames_refused + budget.connections_shed >= 6
        await assert_metrics(proxy)


async def test_clients_that_reset_while_the_budget_holds_their_reads_back_free_everything() -> None:
    # Past the budget a connection that grew waits for room without reading:
    # its client resetting meanwhile must not leave it (or its bytes) behind.
    async with budgeted_proxy() as (_, budget, address):
        streams = [await connect(address) for _ in range(8)]
        try:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i, stream in enumerate(streams):
                        tg.start_soon(send_most, stream, big_request(i, 4 * MiB), MiB)
                while budget.read_pauses < 1:  # noqa: ASYNC110 - no event marks a budget action
                    await anyio.sleep(0.01)
        finally:
            for stream in streams:  # an RST each, whatever the proxy did meanwhile
                # (AttributeError: uvloop leaves no socket once the proxy closed it, refused or shed)
                with contextlib.suppress(OSError, AttributeError):
                    raw = stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await stream.aclose()
        with anyio.fail_after(30):
            while budget.holders or budget.held:  # noqa: ASYNC110 - released as each closes
                await anyio.sleep(0.01)
        ack = await heartbeat(address)
        assert (ack.request_id, ack.status) == (77, 0)


async def send_most(stream: SocketStream, frame: bytes, keep_back: int) -> bool:
    """Send all but the last ``keep_back`` bytes of ``frame``; False if the
    proxy closed the connection meanwhile (refused or shed)."""
    data = memoryview(frame)[: len(frame) - keep_back]
    try:
        for start in range(0, len(data), 256 * 1024):
            await stream.send(bytes(data[start : start + 256 * 1024]))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return False
    return True


async def assert_metrics(proxy: Proxy) -> None:
    from prometheus_client import generate_latest

    text = generate_latest(proxy.metrics).decode()
    assert "sota_buffer_budget_bytes 8.388608e+06" in text
    assert 'sota_downstream_connections_limit{listener="rpc",protocol="bolt"} 10000.0' in text
    assert 'sota_overload_actions_total{action="refuse_large_frame"}' in text
    assert 'sota_overload_actions_total{action="pause_reading"}' in text
    assert "sota_buffer_bytes " in text


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_32_clients_holding_14_mib_each_raise_the_rss_less_than_256_mib(
    tmp_path: Path, backend_args: list[str]
) -> None:
    async with serving(BoltEchoDispatcher) as upstream:
        assert upstream.address is not None
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(document(upstream.address)))  # the default budget
        with serve_process(["--config", str(path), *backend_args]) as proc:
            assert (await heartbeat(proc.address)).status == 0  # warmed up: the baseline
            before = peak_rss(proc.process.pid)
            frame = big_request(1, 15 * MiB)
            holders = Holders(32)
            async with anyio.create_task_group() as clients:
                for _ in range(32):
                    clients.start_soon(holders.hold, proc.address, frame, MiB)
                ack = await heartbeat(proc.address)  # a new client, during the flood
                assert (ack.status, ack.is_heartbeat) == (0, True)
                with anyio.fail_after(60):
                    await holders.all_sent.wait()
                ack = await heartbeat(proc.address)  # and with every partial frame held
                assert (ack.status, ack.is_heartbeat) == (0, True)
                holders.done.set()
            grown = peak_rss(proc.process.pid) - before
            assert (await heartbeat(proc.address)).status == 0
            assert proc.stop() == 0
    assert grown < 256 * MiB, f"peak RSS grew by {grown / MiB:.0f} MiB"
