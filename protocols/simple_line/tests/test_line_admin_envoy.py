"""The admin's Envoy-style paths, asked over real HTTP (curl) of a real proxy process.

The proxy runs on the test's backend (asyncio, uvloop, trio); its metrics
are read with prometheus-client's parser.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from simple_line_support import Backend, Client, admin_of, backends, client, config, curl, proxy_for, tags

from sota_dispatch.cli.args import DEFAULT_GC_THRESHOLD, DEFAULT_MALLOC_TRIM_THRESHOLD
from sota_dispatch.testing import ServeProcess, serve_process

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def stats(text: str) -> dict[str, str]:
    """``/stats`` text as ``{name: value}``; every line must be ``name: value``."""
    result = {}
    for line in text.splitlines():
        found = re.fullmatch(r"([\w.:\[\]-]+): (-?[\d.e+]+)", line)
        assert found is not None, line
        result[found.group(1)] = found.group(2)
    return result


@asynccontextmanager
async def admin_proxy(tmp_path: Path, args: list[str]) -> AsyncIterator[tuple[Backend, str, ServeProcess, str]]:
    """A backend, and a proxy process with an admin in front of it: the
    backend, its address, the process and the admin's base URL."""
    async with backends("A") as up:
        backend, address = up[0]
        with serve_process(["-c", proxy_file(tmp_path, address), "--admin", "127.0.0.1:0", *args]) as proc:
            yield backend, address, proc, await admin_of(proc)


def proxy_file(tmp_path: Path, address: str) -> str:
    document = config([address])
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


async def test_envoy_admin_paths(tmp_path: Path, backend_args: list[str]) -> None:
    async with admin_proxy(tmp_path, backend_args) as (_backend, address, proc, admin):
        async with await anyio.connect_tcp(proc.host, proc.port) as stream:
            client = Client(stream)
            assert await client.call(*(b"n=%d" % i for i in range(10))) == [b"A:n=%d" % i for i in range(10)]

            # / and /help list every path.
            status, page = await curl(f"{admin}/")
            assert status == 200
            assert '<a href="/stats">/stats</a>' in page
            assert "<code>/quitquitquit</code>" in page  # POST paths are not links
            status, listing = await curl(f"{admin}/help")
            paths = [line.split()[0] for line in listing.splitlines()]
            for path in (
                "/healthcheck/fail",
                "/drain_listeners",
                "/quitquitquit",
                "/listeners",
                "/stats/prometheus",
            ):
                assert path in paths
            status, text = await curl(f"{admin}/nowhere")
            assert (status, text) == (404, "no such path '/nowhere'; GET /help lists them\n")

            # /stats: Envoy-style dotted names, every listener, cluster and endpoint.
            status, text = await curl(f"{admin}/stats")
            assert status == 200
            named = stats(text)
            endpoint = f"cluster.backends.endpoint.{address}"
            assert named["cluster.backends.upstream_requests.success"] == "10"
            assert named[f"{endpoint}.endpoint_requests"] == "10"
            assert named[f"{endpoint}.endpoint_responses.success"] == "10"
            assert named[f"{endpoint}.endpoint_responses.timeout"] == "0"
            assert named["listener.lines.downstream_requests"] == "10"
            assert named["listener.lines.downstream_connections_active"] == "1"
            assert float(named["server.process_cpu_seconds"]) > 0
            status, text = await curl(f"{admin}/stats?filter=^cluster%5C.backends%5C.endpoint&format=json")
            filtered = json.loads(text)["stats"]
            assert filtered
            assert all(entry["name"].startswith(endpoint) for entry in filtered)
            status, text = await curl(f"{admin}/stats?usedonly")
            assert all(value != "0" for value in stats(text).values())
            assert (await curl(f"{admin}/stats?filter=("))[0] == 400
            assert (await curl(f"{admin}/stats?format=yaml"))[0] == 400

            # /stats/prometheus is /metrics: per-endpoint and process metrics.
            status, text = await curl(f"{admin}/stats/prometheus")
            metrics = samples(text)
            labels = (("cluster", "backends"), ("endpoint", address))
            assert metrics["sota_endpoint_requests_total", labels] == 10
            assert metrics["sota_endpoint_responses_total", (*labels, ("outcome", "success"))] == 10
            assert metrics["sota_endpoint_request_duration_seconds_count", labels] == 10
            assert metrics["process_cpu_seconds_total", ()] > 0
            assert metrics["process_resident_memory_bytes", ()] > 0
            # Durations are not whole milliseconds (uvloop's loop.time() is).
            total = metrics["sota_endpoint_request_duration_seconds_sum", labels]
            assert abs(total * 1000 - round(total * 1000)) > 1e-6, total

            # /clusters in Envoy's text form, or JSON with each endpoint's counters.
            status, text = await curl(f"{admin}/clusters?format=text")
            assert status == 200
            assert f"backends::{address}::health_flags::healthy" in text.splitlines()
            assert f"backends::{address}::requests::10" in text.splitlines()
            status, text = await curl(f"{admin}/clusters")
            [described] = json.loads(text)["backends"]["endpoints"]
            assert described["stats"]["successes"] == 10
            assert (await curl(f"{admin}/clusters?format=xml"))[0] == 400

            # /listeners.
            status, text = await curl(f"{admin}/listeners")
            [listener] = json.loads(text)
            assert (listener["name"], listener["state"], listener["requests"]) == ("lines", "accepting", 10)
            assert listener["bound"] == proc.address
            assert await curl(f"{admin}/listeners?format=text") == (200, f"lines::{proc.address}\n")

            # /healthcheck/fail: out of the load balancer, still serving.
            assert (await curl(f"{admin}/healthcheck/fail"))[0] == 405  # it takes POST
            assert await curl(f"{admin}/healthcheck/fail", "-X", "POST") == (200, "health check failing\n")
            assert (await curl(f"{admin}/ready"))[0] == 503
            assert json.loads((await curl(f"{admin}/server_info"))[1])["health_check"] == "failing"
            assert await client.call(b"after=fail") == [b"A:after=fail"]
            assert await curl(f"{admin}/healthcheck/ok", "-X", "POST") == (200, "health check passing\n")
            assert await curl(f"{admin}/ready") == (200, "ready\n")
        assert proc.stop() == 0


