"""The client tool, ``python -m sota_dispatch.call``: a request to any protocol.

Like grpcurl for gRPC, or a ZeroMQ user's one-liner: it sends one request
(or many, at a concurrency and a rate) to a server of any installed
protocol and prints the answer and its latency (or a summary). It knows no
protocol: each protocol class builds its request from the command line
(:meth:`~sota_dispatch.FrameSemantics.call_request`) and describes its
answer (:meth:`~sota_dispatch.FrameSemantics.describe_answer`), and the
connection speaks the class's client codec, as the proxy's upstream
connections do.

Modules: :mod:`.args` (the command line and the plan it reads into),
:mod:`.connection` (one client connection of any protocol),
:mod:`.load` (many requests and their summary), :mod:`.tool` (a run,
its output and its exit status).
"""

from __future__ import annotations

from .args import CallPlan, call_parser, read_plan
from .connection import CallConnection, CannotConnect, call_connection
from .load import LoadSummary, run_load
from .tool import execute, run_call

__all__ = [
    "CallConnection",
    "CallPlan",
    "CannotConnect",
    "LoadSummary",
    "call_connection",
    "call_parser",
    "execute",
    "read_plan",
    "run_call",
    "run_load",
]
