"""The admin endpoint of a real proxy process, asked with curl."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from simple_line_support import Client, admin_of, backends, config, curl

import sota_dispatch.admin.server
from sota_dispatch.config import parse_config
from sota_dispatch.testing import closed_within, connect, running_proxy, serve_process, without_ref

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus-client's parser."""
    return {
        (sample.name, labels(**sample.labels)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def test_every_admin_path_answers_what_it_promises(tmp_path: Path) -> None:
    async with backends("A") as up:
        backend, address = up[0]
        document = config([address], route={"match": [{"attribute": "service", "exact": "x"}]})
        document["clusters"][0]["endpoint_breaker"] = {}
        document["clusters"][0]["outlier_detection"] = {}
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(document))
        with serve_process(["--config", str(path), "--admin", "127.0.0.1:0"]) as proc:
            admin = await admin_of(proc)
            async with await anyio.connect_tcp(proc.host, proc.port) as stream:
                client = Client(stream)
                replies = await client.call(*(b"service=x&n=%d" % i for i in range(10)), b"service=y")
                assert without_ref(replies[-1]) == b"error:no route"

                status, text = await curl(f"{admin}/metrics")
                assert status == 200
                metrics = samples(text)
                listener = labels(listener="lines", protocol="simple_line")
                assert metrics["sota_downstream_requests_total", listener] == 11
                assert metrics["sota_downstream_connections_total", listener] == 1
                no_route = labels(listener="lines", protocol="simple_line", outcome="no_route")
                assert metrics["sota_local_replies_total", no_route] == 1
                success = labels(cluster="backends", outcome="success")
                assert metrics["sota_upstream_requests_total", success] == 10
                assert metrics["sota_request_duration_seconds_count", labels(cluster="backends")] == 10
                assert metrics["sota_request_duration_seconds_bucket", labels(cluster="backends", le="+Inf")] == 10
                assert metrics["sota_downstream_bytes_received_total", listener] == sum(
                    len(b"service=x&n=%d\r\n" % i) for i in range(10)
                ) + len(b"service=y\r\n")

                status, text = await curl(f"{admin}/clusters")
                [endpoint] = json.loads(text)["backends"]["endpoints"]
                assert (status, endpoint["address"], endpoint["health"], endpoint["breaker"]) == (
                    200,
                    address,
                    "healthy",
                    "closed",
                )

                status, text = await curl(f"{admin}/config_dump")
                dump = json.loads(text)
                assert (status, dump["listeners"][0]["protocol"], dump["clusters"][0]["endpoints"][0]["address"]) == (
                    200,
                    "simple_line",
                    address,
                )

                assert await curl(f"{admin}/ready") == (200, "ready\n")
                assert await curl(f"{admin}/logging") == (200, "level: info\n")
                assert await curl(f"{admin}/logging?level=debug", "-X", "POST") == (200, "level: debug\n")
                assert (await curl(f"{admin}/logging?level=loud", "-X", "POST"))[0] == 400
                assert (await curl(f"{admin}/nowhere"))[0] == 404
                assert (await curl(f"{admin}/drain"))[0] == 405  # draining takes POST

                await client.send(b"service=x&hold=1")  # in flight while the proxy drains
                await backend.wait_seen(11)
                assert await curl(f"{admin}/drain", "-X", "POST") == (200, "draining\n")
                assert await curl(f"{admin}/ready") == (503, "draining\n")
                backend.release.set()
                assert await client.replies(1) == [b"A:service=x&hold=1"]
            assert await anyio.to_thread.run_sync(proc.process.wait, 20) == 0
            assert "Traceback" not in "".join(proc.stderr_lines)


def test_a_remote_admin_address_needs_allow_remote() -> None:
    from sota_dispatch import ConfigError
    from sota_dispatch.config import parse_config

    document = config(["127.0.0.1:1"])
    document["admin"] = {"address": "0.0.0.0:9901"}
    with pytest.raises(ConfigError, match=r"^admin\.address: 0\.0\.0\.0:9901 is not loopback"):
        parse_config(document)
    document["admin"]["allow_remote"] = True
    assert parse_config(document).admin is not None


async def test_an_admin_client_that_sends_no_request_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sota_dispatch.admin.server, "HEAD_TIMEOUT", 0.3)
    document = config(["127.0.0.1:1"])
    document["admin"] = "127.0.0.1:0"
    async with running_proxy(parse_config(document)) as proxy:
        assert proxy.admin_address is not None
        async with await connect(proxy.admin_address) as silent:
            assert await closed_within(silent, 5) < 2