async def test_the_commands_collector_and_allocator_thresholds_show_in_server_info(
    tmp_path: Path, backend_args: list[str]
) -> None:
    # The proxy process runs with the command's thresholds (Python's own 700
    # made a busy server walk its requests in flight over and over; glibc's
    # gave every large buffer back to the system).
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    for args, young, trim in (
        ([], DEFAULT_GC_THRESHOLD, DEFAULT_MALLOC_TRIM_THRESHOLD),
        (["--gc-threshold", "2500", "--malloc-trim-threshold", "8MiB"], 2500, 8 << 20),
        (["--malloc-trim-threshold", "0"], DEFAULT_GC_THRESHOLD, None),
    ):
        async with admin_proxy(tmp_path, [*args, *backend_args]) as (_backend, _address, proc, admin):
            info = json.loads((await curl(f"{admin}/server_info"))[1])
            assert info["gc_threshold"][0] == young  # the proxy process's own (another process)
            assert info["malloc_trim_threshold"] == (trim if glibc else None)
            assert proc.stop() == 0


async def test_drain_listeners_keeps_the_admin_up_and_quitquitquit_exits(
    tmp_path: Path, backend_args: list[str]
) -> None:
    async with admin_proxy(tmp_path, backend_args) as (backend, _address, proc, admin):
        async with await anyio.connect_tcp(proc.host, proc.port) as stream:
            client = Client(stream)
            await client.send(b"hold=1&n=1")  # in flight while the listeners drain
            await backend.wait_seen(1)
            status, text = await curl(f"{admin}/drain_listeners", "-X", "POST")
            assert (status, text) == (200, "listeners closed; their connections are draining\n")
            with pytest.raises(OSError, match=r"connection attempts failed|refused"):
                await anyio.connect_tcp(proc.host, proc.port)  # no longer accepting
            backend.release.set()
            assert await client.replies(1) == [b"A:hold=1&n=1"]  # the request in flight is answered
        # The process and its admin stay up.
        status, text = await curl(f"{admin}/listeners")
        assert json.loads(text)[0]["state"] == "draining"
        assert await curl(f"{admin}/ready") == (503, "draining\n")
        assert json.loads((await curl(f"{admin}/server_info"))[1])["state"] == "draining"
        status, text = await curl(f"{admin}/reload", "-X", "POST")
        assert status == 400  # nothing to reload into: the listeners are gone
        assert proc.process.poll() is None
        assert await curl(f"{admin}/quitquitquit", "-X", "POST") == (200, "quitting\n")
        assert await anyio.to_thread.run_sync(proc.process.wait, 20) == 0
        assert "Traceback" not in "".join(proc.stderr_lines)


async def test_quitquitquit_answers_requests_in_flight_with_an_error(tmp_path: Path, backend_args: list[str]) -> None:
    async with admin_proxy(tmp_path, backend_args) as (backend, _address, proc, admin):
        async with await anyio.connect_tcp(proc.host, proc.port) as stream:
            client = Client(stream)
            await client.send(b"hold=1&n=1")
            await backend.wait_seen(1)
            assert await curl(f"{admin}/quitquitquit", "-X", "POST") == (200, "quitting\n")
            [reply] = await client.replies(1)
            assert reply.startswith(b"error:timeout"), reply  # not lost silently
        assert await anyio.to_thread.run_sync(proc.process.wait, 20) == 0
        backend.release.set()


