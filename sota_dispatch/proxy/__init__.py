"""The request path: listeners and their client connections, each request's
exchange with its tries, routes, and the timer that ends what runs late.

This package's face is the public proxy namespace: the :class:`Proxy`, its
client connections, and what its clusters are made of (balancers, breakers,
outlier detection, the buffer budget), for code that runs or extends it.
"""

from __future__ import annotations

from ..cluster.balancers import (
    Balancer,
    Endpoint,
    LeastRequest,
    LowestLatency,
    Maglev,
    ModuloHash,
    RandomBalancer,
    RingHash,
    SmoothWeightedRoundRobin,
    hash_key,
    pick_priority,
)
from ..cluster.health import BreakerState, EndpointBreaker, OutlierDetector, ProtocolHealth
from ..io.budget import BufferBudget
from .connection import ProxyConnection
from .proxy import Proxy
from .reload import ConfigState, ReloadPlan, plan_reload

__all__ = [
    "Balancer",
    "BreakerState",
    "BufferBudget",
    "ConfigState",
    "Endpoint",
    "EndpointBreaker",
    "LeastRequest",
    "LowestLatency",
    "Maglev",
    "ModuloHash",
    "OutlierDetector",
    "ProtocolHealth",
    "Proxy",
    "ProxyConnection",
    "RandomBalancer",
    "ReloadPlan",
    "RingHash",
    "SmoothWeightedRoundRobin",
    "hash_key",
    "pick_priority",
    "plan_reload",
]
