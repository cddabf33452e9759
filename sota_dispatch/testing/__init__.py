"""Helpers for testing a protocol: no sockets needed, every split checked.

:func:`memory_stream_pair` gives two connected in-memory byte streams that keep
chunk boundaries, so a test controls exactly what each ``receive()`` returns.
:func:`exchange` drives one dispatcher with chosen chunks and collects its
output and close reason. The ``check_*`` functions are the conformance checks
a plugin author runs (ideally under hypothesis): the same output whatever the
chunking, nothing but :class:`~sota_dispatch.ProtocolError` for garbage, and a
clean close when the peer closes between requests; :func:`check_sniff`, that
``auto`` detection picks the protocol however its first bytes arrive.
:func:`serving` and :func:`running_proxy` run a server or a whole proxy on
127.0.0.1 for the length of a block, for tests against real sockets and real
peers; :func:`running_with_backends` runs a shipped config that way, with
local backends. :func:`connect`, :func:`send_bytewise`, :func:`closed_within`,
:func:`free_port` and :func:`tcp_stream_pair` are the small socket chores of
such tests;
:func:`pipelined` is a load client for any proxiable protocol;
:func:`zookeeper_server` runs a real ZooKeeper (Debian's package) for
discovery tests. :func:`both_builds` gives a compiled module and its
pure-Python source side by side, for tests that the two agree;
:func:`build_spelling` runs a test with either spelling of a module that
picks its code by the build. :func:`transient_bytes` measures what a
codec copies in passing to parse a read.

:class:`EchoLines` is a protocol of the smallest kind the proxy forwards,
for tests that need one and should not need a plugin installed: the core's
own tests, and a plugin's tests that need a second protocol (auto-detection
among several, a client speaking the wrong protocol). It is not installed;
register it for a test (``register_protocol("echo_lines", EchoLines)``), or
declare it in an entry point for a child process.
"""

from __future__ import annotations

from ..io.clock import ManualClock
from .builds import both_builds, build_spelling, outcome, plain, pure_python
from .clients import pipelined
from .copies import transient_bytes
from .echo_lines import ECHO_MARK, EchoLines
from .memory import (
    Exchange,
    MemoryByteStream,
    check_clean_shutdown,
    check_garbage,
    check_sniff,
    check_split_invariance,
    exchange,
    memory_stream_pair,
)
from .processes import ServeProcess, serve_process
from .running import running_proxy, running_with_backends, serving
from .sockets import (
    closed_within,
    connect,
    connect_and_reset,
    free_port,
    send_bytewise,
    tcp_stream_pair,
    without_ref,
)
from .zookeeper import ZooKeeperServer, require_zookeeper, zookeeper_available, zookeeper_server

__all__ = [
    "both_builds",
    "build_spelling",
    "outcome",
    "plain",
    "pure_python",
    "ECHO_MARK",
    "EchoLines",
    "Exchange",
    "ManualClock",
    "MemoryByteStream",
    "ServeProcess",
    "ZooKeeperServer",
    "check_clean_shutdown",
    "check_garbage",
    "check_sniff",
    "check_split_invariance",
    "closed_within",
    "connect",
    "connect_and_reset",
    "exchange",
    "free_port",
    "memory_stream_pair",
    "pipelined",
    "require_zookeeper",
    "running_proxy",
    "running_with_backends",
    "send_bytewise",
    "serve_process",
    "serving",
    "tcp_stream_pair",
    "transient_bytes",
    "without_ref",
    "zookeeper_available",
    "zookeeper_server",
]
