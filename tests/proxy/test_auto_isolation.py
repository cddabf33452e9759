"""A client speaking the wrong protocol for a cluster loses its own requests
only (a security fix): it never marks the cluster's endpoints unhealthy for
anyone else.

An ``auto`` listener routes whatever it detects. A client of one protocol
routed to a cluster of services of another cannot be served there; once,
each of its attempts put the endpoint in connect backoff, fed the breaker
and outlier ejection, and failed every request of the right protocol
meanwhile (one ZMTP message caused 762 bolt errors in 0.25 s). An
endpoint's passive health is now judged per protocol spoken to it. Here
the cluster serves idproto and the wrong clients speak echo_lines; the
zmtp suite sends a ZMTP client (whose handshake never completes there).
"""

from __future__ import annotations

import anyio
import pytest
from idproto import OK, REQUEST, Frame, IdProto

from sota_dispatch.config import parse_config
from sota_dispatch.proxy import Proxy
from sota_dispatch.testing import connect, running_proxy, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("echo_lines", "idproto")]


def auto_document(upstream: str) -> dict[str, object]:
    return {
        "listeners": [{"name": "any", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"cluster": "ids"}]}],
        "clusters": [
            {
                "name": "ids",
                "endpoints": [upstream],
                "endpoint_breaker": {"consecutive_failures": 2, "min_requests": 1000},
                "outlier_detection": {"consecutive_failures": 2, "max_ejection_percent": 100},
            }
        ],
    }


async def line_client(proxy: Proxy, count: int) -> list[bytes]:
    replies = []
    async with await connect(proxy.addresses["any"]) as stream:
        for i in range(count):
            # Longer than an idproto header: the service reads it, and closes.
            await stream.send(b"echo:wrong protocol %d\r\n" % i)
            data = b""
            with anyio.fail_after(10):
                while not data.endswith(b"\n"):
                    data += await stream.receive()
            replies.append(data)
    return replies


async def test_wrong_protocol_clients_never_take_the_endpoint_from_the_right_ones() -> None:
    async with serving(IdProto) as upstream:
        assert upstream.address is not None
        async with running_proxy(parse_config(auto_document(upstream.address))) as proxy:
            cluster = proxy.clusters["ids"]
            errors: list[int] = []
            answered = 0
            stop = anyio.Event()

            async def id_traffic() -> None:
                nonlocal answered
                async with await IdProto.connect(proxy.addresses["any"]) as client:
                    while not stop.is_set():
                        reply = await client.request(Frame.make(REQUEST, 0, b"ping"), timeout=10)
                        if reply.status != OK:
                            errors.append(reply.status)
                        answered += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(id_traffic)
                for _ in range(10):
                    # An echo_lines client: the idproto service closes on its line.
                    [line] = await line_client(proxy, 1)
                    assert line.startswith(b"error:"), line
                stop.set()
            assert answered > 0
            assert errors == []  # not one idproto request failed meanwhile
            [endpoint] = cluster.describe()["endpoints"]
            assert endpoint["health"] == "healthy"
            assert endpoint["protocols"]["idproto"] == {"health": "healthy", "breaker": "closed"}
            # The wrong protocol's failures counted, against it alone.
            assert endpoint["protocols"]["echo_lines"]["breaker"] in ("open", "half-open")
            assert endpoint["protocols"]["echo_lines"]["health"] in ("unreachable", "healthy")
