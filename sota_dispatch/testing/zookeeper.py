"""A real ZooKeeper server for tests: Debian's ``zookeeper`` package, run standalone.

``apt-get install zookeeper`` leaves the server's jar in ``/usr/share/java``
(OpenJDK comes with it); :func:`zookeeper_server` runs
``org.apache.zookeeper.server.ZooKeeperServerMain`` on a free port of
127.0.0.1 with its data in a directory of the test's, and stops it when the
block ends. A short tick (200 ms) lets sessions time out in a second or
two, so a test can watch a session end. Where the jar is missing the tests
that need it are skipped, unless ``SOTA_REQUIRE_ZOOKEEPER`` is set (CI sets
it: there a missing server is a failure, not a skip).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from .processes import collect_lines, first_line
from .sockets import free_port

__all__ = ["ZOOKEEPER_JARS", "ZooKeeperServer", "require_zookeeper", "zookeeper_available", "zookeeper_server"]

#: The server and the logging it needs, as Debian installs them.
ZOOKEEPER_JARS = (
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-api.jar",
    "/usr/share/java/slf4j-simple.jar",
)

#: What the server logs once it serves (after "binding to port").
_SERVING = "PrepRequestProcessor (sid:0) started"


def zookeeper_available() -> str | None:
    """None if a server can run here; else why not (for a skip message)."""
    missing = [jar for jar in ZOOKEEPER_JARS if not Path(jar).exists()]
    if missing:
        return f"ZooKeeper is not installed (apt-get install zookeeper): no {missing[0]}"
    if shutil.which("java") is None:
        return "no java on PATH"
    return None


def require_zookeeper() -> None:
    """In a test: skip it where no server can run, or fail it if
    ``SOTA_REQUIRE_ZOOKEEPER`` is set (as CI sets it)."""
    import pytest

    why = zookeeper_available()
    if why is not None:
        if os.environ.get("SOTA_REQUIRE_ZOOKEEPER"):
            pytest.fail(why)
        pytest.skip(why)


@attrs.define
class ZooKeeperServer:
    """A running server: ``hosts`` is its connect string."""

    process: subprocess.Popen[str]
    port: int
    lines: list[str]

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Kill it at once (as a crash would: its sessions are not closed)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@contextmanager
def zookeeper_server(data_dir: Path, *, port: int | None = None, timeout: float = 30.0) -> Iterator[ZooKeeperServer]:
    """Run a standalone server until the block ends; ``port``: its port
    (default a free one; give the old one to start it again on the same
    data, as a restarted server would)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [
            "java",
            "-Xmx128m",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.4lw.commands.whitelist=",
            "-cp",
            os.pathsep.join(ZOOKEEPER_JARS),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(port),
            str(data_dir),
            "200",  # tickTime, ms: sessions of 0.4 s to 4 s
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    arrived: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=collect_lines, args=(process.stdout, lines, arrived), daemon=True)
    reader.start()
    try:
        first_line(process, lines, arrived, lambda line: _SERVING in line or None, timeout, "ZooKeeper", "start")
        yield ZooKeeperServer(process, port, lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(5)
        process.stdout.close()
