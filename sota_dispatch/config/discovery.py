"""Where a cluster finds its endpoints at run time: a ZooKeeper registry, or an xDS control plane.

Dubbo's registry is the classic one: each provider of an interface is an
ephemeral node ``/dubbo/<interface>/providers/<url-encoded dubbo:// URL>``
whose URL carries its weight, whether it is enabled, and its group and
version. Other services register plain ``HOST:PORT`` children under a path
of their choosing. A cluster names one or the other; its ``endpoints``
then only serve until ZooKeeper first answers.

An xDS control plane (Envoy's discovery protocol, as Istio speaks it) sends
each cluster's endpoints as a ``ClusterLoadAssignment``: the proxy's
``xds`` names the control plane and how the proxy introduces itself (its
node), and a cluster's ``eds`` the assignment it takes.
"""

from __future__ import annotations

import attrs

import sota_dispatch.config.values as cv

from ..errors import ConfigError

__all__ = ["XdsConfig", "ZooKeeperConfig"]


def _hosts(value: object, path: str) -> str:
    """ZooKeeper's connect string: ``host:port[,host:port...][/chroot]``."""
    text = cv.string(value, path)
    servers, _, _ = text.partition("/")
    for server in servers.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(path, f"expected host:port[,host:port...][/chroot], got {text!r}")
    return text


def _znode(value: object, path: str) -> str:
    text = cv.string(value, path)
    if not text.startswith("/") or (len(text) > 1 and text.endswith("/")) or "//" in text:
        raise ConfigError(path, f"expected an absolute ZooKeeper path such as /services/echo, got {text!r}")
    return text


@attrs.frozen
class ZooKeeperConfig:
    """A cluster's endpoints from ZooKeeper: Dubbo providers of
    ``interface``, or the ``HOST:PORT`` children of ``path`` (exactly one)."""

    hosts: str = attrs.field(validator=cv.Rule(_hosts, kind="a ZooKeeper connect string"))
    #: Dubbo: the service interface whose providers to use.
    interface: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    #: Dubbo: the provider group and version to match (None: providers
    #: without one; ``*``: any). A group may list several, comma-separated.
    group: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    version: str | None = attrs.field(default=None, validator=cv.Rule(cv.string, optional=True))
    #: Dubbo: the registry's root node (Dubbo's ``registry.group``).
    root: str = attrs.field(default="/dubbo", validator=cv.Rule(_znode, kind="a ZooKeeper path"))
    #: Dubbo: the URL scheme of the providers to use (a service may be
    #: exported over several protocols).
    scheme: str = attrs.field(default="dubbo", validator=cv.Rule(cv.string))
    #: Plain: the node whose children are the endpoints.
    path: str | None = attrs.field(default=None, validator=cv.Rule(_znode, optional=True, kind="a ZooKeeper path"))
    session_timeout: float = attrs.field(default=10.0, validator=cv.Rule(cv.duration, kind="seconds (a number)"))
    #: A registry that lists no endpoints at all keeps the last ones (as
    #: Dubbo 3's empty protection does: a registry restarted empty, or a
    #: bad deploy, must not take every request down); false: no endpoints.
    empty_protection: bool = attrs.field(default=True, validator=cv.Rule(cv.boolean))

    def __attrs_post_init__(self) -> None:
        if (self.interface is None) == (self.path is None):
            raise ConfigError("", "expected exactly one of interface (Dubbo providers) or path (HOST:PORT children)")
        if self.path is not None and (self.group, self.version) != (None, None):
            raise ConfigError("group" if self.group is not None else "version", "group and version go with interface")

    @property
    def watched(self) -> str:
        """The node whose children are the endpoints."""
        if self.path is not None:
            return self.path
        root = self.root.rstrip("/")
        return f"{root}/{self.interface}/providers"


@attrs.frozen
class XdsConfig:
    """The xDS control plane: its gRPC address (plaintext, ADS) and the
    node this proxy says it is (Envoy's ``--service-node`` and
    ``--service-cluster``)."""

    address: str = attrs.field(validator=cv.Rule(cv.address, endpoint=True))
    node_id: str = attrs.field(default="sota-dispatch", validator=cv.Rule(cv.string))
    node_cluster: str = attrs.field(default="sota-dispatch", validator=cv.Rule(cv.string))
