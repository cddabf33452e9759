"""The admin endpoint: a small HTTP/1.1 server beside the proxy (Envoy's admin).

Loopback only unless the config says ``allow_remote: true``. One request
per connection (``Connection: close``); the paths are :data:`PATHS` (GET
unless marked POST), Envoy's where Envoy has one.

The metrics are read from the proxy's plain counters at scrape time by a
custom collector, so serving traffic pays nothing for them.

Any web page can make a browser send requests to 127.0.0.1, so the admin
guards itself like a local service must: a request whose ``Host`` is a DNS
name other than ``localhost`` is refused (DNS rebinding: a name the attacker
controls, pointed at us), as is an absolute-form target for another host,
and a mutating request (POST) carrying an ``Origin`` other than the admin's
own. Connections still waiting for their request head are bounded: when
:data:`MAX_WAITING` wait, the oldest is closed, so idle connections cannot
lock an operator (or a readiness probe) out.
"""

from __future__ import annotations

import gc
import html
import ipaddress
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import anyio
import attrs
from anyio.abc import ByteStream

from ..compiled import build_info
from ..errors import ConfigError, LimitExceeded, ProtocolError
from ..process.malloc import malloc_trim_threshold
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from .stats_text import clusters_text, stat_lines, stats_body
from .view import AdminTarget

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_WAITING",
    "PATHS",
    "AdminConnection",
    "WaitingConnections",
    "config_json",
    "host_is_allowed",
    "package_version",
]

#: When this process loaded the admin (``/server_info``'s uptime counts from it).
_STARTED = time.time()


def package_version() -> str:
    """The installed sota-dispatch's version (``unknown`` from a source tree)."""
    try:
        return version("sota-dispatch")
    except PackageNotFoundError:
        return "unknown"


log = logging.getLogger(__name__)

_LEVELS = ("debug", "info", "warning", "error", "critical")

#: Seconds a client has to send its request head.
HEAD_TIMEOUT = 5.0

#: Admin connections that may wait for their request head at once; one more
#: closes the one that waited longest.
MAX_WAITING = 32

#: Every path of a proxy's admin and what it does (``/`` and ``/help`` list them).
PATHS = {
    "/": "this list, as a page of links",
    "/help": "this list",
    "/server_info": "version, pid, state, uptime, health check, config version in force, build, gc threshold (JSON)",
    "/ready": "200 while serving; 503 once draining or after /healthcheck/fail",
    "/healthcheck/fail": "(POST) fail /ready and keep serving: out of the load balancer, still answering",
    "/healthcheck/ok": "(POST) pass /ready again",
    "/listeners": "listeners: address, protocol, state, connections, requests (?format=json|text)",
    "/clusters": "clusters: endpoints with health, weight, breaker, counters (?format=json|text)",
    "/stats": "counters and gauges as Envoy-style dotted names (?filter=REGEX, ?usedonly, ?format=json)",
    "/stats/prometheus": "Prometheus text exposition (= /metrics)",
    "/metrics": "Prometheus text exposition",
    "/config_dump": "the configuration in force (JSON)",
    "/logging": "the log level; (POST) ?level=debug|info|warning|error|critical sets it",
    "/reload": "(POST) read the config file again and apply what changed, as SIGHUP does",
    "/reload_certificates": "(POST) read the TLS files again",
    "/drain_listeners": "(POST) stop accepting and drain client connections; the admin stays up",
    "/drain": "(POST) stop accepting, drain, exit (as SIGTERM)",
    "/quitquitquit": "(POST) exit now: requests in flight get their error reply",
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}

#: Methods that change the proxy's state.
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_is_allowed(host: str) -> bool:
    """Whether a ``Host`` value (``name[:port]``) may reach the admin: an IP
    address or ``localhost``, never another DNS name (DNS rebinding)."""
    name = _host_name(host)
    if name is None:
        return False
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _host_name(host: str) -> str | None:
    """The name part of ``name[:port]`` or ``[v6]:port``; None if malformed."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not host[end + 1 :].startswith(":")):
            return None
        return host[1:end]
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def config_json(value: Any) -> Any:
    """The config as JSON-ready values (attrs classes, tuples, mappings)."""
    if attrs.has(type(value)):
        return {f.name: config_json(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): config_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_json(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


class WaitingConnections:
    """The admin connections waiting for their request head, oldest first:
    at :data:`MAX_WAITING`, a newcomer closes the one that waited longest."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self._waiting: dict[AdminConnection, None] = {}
        #: Connections closed to make room.
        self.evicted = 0

    def add(self, connection: AdminConnection) -> None:
        while len(self._waiting) >= self.limit:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self.evicted += 1
            oldest.abort()
        self._waiting[connection] = None

    def discard(self, connection: AdminConnection) -> None:
        self._waiting.pop(connection, None)


