"""Logs of a real proxy process: JSON lines, connection ids, the access log."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import yaml
from simple_line_support import Client, backends, config

from sota_dispatch.testing import serve_process

pytestmark = pytest.mark.anyio


async def test_json_lines_carry_connection_ids_and_the_access_log_has_a_line_per_request(tmp_path: Path) -> None:
    async with backends("A") as up:
        document = config([up[0][1]])
        document["listeners"][0]["access_log"] = "{listener} conn={conn} stream={stream} {cluster} {endpoint} {outcome}"
        document["listeners"][0]["options"] = {"max_line": 32}
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(document))
        with serve_process(["--config", str(path), "--log-format", "json"]) as proc:
            async with await anyio.connect_tcp(proc.host, proc.port) as stream:
                client = Client(stream)
                assert await client.call(b"n=1", b"n=2") == [b"A:n=1", b"A:n=2"]
                await client.send(b"x" * 100)  # over max_line: an error line, then the close
                assert await client.replies(1) == [b"error:line too long (limit 32 bytes)"]
            await anyio.to_thread.run_sync(proc.wait_for_line, "LimitExceeded", 10)
            assert proc.stop() == 0
        entries = [json.loads(line) for line in proc.stderr_lines]  # every line is one JSON object
        access = [e for e in entries if e["logger"] == "sota_dispatch.access"]
        conn = access[0]["conn"]
        assert [e["message"] for e in access] == [
            f"lines conn={conn} stream=1 backends {up[0][1]} success",
            f"lines conn={conn} stream=2 backends {up[0][1]} success",
        ]
        assert [(e["conn"], e["stream"]) for e in access] == [(conn, 1), (conn, 2)]
        # every field of the access line is a key of its own too
        assert [(e["outcome"], e["endpoint"], e["attempts"], e["bytes_received"]) for e in access] == [
            ("success", up[0][1], 1, len(b"n=1\r\n")),
            ("success", up[0][1], 1, len(b"n=2\r\n")),
        ]
        [closed] = [e for e in entries if "LimitExceeded" in e["message"]]
        assert closed["conn"] == access[0]["conn"]  # the client connection's id, from the task's context
        assert closed["level"] == "info"
