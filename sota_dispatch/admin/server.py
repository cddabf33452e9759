"""The admin endpoint: a small HTTP/1.1 server beside the proxy (Envoy's admin).

Loopback only unless the config says ``allow_remote: true``. One request
per connection (``Connection: close``), GET unless noted:

``/metrics``         Prometheus text exposition (prometheus-client renders it)
``/clusters``        endpoints with health, weight, priority, breaker, in flight (JSON)
``/config_dump``     the effective configuration (JSON)
``/ready``           200 while serving, 503 once draining
``/logging?level=``  show, or (POST) set, the log level at run time
``/drain``           (POST) stop accepting and drain, as SIGTERM does
``/reload``          (POST) read the config file again and apply what changed, as SIGHUP does
``/reload_certificates``  (POST) read the TLS files again, as SIGHUP does
``/server_info``     version, pid, state, uptime, and the config version in force (JSON)

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

from ..errors import ConfigError, LimitExceeded, ProtocolError
from ..protocol.context import ConnectionContext
from ..protocol.dispatcher import Dispatcher
from .view import AdminTarget

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_WAITING",
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
        await self._route(method, url.path, parse_qs(url.query))

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
            "/metrics": ("GET", self._metrics),
            "/clusters": ("GET", self._clusters),
            "/config_dump": ("GET", self._config_dump),
            "/ready": ("GET", self._ready),
            "/drain": ("POST", self._drain),
            "/reload": ("POST", self._reload),
            "/reload_certificates": ("POST", self._reload_certificates),
            "/server_info": ("GET", self._server_info),
        }

    async def _route(self, method: str, path: str, query: Mapping[str, list[str]]) -> None:
        handlers = self.handlers()
        if path == "/logging":
            self._logging(method, query)
            return
        entry = handlers.get(path)
        if entry is None:
            paths = ", ".join(sorted([*handlers, "/logging"]))
            self._answer(404, f"no such path; try {paths}\n")
            return
        wanted, handler = entry
        if method != wanted:
            self._answer(405, f"{path} takes {wanted}\n", headers={"Allow": wanted})
            return
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

    def _clusters(self) -> None:
        self._json(self.proxy.describe_clusters())

    def _config_dump(self) -> None:
        self._json(config_json(self.proxy.config))

    def _ready(self) -> None:
        if self.proxy.draining:
            self._answer(503, "draining\n")
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
                "pid": os.getpid(),
                "state": "draining" if self.proxy.draining else "live",
                "uptime_seconds": round(time.time() - _STARTED, 3),
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