class AdminConnection(Dispatcher):
    """One admin HTTP request and its answer."""

    protocol_name: ClassVar[str] = "admin"
    linger_timeout = 1.0

    def __init__(
        self,
        stream: ByteStream,
        context: ConnectionContext,
        *,
        proxy: AdminTarget,
        waiting: WaitingConnections | None = None,
        metrics: Any = None,
    ) -> None:
        super().__init__(stream, context)
        self.proxy = proxy
        #: The prometheus-client registry ``/metrics`` renders.
        self.metrics = metrics
        self.waiting = waiting
        #: The request's query (``?format=json`` -> ``{"format": ["json"]}``).
        self.query: Mapping[str, list[str]] = {}

    async def serve(self) -> None:
        if self.waiting is not None:
            self.waiting.add(self)
        try:
            with anyio.fail_after(HEAD_TIMEOUT):
                head = await self.reader.read_until(b"\r\n\r\n", max_bytes=8192)
        except LimitExceeded:
            self._answer(400, "request head over 8 KiB\n")
            return
        except TimeoutError:
            return  # a client that sends no request in time is closed
        finally:
            if self.waiting is not None:
                self.waiting.discard(self)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
        method, target = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        url = urlsplit(target)
        refusal = self._refusal(method, url.netloc, headers)
        if refusal is not None:
            log.warning("admin: refused %s %s from %s: %s", method, url.path[:80], self.context.remote_address, refusal)
            self._answer(403, refusal + "\n")
            return
        await self._route(method, url.path, parse_qs(url.query, keep_blank_values=True))

    def _refusal(self, method: str, authority: str, headers: Mapping[str, str]) -> str | None:
        """Why a request that may come from a web page is refused (None: it is not)."""
        host = headers.get("host")
        if authority and (host is None or authority.lower() != host.lower()):
            return "an absolute-form target must name the Host the request was sent to"
        if host is not None and not host_is_allowed(host):
            return "Host must be an IP address or localhost"
        origin = headers.get("origin")
        if method in _MUTATING and origin is not None:
            allowed = host is not None and origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")
            if not allowed:
                return f"cross-origin {method} (Origin {origin[:80]})"
        return None

    def handlers(self) -> dict[str, tuple[str, Callable[[], Awaitable[None] | None]]]:
        """``{path: (method, handler)}``; a subclass adds or replaces paths."""
        return {
            "/": ("GET", self._index),
            "/help": ("GET", self._help),
            "/metrics": ("GET", self._metrics),
            "/stats": ("GET", self._stats),
            "/clusters": ("GET", self._clusters),
            "/listeners": ("GET", self._listeners),
            "/config_dump": ("GET", self._config_dump),
            "/ready": ("GET", self._ready),
            "/healthcheck/fail": ("POST", self._health_check_fail),
            "/healthcheck/ok": ("POST", self._health_check_ok),
            "/drain": ("POST", self._drain),
            "/drain_listeners": ("POST", self._drain_listeners),
            "/quitquitquit": ("POST", self._quit),
            "/reload": ("POST", self._reload),
            "/reload_certificates": ("POST", self._reload_certificates),
            "/server_info": ("GET", self._server_info),
        }

    def paths(self) -> dict[str, str]:
        """Each path this admin serves and what it does (``/help``)."""
        served = {*self.handlers(), "/logging", "/stats/prometheus"}
        return {path: text for path, text in PATHS.items() if path in served}

    async def _route(self, method: str, path: str, query: Mapping[str, list[str]]) -> None:
        handlers = self.handlers()
        if path == "/stats/prometheus":
            path = "/metrics"  # one exposition, whoever serves it (a supervisor sums its workers')
        if path == "/logging":
            self._logging(method, query)
            return
        entry = handlers.get(path)
        if entry is None:
            self._answer(404, f"no such path {path[:80]!r}; GET /help lists them\n")
            return
        wanted, handler = entry
        if method != wanted:
            self._answer(405, f"{path} takes {wanted}\n", headers={"Allow": wanted})
            return
        self.query = query
        result = handler()
        if result is not None:
            await result

    def _answer(
        self,
        status: int,
        body: str | bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(data)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def _json(self, value: Any) -> None:
        self._answer(200, json.dumps(value, indent=2, sort_keys=False) + "\n", "application/json")

    def _metrics(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._answer(200, generate_latest(self.metrics), CONTENT_TYPE_LATEST)

    def _index(self) -> None:
        rows = []
        for path, text in self.paths().items():
            shown = html.escape(path)
            link = shown if text.startswith("(POST)") else f'<a href="{shown}">{shown}</a>'
            rows.append(f"<tr><td><code>{link}</code></td><td>{html.escape(text)}</td></tr>")
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>sota-dispatch admin</title></head>"
            f"<body><h1>sota-dispatch {html.escape(package_version())}</h1><table>{''.join(rows)}</table>"
            "<p>POST paths: <code>curl -X POST http://HOST:PORT/PATH</code></p></body></html>\n"
        )
        self._answer(200, page, "text/html; charset=utf-8")

    def _help(self) -> None:
        width = max(map(len, self.paths()))
        self._answer(200, "".join(f"{path:<{width}}  {text}\n" for path, text in self.paths().items()))

    def _format(self, default: str = "json") -> str | None:
        """The ``?format=`` asked (json or text); None after answering 400."""
        form = self.query.get("format", [default])[-1]
        if form not in ("json", "text"):
            self._answer(400, f"format {form[:40]!r}: use json or text\n")
            return None
        return form

    def _clusters(self) -> None:
        self._send_clusters(self.proxy.describe_clusters())

    def _send_clusters(self, described: dict[str, Any]) -> None:
        form = self._format()
        if form == "text":
            self._answer(200, clusters_text(described))
        elif form == "json":
            self._json(described)

    async def _listeners(self) -> None:
        form = self._format()
        if form is None:
            return
        listeners = await self.proxy.describe_listeners()
        if form == "json":
            self._json(listeners)
        else:
            self._answer(200, "".join(f"{x['name']}::{x.get('bound') or x['address']}\n" for x in listeners))

    async def metric_families(self) -> list[Any]:
        """The metric families ``/stats`` renders (prometheus-client ``Metric`` objects)."""
        return list(self.metrics.collect())

    async def _stats(self) -> None:
        lines = stat_lines(await self.metric_families())
        try:
            content_type, body = stats_body(lines, self.query)
        except ValueError as exc:
            self._answer(400, f"{exc}\n")
            return
        self._answer(200, body, content_type)

    def _health_check_fail(self) -> None:
        self.proxy.health_check_failed = True
        log.warning("admin: health check set to fail (/ready answers 503; traffic is still served)")
        self._answer(200, "health check failing\n")

    def _health_check_ok(self) -> None:
        self.proxy.health_check_failed = False
        log.warning("admin: health check passing again")
        self._answer(200, "health check passing\n")

    async def _drain_listeners(self) -> None:
        log.info("admin: draining the listeners (the admin stays up)")
        await self.proxy.drain_listeners()
        self._answer(200, "listeners closed; their connections are draining\n")

    def _quit(self) -> None:
        log.info("admin: quit requested")
        self._answer(200, "quitting\n")
        self.proxy.quit()

    def _config_dump(self) -> None:
        self._json(config_json(self.proxy.config))

    def _ready(self) -> None:
        if self.proxy.draining:
            self._answer(503, "draining\n")
        elif self.proxy.health_check_failed:
            self._answer(503, "failing health checks (POST /healthcheck/ok to pass again)\n")
        else:
            self._answer(200, "ready\n")

    def _drain(self) -> None:
        log.info("admin: drain requested")
        self._answer(200, "draining\n")
        self.proxy.shutdown()

    async def _reload(self) -> None:
        try:
            report = await self.proxy.reload_config()
        except ConfigError as exc:
            version = self.proxy.config_status().get("version")
            problems = "".join(f"{error}\n" for error in exc.errors)
            self._answer(400, f"not reloaded (config version {version} stays):\n{problems}")
            return
        self._json(report)

    def _server_info(self) -> None:
        self._json(
            {
                "version": package_version(),
                "build": build_info().kind,
                "compiled_modules": list(build_info().compiled),
                "pid": os.getpid(),
                "state": "draining" if self.proxy.draining else "live",
                "health_check": "failing" if self.proxy.health_check_failed else "passing",
                "uptime_seconds": round(time.time() - _STARTED, 3),
                "gc_threshold": list(gc.get_threshold()),
                "malloc_trim_threshold": malloc_trim_threshold(),
                "config": self.proxy.config_status(),
            }
        )

    def _reload_certificates(self) -> None:
        problems = self.proxy.reload_certificates()
        if problems:
            listing = "".join(f"{problem}\n" for problem in problems)
            self._answer(500, f"not reloaded (the old certificates stay):\n{listing}")
        else:
            self._answer(200, "reloaded\n")

    def _logging(self, method: str, query: Mapping[str, list[str]]) -> None:
        root = logging.getLogger()
        levels = query.get("level")
        if levels:
            level = levels[-1].lower()
            if method != "POST":
                self._answer(405, "setting the level takes POST\n", headers={"Allow": "GET, POST"})
                return
            if level not in _LEVELS:
                self._answer(400, f"unknown level {level!r}; use one of {', '.join(_LEVELS)}\n")
                return
            root.setLevel(level.upper())
            log.warning("admin: log level set to %s", level)
        self._answer(200, f"level: {logging.getLevelName(root.level).lower()}\n")
