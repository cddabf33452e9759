"""Watching a cluster's endpoints in ZooKeeper (kazoo) and handing each new set to the cluster.

kazoo is a maintained ZooKeeper client, threaded: its session, watches and
state changes run on its own threads. Only two things cross into the event
loop, each as one call with the loop's token: "something changed, read
again" (a watch fired, or the session came back) and the session state
(for the log and the admin). The reads themselves run in a worker thread
(``anyio.to_thread``), so nothing here blocks the loop, and the cluster is
only ever touched from the loop.

A ZooKeeper outage is not an empty registry: while the session is
suspended or lost, the cluster keeps the last endpoints it was given (and
the log and the admin say so); kazoo reconnects with backoff, and the
children are read again, with a fresh watch, once it has. Only a registry
that answers "no providers" empties the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ..config.discovery import ZooKeeperConfig
from ..config.model import EndpointConfig
from ..errors import ConfigError
from ..logs import plural
from .providers import endpoints_from

__all__ = ["ZooKeeperDiscovery", "check_zookeeper"]

log = logging.getLogger(__name__)

#: Unreadable nodes named in the log per change (the rest are counted), and
#: how many names are remembered as told already (a bound, not a cache).
_LOGGED_PER_CHANGE = 5
_MAX_REPORTED = 10_000


def check_zookeeper(path: str) -> None:
    """Raise a :class:`~sota_dispatch.ConfigError` at ``path`` if kazoo is missing."""
    try:
        import kazoo.client  # noqa: F401
    except ImportError:
        raise ConfigError(path, "ZooKeeper discovery needs kazoo: pip install 'sota-dispatch[zookeeper]'") from None


class ZooKeeperDiscovery:
    """One cluster's endpoints, kept in step with ZooKeeper by :meth:`run`.

    ``update(endpoints)`` is called in the event loop with each new set
    (sorted, deduplicated), and only when it differs from the last.
    """

    def __init__(
        self, config: ZooKeeperConfig, cluster: str, update: Callable[[Sequence[EndpointConfig]], object]
    ) -> None:
        self.config = config
        self.cluster = cluster
        self._update = update
        #: ``connecting``, ``connected``, ``suspended`` (reconnecting within
        #: the session), ``lost`` (the session expired; a new one is being
        #: made) or ``stopped``.
        self.state = "connecting"
        self.state_since = time.time()
        #: The last set ZooKeeper gave (None: none yet; the config's endpoints serve).
        self.endpoints: tuple[EndpointConfig, ...] | None = None
        self.updates = 0
        self.updated_at: float | None = None
        #: The registry lists none, and the last endpoints are kept (see ``empty_protection``).
        self.protecting = False
        self._changed = anyio.Event()
        self._reported: set[str] = set()

    def describe(self) -> dict[str, Any]:
        """For the admin's ``/clusters``."""
        stale = self.state != "connected"
        return {
            "type": "zookeeper",
            "hosts": self.config.hosts,
            "path": self.config.watched,
            "state": self.state,
            "since": _iso(self.state_since),
            "endpoints": None if self.endpoints is None else len(self.endpoints),
            "updates": self.updates,
            "updated_at": None if self.updated_at is None else _iso(self.updated_at),
            "stale": stale or self.protecting,
            "empty_protection": self.protecting,
        }

    async def run(self) -> None:
        """Watch until cancelled."""
        from kazoo.client import KazooClient
        from kazoo.retry import KazooRetry

        token = anyio.lowlevel.current_token()

        def from_kazoo(func: Callable[..., None], *args: Any) -> None:
            with contextlib.suppress(RuntimeError, anyio.RunFinishedError):  # the loop is gone: nothing to tell
                anyio.from_thread.run_sync(func, *args, token=token)

        client = KazooClient(
            hosts=self.config.hosts,
            timeout=self.config.session_timeout,
            connection_retry=KazooRetry(max_tries=-1, max_delay=5.0),
            command_retry=KazooRetry(max_tries=3, max_delay=1.0),
        )
        client.add_listener(lambda state: from_kazoo(self._session, str(state)))
        poke = partial(from_kazoo, self._wake)
        log.info("cluster %s: watching %s in ZooKeeper %s", self.cluster, self.config.watched, self.config.hosts)
        client.start_async()
        try:
            while True:
                self._changed = anyio.Event()  # before the read: a watch firing during it is not missed
                if client.connected:
                    children = await anyio.to_thread.run_sync(self._read, client, poke, abandon_on_cancel=True)
                    if children is not None:
                        self._children(children)
                await self._changed.wait()
        finally:
            self.state = "stopped"  # kazoo reports its own stop as a lost session: not worth a warning
            with anyio.move_on_after(5, shield=True):
                await anyio.to_thread.run_sync(_stop, client, abandon_on_cancel=True)

    def _read(self, client: Any, poke: Callable[[Any], None]) -> list[str] | None:
        """The children of the watched node, with a watch set (in a thread).
        No node: no endpoints, and a watch for its creation. None: the
        session is down (the state change will wake the loop)."""
        from kazoo.exceptions import KazooException, NoNodeError, ZookeeperError

        path = self.config.watched
        try:
            try:
                return list(client.get_children(path, watch=poke))
            except NoNodeError:
                if client.exists(path, watch=poke) is None:
                    return []
                return list(client.get_children(path, watch=poke))  # created meanwhile
        except (KazooException, ZookeeperError) as exc:
            log.debug("cluster %s: reading %s failed: %r", self.cluster, path, exc)
            return None

    def _wake(self, *_: object) -> None:
        self._changed.set()

    def _session(self, state: str) -> None:
        if self.state == "stopped":
            return
        kept = "none yet" if self.endpoints is None else f"the last {len(self.endpoints)}"
        if state == "CONNECTED":
            log.info("cluster %s: connected to ZooKeeper %s", self.cluster, self.config.hosts)
            self._set_state("connected")
            self._wake()  # read again: watches may have been lost with the connection
        elif state == "SUSPENDED":
            log.warning(
                "cluster %s: connection to ZooKeeper %s lost; keeping %s endpoints while it reconnects",
                self.cluster,
                self.config.hosts,
                kept,
            )
            self._set_state("suspended")
        elif state == "LOST":
            log.warning(
                "cluster %s: ZooKeeper session lost; keeping %s endpoints until a new session answers",
                self.cluster,
                kept,
            )
            self._set_state("lost")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.time()

    def _children(self, children: list[str]) -> None:
        endpoints, problems = endpoints_from(children, self.config)
        new = [(child, why) for child, why in problems if child not in self._reported]
        if len(self._reported) + len(new) > _MAX_REPORTED:
            self._reported.clear()  # a registry churning through bad names: some may be told again
        for child, why in new[:_LOGGED_PER_CHANGE]:  # once per node, not per change; a few per change
            log.warning("cluster %s: ignoring ZooKeeper node %r: %s", self.cluster, child[:200], why)
        if len(new) > _LOGGED_PER_CHANGE:
            log.warning(
                "cluster %s: ignoring %d more unreadable ZooKeeper nodes", self.cluster, len(new) - _LOGGED_PER_CHANGE
            )
        self._reported.update(child for child, _ in new)
        if endpoints == self.endpoints:
            return
        if not endpoints and self.endpoints and self.config.empty_protection:
            if not self.protecting:
                self.protecting = True
                log.warning(
                    "cluster %s: ZooKeeper lists no endpoints under %s; keeping the last %d (empty_protection)",
                    self.cluster,
                    self.config.watched,
                    len(self.endpoints),
                )
            return
        self.protecting = False
        before = set() if self.endpoints is None else {e.address for e in self.endpoints}
        after = {e.address for e in endpoints}
        self.endpoints = endpoints
        self.updates += 1
        self.updated_at = time.time()
        log.info(
            "cluster %s: %s from ZooKeeper%s%s",
            self.cluster,
            plural(len(endpoints), "endpoint"),
            "".join(f" +{a}" for a in sorted(after - before)),
            "".join(f" -{a}" for a in sorted(before - after)),
        )
        self._update(endpoints)


def _stop(client: Any) -> None:
    try:
        client.stop()
        client.close()
    except Exception:  # closing a client that never connected
        log.debug("closing the ZooKeeper client failed", exc_info=True)


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
