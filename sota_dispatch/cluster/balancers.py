"""Load balancers: which endpoint of a cluster gets the next request.

The policies Envoy and MOSN users know, as plain objects with no I/O: the
proxy loop (issue 5) asks ``pick()`` for each request, passing the routing
key for the consistent-hash policies and the endpoints to avoid when it
retries. Health and priority are the caller's input: :func:`pick_priority`
keeps to the lowest-numbered priority level that has a healthy endpoint, so
standby endpoints get traffic only when no primary is healthy.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Collection, Sequence

import attrs

__all__ = [
    "Balancer",
    "Endpoint",
    "LeastRequest",
    "LowestLatency",
    "Maglev",
    "ModuloHash",
    "RandomBalancer",
    "RingHash",
    "SmoothWeightedRoundRobin",
    "hash_key",
    "pick_priority",
]


@attrs.frozen(cache_hash=True)
class Endpoint:
    """One upstream address; ``priority`` 0 is primary, higher is standby."""

    address: str
    weight: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    priority: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def hash_key(key: str | bytes) -> int:
    """A stable 64-bit hash (not Python's salted ``hash``): the same key must
    map to the same endpoint in every process and every restart."""
    # surrogatepass: a key read from a Java peer may hold a lone UTF-16
    # surrogate (hessian2 strings are UTF-16); it still hashes, stably.
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Balancer:
    """Choose among ``endpoints``; subclasses implement :meth:`pick`."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        if not endpoints:
            raise ValueError("a balancer needs at least one endpoint")
        self.endpoints = tuple(endpoints)

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next request, avoiding ``exclude``; None if
        every endpoint is excluded."""
        raise NotImplementedError

    def carry_over(self, old: Balancer) -> None:
        """Take what ``old`` (same policy, the endpoint set before a change)
        learnt of the endpoints both have: a new set must not reset the
        loads and latencies of the endpoints that stay."""


class SmoothWeightedRoundRobin(Balancer):
    """nginx's smooth weighted round robin: weights 5:1:1 give
    a a b a c a a, not a a a a a b c, so no endpoint gets a burst."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        super().__init__(endpoints)
        self._current = [0] * len(self.endpoints)

    def carry_over(self, old: Balancer) -> None:
        if isinstance(old, SmoothWeightedRoundRobin):
            before = dict(zip(old.endpoints, old._current, strict=True))
            self._current = [before.get(endpoint, 0) for endpoint in self.endpoints]

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        best = -1
        total = 0
        current = self._current
        for i, endpoint in enumerate(self.endpoints):
            if exclude and endpoint in exclude:
                continue
            current[i] += endpoint.weight
            total += endpoint.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self.endpoints[best]


class RandomBalancer(Balancer):
    """Weighted random choice."""

    def __init__(self, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None) -> None:
        super().__init__(endpoints)
        self._rng = rng or random.Random()

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        choices = [e for e in self.endpoints if e not in exclude]
        if not choices:
            return None
        return self._rng.choices(choices, weights=[e.weight for e in choices])[0]


class LeastRequest(Balancer):
    """Power of two choices: of two random endpoints, the one with fewer
    requests in flight (per weight). The caller reports :meth:`started`
    and :meth:`finished`."""

    def __init__(self, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None) -> None:
        super().__init__(endpoints)
        self._rng = rng or random.Random()
        self.in_flight: dict[Endpoint, int] = dict.fromkeys(self.endpoints, 0)

    def carry_over(self, old: Balancer) -> None:
        if isinstance(old, LeastRequest):
            for endpoint in self.endpoints:
                self.in_flight[endpoint] = old.in_flight.get(endpoint, 0)

    def started(self, endpoint: Endpoint) -> None:
        self.in_flight[endpoint] += 1

    def finished(self, endpoint: Endpoint) -> None:
        count = self.in_flight.get(endpoint)
        if count is not None:  # None: the endpoint left the cluster while its try ran
            self.in_flight[endpoint] = max(0, count - 1)

    def _load(self, endpoint: Endpoint) -> float:
        return self.in_flight[endpoint] / endpoint.weight

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        choices = [e for e in self.endpoints if e not in exclude]
        if len(choices) <= 1:
            return choices[0] if choices else None
        a, b = self._rng.sample(choices, 2)
        return a if self._load(a) <= self._load(b) else b


class LowestLatency(LeastRequest):
    """Power of two choices on an EWMA of response times (the caller reports
    :meth:`observe`); endpoints not yet measured are tried first."""

    def __init__(self, endpoints: Sequence[Endpoint], *, alpha: float = 0.3, rng: random.Random | None = None) -> None:
        super().__init__(endpoints, rng=rng)
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be within (0, 1]")
        self.alpha = alpha
        self.latency: dict[Endpoint, float | None] = dict.fromkeys(self.endpoints)

    def carry_over(self, old: Balancer) -> None:
        super().carry_over(old)
        if isinstance(old, LowestLatency):
            for endpoint in self.endpoints:
                self.latency[endpoint] = old.latency.get(endpoint)

    def observe(self, endpoint: Endpoint, seconds: float) -> None:
        if endpoint not in self.latency:
            return  # it left the cluster while its try ran
        previous = self.latency[endpoint]
        self.latency[endpoint] = seconds if previous is None else previous + self.alpha * (seconds - previous)

    def _load(self, endpoint: Endpoint) -> float:
        latency = self.latency[endpoint]
        return -math.inf if latency is None else latency * (1 + self.in_flight[endpoint]) / endpoint.weight


class RingHash(Balancer):
    """Consistent hashing on a ring of virtual nodes (weight x ``replicas``
    points per endpoint): removing one of N endpoints moves only ~1/N keys."""

    def __init__(self, endpoints: Sequence[Endpoint], *, replicas: int = 160) -> None:
        super().__init__(endpoints)
        points = sorted(
            (hash_key(f"{endpoint.address}#{i}"), index)
            for index, endpoint in enumerate(self.endpoints)
            for i in range(replicas * endpoint.weight)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        if key is None:
            raise ValueError("a hash balancer needs a routing key")
        start = bisect.bisect(self._hashes, hash_key(key))
        n = len(self._hashes)
        for step in range(n):  # walk on past excluded endpoints
            endpoint = self.endpoints[self._owners[(start + step) % n]]
            if endpoint not in exclude:
                return endpoint
        return None


class Maglev(Balancer):
    """Google's Maglev table (size a prime, default 65537): near-perfect
    balance and minimal disruption, with an O(1) lookup."""

    def __init__(self, endpoints: Sequence[Endpoint], *, table_size: int = 65537) -> None:
        super().__init__(endpoints)
        n = len(self.endpoints)
        offsets = [hash_key(f"{e.address}/offset") % table_size for e in self.endpoints]
        skips = [hash_key(f"{e.address}/skip") % (table_size - 1) + 1 for e in self.endpoints]
        table = [-1] * table_size
        nexts = [0] * n
        credit = [0.0] * n
        max_weight = max(e.weight for e in self.endpoints)
        filled = 0
        while filled < table_size:  # ends: every round fills at least one slot
            for i in range(n):
                credit[i] += self.endpoints[i].weight / max_weight
                if credit[i] < 1:
                    continue
                credit[i] -= 1
                while True:
                    slot = (offsets[i] + nexts[i] * skips[i]) % table_size
                    nexts[i] += 1
                    if table[slot] < 0:
                        table[slot] = i
                        filled += 1
                        break
                if filled == table_size:
                    break
        self._table = table

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        if key is None:
            raise ValueError("a hash balancer needs a routing key")
        h = hash_key(key)
        size = len(self._table)
        for step in range(size):  # on exclusion, probe onwards
            endpoint = self.endpoints[self._table[(h + step) % size]]
            if endpoint not in exclude:
                return endpoint
        return None


class ModuloHash(Balancer):
    """``hash(key) mod N``: stable while the endpoints are, but removing one
    moves most keys (use :class:`RingHash` or :class:`Maglev` for that)."""

    def pick(self, key: str | bytes | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        if key is None:
            raise ValueError("a hash balancer needs a routing key")
        choices = [e for e in self.endpoints if e not in exclude]
        return choices[hash_key(key) % len(choices)] if choices else None


def pick_priority(endpoints: Sequence[Endpoint], healthy: Collection[Endpoint]) -> list[Endpoint]:
    """The healthy endpoints of the lowest priority level that has any:
    standby levels take traffic only when no primary is healthy."""
    levels = sorted({e.priority for e in endpoints})
    for level in levels:
        chosen = [e for e in endpoints if e.priority == level and e in healthy]
        if chosen:
            return chosen
    return []
