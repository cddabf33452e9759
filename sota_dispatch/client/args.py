"""The client tool's command line: its parser, and the plan it reads into.

Everything a user can get wrong is found here, before any connection: an
unknown protocol, one without call support, a bad address, option, header
or count, TLS files that do not load, a request the protocol cannot build
from the words given. Each is a :class:`~sota_dispatch.cli.args.UsageError`
(one ``error:`` line, exit code 2), as for ``python -m sota_dispatch.serve``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..cli.args import OneLineParser, UsageError
from ..errors import SotaError
from ..io.address import parse_address
from ..io.tls import ClientTLS
from ..protocol.registry import available_protocols, get_protocol
from ..protocol.semantics import FrameSemantics

__all__ = ["DEFAULT_TIMEOUT", "CallPlan", "call_parser", "callable_protocols", "read_plan"]

#: Seconds for connecting (and a handshake), and for each answer.
DEFAULT_TIMEOUT = 5.0

_DESCRIPTION = """\
Send a request to a server of any installed protocol and print the answer
and its latency; with -n, send many (--concurrency at once, --rate a
second) and print a summary: count, errors, req/s, latency percentiles.

What the WORDs are depends on the protocol: simple_line joins them with
'&' into one query line; zmtp sends one multipart message, a frame per
word; bolt sends one payload; dubbo calls --method with the words as
String arguments. -H NAME=VALUE adds a header (a query key, a bolt
header, a dubbo attachment).