async def test_admin_allow_remote_from_the_command_line(tmp_path: Path) -> None:
    path = proxy_file(tmp_path, "127.0.0.1:1")
    refused = await anyio.run_process(
        [sys.executable, "-m", "sota_dispatch.serve", "-c", path, "--admin", "0.0.0.0:0", "--check-config"], check=False
    )
    assert refused.returncode == 2
    assert b"--admin-allow-remote" in refused.stderr
    with serve_process(["-c", path, "--admin", "0.0.0.0:0", "--admin-allow-remote"]) as proc:
        # Logged before the "listening on" line serve_process waited for.
        assert "beyond this machine: anyone who can reach it" in "".join(proc.stderr_lines)
        assert proc.stop() == 0


async def test_a_supervisors_admin_reaches_every_worker(tmp_path: Path, backend_args: list[str]) -> None:
    async with admin_proxy(tmp_path, ["--workers", "2", *backend_args]) as (backend, address, proc, admin):
        for n in range(6):  # new connections: the kernel spreads them over the workers
            async with await anyio.connect_tcp(proc.host, proc.port) as stream:
                assert await Client(stream).call(b"n=%d" % n) == [b"A:n=%d" % n]
        # /stats renders the workers' summed metrics.
        named = stats((await curl(f"{admin}/stats?filter=endpoint_requests$"))[1])
        assert named == {f"cluster.backends.endpoint.{address}.endpoint_requests": "6"}
        status, text = await curl(f"{admin}/listeners")
        assert status == 200
        [listener] = json.loads(text)
        assert (listener["name"], listener["state"], listener["workers"], listener["requests"]) == (
            "lines",
            "accepting",
            2,
            6,
        )
        assert f"backends::{address}::requests::" in (await curl(f"{admin}/clusters?format=text"))[1]
        metrics = samples((await curl(f"{admin}/stats/prometheus"))[1])
        assert ("process_start_time_seconds", ()) not in metrics  # does not add up over workers
        assert metrics["process_cpu_seconds_total", ()] > 0

        async with await anyio.connect_tcp(proc.host, proc.port) as stream:
            client = Client(stream)
            await client.send(b"hold=1&n=held")
            await backend.wait_seen(7)
            assert (await curl(f"{admin}/drain_listeners", "-X", "POST"))[0] == 200
            with pytest.raises(OSError, match=r"connection attempts failed|refused"):
                await anyio.connect_tcp(proc.host, proc.port)  # no worker, nor the supervisor, accepts
            backend.release.set()
            assert await client.replies(1) == [b"A:hold=1&n=held"]
        assert (await curl(f"{admin}/ready"))[0] == 503
        assert proc.process.poll() is None
        assert await curl(f"{admin}/quitquitquit", "-X", "POST") == (200, "quitting\n")
        assert await anyio.to_thread.run_sync(proc.process.wait, 30) == 0


async def test_each_endpoint_counts_its_tries_and_how_they_ended() -> None:
    async with backends("A", "B") as up:
        (a, a_address), (b, b_address) = up
        route = {
            "timeout": "400ms",
            "per_try_timeout": "200ms",
            "retry": {"attempts": 2, "retry_on": ["reset", "per_try_timeout"], "idempotent": True},
        }
        async with proxy_for(config([a_address, b_address], route=route)) as proxy, client(proxy) as c:
            assert tags(await c.call(b"n=1", b"n=2")) == [b"A", b"B"]  # round robin: one each
            # A reset on the next endpoint (A), retried on B.
            assert tags(await c.call(b"close=1&n=3")) == [b"error"]  # B resets too: the retry fails
            # A held answer: the try times out, the retry on the other one too.
            [timed_out] = await c.call(b"hold=1&n=4")
            assert timed_out.startswith(b"error:timeout")
            counts = proxy.clusters["backends"].endpoint_stats
            described = {e["address"]: e["stats"] for e in proxy.describe_clusters()["backends"]["endpoints"]}
        a.release.set()
        b.release.set()
    for address in (a_address, b_address):
        stats = counts[address]
        assert (stats.requests, stats.successes, stats.errors, stats.timeouts, stats.retries) == (3, 1, 1, 1, 1)
        assert stats.latency.count == 1  # answered tries only
        assert 0 < stats.latency.total < 1
        assert described[address]["requests"] == 3
        assert described[address]["timeouts"] == 1
