"""Service discovery: where clusters find their endpoints while the proxy runs."""

from .providers import endpoints_from
from .zookeeper import ZooKeeperDiscovery, check_zookeeper

__all__ = ["ZooKeeperDiscovery", "check_zookeeper", "endpoints_from"]