Exit status: 0 answered OK, 1 an error answer or a timeout, 2 a usage
error or a server that cannot be reached."""

_EXAMPLES = """\
examples:
  %(prog)s --protocol simple_line 127.0.0.1:7070 'a=1&b=2'
  %(prog)s --protocol zmtp 127.0.0.1:5555 hello world
  %(prog)s --protocol bolt 127.0.0.1:12200 --service com.example.Echo:1.0 --method echo payload
  %(prog)s --protocol dubbo 127.0.0.1:20880 --service com.example.Echo --method echo arg
  %(prog)s --protocol simple_line 127.0.0.1:7070 -n 10000 --concurrency 50 --rate 2000 a=1"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def call_parser(prog: str = "python -m sota_dispatch.call") -> argparse.ArgumentParser:
    """The tool's argument parser (every error one ``error:`` line, exit 2)."""
    p = OneLineParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("address", metavar="HOST:PORT", nargs="?", help="the server (tcp://HOST:PORT too)")
    p.add_argument("words", metavar="WORD", nargs="*", help="the request (see above)")
    p.add_argument("--protocol", "-p", metavar="NAME", help="the server's protocol (see --list-protocols)")
    p.add_argument("--service", metavar="NAME", help="the service to call (bolt, dubbo; a query key for simple_line)")
    p.add_argument("--method", metavar="NAME", help="the method to call (bolt, dubbo)")
    p.add_argument(
        "-H",
        "--header",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a header of the request (repeatable)",
    )
    p.add_argument(
        "-o",
        "--option",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a client option of the protocol, as a proxy cluster's (repeatable; e.g. zmtp identity=ID)",
    )
    p.add_argument("-n", "--count", type=_positive_int, default=1, metavar="N", help="requests to send (default 1)")
    p.add_argument(
        "--concurrency", "-c", type=_positive_int, default=1, metavar="N", help="requests in flight (default 1)"
    )
    p.add_argument("--rate", type=_positive_float, metavar="PER_SECOND", help="at most this many requests a second")
    p.add_argument(
        "--connections",
        type=_positive_int,
        default=1,
        metavar="N",
        help="connections the requests share (default 1; more for a protocol of one request at a time)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"for connecting, and for each answer (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--json", action="store_true", help="print the answer (or the summary) as one JSON object")
    p.add_argument("--tls", action="store_true", help="connect over TLS (verified against the system's CAs)")
    p.add_argument("--tls-ca", metavar="FILE", help="verify the server against this CA bundle (implies --tls)")
    p.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must carry (and SNI; implies --tls)",
    )
    p.add_argument("--tls-insecure", action="store_true", help="do not verify the server's certificate (implies --tls)")
    p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend (default asyncio)")
    p.add_argument("--list-protocols", action="store_true", help="list the installed protocols one can call, and exit")
    return p


@attrs.frozen
class CallPlan:
    """One run of the tool, read from its command line and checked."""

    protocol: type[FrameSemantics]
    address: str
    #: The request frame, built once: every request of a run sends it.
    frame: Any
    count: int = 1
    concurrency: int = 1
    rate: float | None = None
    connections: int = 1
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False
    tls: ClientTLS | None = None
    options: Mapping[str, str] = attrs.field(factory=dict)
    backend: str = "asyncio"

    @property
    def load(self) -> bool:
        """Many requests: a summary instead of an answer."""
        return self.count > 1


def callable_protocols() -> dict[str, type[FrameSemantics]]:
    """The installed protocols the tool can call (proxiable, with call
    support), name -> class."""
    found: dict[str, type[FrameSemantics]] = {}
    for name in available_protocols():
        try:
            cls = get_protocol(name).protocol_class
        except SotaError:
            continue  # a plugin that fails to load is serve's to report
        if cls is not None and _defines_call_request(cls):
            found[name] = cls
    return found


def _defines_call_request(cls: type[FrameSemantics]) -> bool:
    owner = next(klass for klass in cls.__mro__ if "call_request" in klass.__dict__)
    return owner is not FrameSemantics


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUE")
        pairs[name] = value
    return pairs


def _protocol(name: str | None) -> type[FrameSemantics]:
    if not name:
        raise UsageError("--protocol NAME is required (see --list-protocols)")
    info = get_protocol(name)  # UnknownProtocolError names the installed ones
    if info.protocol_class is None:
        raise UsageError(f"protocol {name} cannot be called: it defines no client codec")
    return info.protocol_class


def _tls(args: argparse.Namespace) -> ClientTLS | None:
    if not (args.tls or args.tls_ca or args.tls_server_name or args.tls_insecure):
        return None
    # ConfigError (a CA file that does not load) is a SotaError: exit 2.
    return ClientTLS(ca_file=args.tls_ca, server_name=args.tls_server_name, verify=not args.tls_insecure)


def read_plan(args: argparse.Namespace) -> CallPlan:
    """The plan of parsed ``args``; :class:`UsageError` (or a
    :class:`~sota_dispatch.SotaError`) for anything wrong in them."""
    protocol = _protocol(args.protocol)
    if args.address is None:
        raise UsageError("the server's HOST:PORT is required")
    try:
        host, port = parse_address(args.address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if port == 0:
        raise UsageError(f"port 0 cannot be called: {args.address}")
    options = _pairs(args.option, "-o")
    errors = protocol.option_errors(options, "cluster")
    if errors:
        raise UsageError("; ".join(f"-o {name}: {problem}" for name, problem in errors.items()))
    fields = _pairs(args.header, "-H")
    for name in ("service", "method"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        frame = protocol.call_request(tuple(args.words), fields)
    except NotImplementedError:
        raise UsageError(f"protocol {args.protocol} has no call support") from None
    except ValueError as exc:
        raise UsageError(f"{args.protocol}: {exc}") from None
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise UsageError("--backend trio: trio is not installed (pip install 'sota-dispatch[trio]')")
    connections = args.connections
    if protocol.pool_mode == "exclusive":
        connections = max(connections, args.concurrency)  # one request at a time per connection
    return CallPlan(
        protocol=protocol,
        address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        frame=frame,
        count=args.count,
        concurrency=args.concurrency,
        rate=args.rate,
        connections=min(connections, args.count),
        timeout=args.timeout,
        json=args.json,
        tls=_tls(args),
        options=options,
        backend=args.backend,
    )
