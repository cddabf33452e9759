"""The stream filters sota-dispatch ships: ``fault_inject``, ``local_rate_limit``, ``rbac``.

Each is an ordinary :class:`~.api.StreamFilter`, declared under the
entry-point group ``sota_dispatch.filters`` by sota-dispatch's own
distribution, exactly as a third-party filter is: nothing here is special
to the proxy. Their answers are the protocol's own error replies, so a
bolt client sees a bolt status and a dubbo client a dubbo one.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Mapping
from typing import Any, ClassVar

from ..config.matching import Matcher, compile_match
from ..config.model import MATCH_TESTS, MatchConfig
from ..errors import ConfigError
from ..io.address import parse_address
from ..protocol.codec import Failure
from ..protocol.options import FILTER, Option, OptionSchema
from .api import FilterContext, FilterRequest, FilterResult, LocalReply, StreamFilter

__all__ = ["FaultInject", "LocalRateLimit", "Rbac"]

#: Failures by the name a config gives them (``upstream_reset``).
_FAILURES = {failure.name.lower(): failure for failure in Failure}


class FaultInject(StreamFilter):
    """Aborts and delays a share of requests, for resilience tests (MOSN faultinject, Envoy fault).

    A request is delayed with probability ``delay_percent`` and, after
    that, answered at once with the protocol's error reply for
    ``abort_failure`` with probability ``abort_percent``. The two draws are
    independent; a delay waits on the proxy's clock.
    """

    options: ClassVar[OptionSchema] = OptionSchema(
        abort_percent=Option("percent of requests answered with an error reply", Option.percent, 0.0, FILTER),
        abort_failure=Option(
            "the failure an aborted request's error reply reports", Option.one_of(*_FAILURES), "internal", FILTER
        ),
        delay_percent=Option("percent of requests delayed", Option.percent, 0.0, FILTER),
        delay=Option("how long a delayed request waits (e.g. 100ms)", Option.duration, 0.0, FILTER),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if values["delay_percent"] > 0 and values["delay"] <= 0:
            return {"delay": "needed (above zero) when delay_percent is set"}
        return {}

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        super().__init__(options, context)
        self.abort_percent: float = options["abort_percent"]
        self.abort = LocalReply(_FAILURES[options["abort_failure"]], public="fault injected", detail="fault_inject")
        self.delay_percent: float = options["delay_percent"]
        self.delay: float = options["delay"]
        self._random = random.Random()

    def on_request(self, request: FilterRequest) -> FilterResult:
        draw = self._random.random
        aborted = self.abort_percent > 0 and draw() * 100 < self.abort_percent
        if self.delay_percent > 0 and draw() * 100 < self.delay_percent:
            return self._delayed(self.abort if aborted else None)
        return self.abort if aborted else None

    async def _delayed(self, then: LocalReply | None) -> LocalReply | None:
        clock = self.context.clock
        await clock.sleep_until(clock.now() + self.delay)
        return then


class LocalRateLimit(StreamFilter):
    """A token bucket: requests over the rate are answered at once with the protocol's error reply.

    ``tokens_per_second`` refill a bucket of ``burst`` tokens (default: one
    second's worth); each request takes one, and a request that finds none
    gets a :attr:`~sota_dispatch.Failure.RATE_LIMITED` reply instead of
    waiting. One bucket per listener, or per route where a route's
    ``per_filter_config`` gives the filter options of its own.
    """

    options: ClassVar[OptionSchema] = OptionSchema(
        tokens_per_second=Option("the sustained rate, requests per second", Option.positive_number, None, FILTER),
        burst=Option("requests allowed at once (default: one second's worth)", Option.positive_int, None, FILTER),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any]) -> dict[str, str]:
        return {} if values["tokens_per_second"] is not None else {"tokens_per_second": "required"}

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        super().__init__(options, context)
        self.rate: float = options["tokens_per_second"]
        burst = options["burst"]
        self.burst: float = float(burst if burst is not None else max(1, math.ceil(self.rate)))
        self.tokens = self.burst
        self._stamp: float | None = None  # the first request's time (built before any event loop runs)
        public = f"over {self.rate:g} requests/s"
        self._refused = LocalReply(Failure.RATE_LIMITED, public=public, detail="local_rate_limit")

    def on_request(self, request: FilterRequest) -> FilterResult:
        now = request.now  # when it was read, on the proxy's clock: no clock call per request
        stamp = now if self._stamp is None else self._stamp
        if now < stamp:  # read before a request already counted (it waited in an earlier filter)
            now = stamp  # time does not go backwards for the bucket: it has what it has
        tokens = min(self.burst, self.tokens + (now - stamp) * self.rate)
        self._stamp = now
        if tokens < 1:
            self.tokens = tokens
            return self._refused
        self.tokens = tokens - 1
        return None


class Rbac(StreamFilter):
    """Allows or denies requests by a routing attribute and the client's address.

    The conditions given must all hold for a request to match: the routing
    attribute ``attribute`` tested as routes test theirs (``exact``,
    ``prefix``, ``regex``: a full match, or ``present``), and the client's
    address within one of ``source`` (addresses or networks, comma
    separated), and one of the names its TLS client certificate proves in
    ``principal`` (comma separated: Envoy's authenticated principal, on a
    mutual-TLS listener). ``action: deny`` (the default) refuses matching requests;
    ``allow`` refuses every other. Refused requests get the protocol's
    :attr:`~sota_dispatch.Failure.DENIED` reply. Several policies: several
    ``rbac`` filters in the chain.
    """

    options: ClassVar[OptionSchema] = OptionSchema(
        action=Option("deny the matching requests, or allow only them", Option.one_of("deny", "allow"), "deny", FILTER),
        attribute=Option("the routing attribute a test applies to", Option.text, None, FILTER),
        exact=Option("the attribute equals this", Option.text, None, FILTER),
        prefix=Option("the attribute starts with this", Option.text, None, FILTER),
        regex=Option("the attribute fully matches this regular expression", Option.text, None, FILTER),
        present=Option("1: the attribute is there; 0: it is not", Option.flag, None, FILTER),
        source=Option("client addresses or networks, comma separated (10.0.0.0/8,::1)", Option.text, None, FILTER),
        principal=Option(
            "names of client certificates (SAN or common name), comma separated (mutual TLS)",
            Option.text,
            None,
            FILTER,
        ),
    )

    @classmethod
    def check_options(cls, values: Mapping[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        tests = [test for test in MATCH_TESTS if values[test] is not None]
        if values["attribute"] is None:
            for test in tests:
                errors[test] = "needs attribute"
            if values["source"] is None and values["principal"] is None:
                errors["attribute"] = "give attribute (with a test), source or principal"
        else:
            try:
                _attribute_matcher(values)
            except ConfigError as exc:
                errors[tests[0] if len(tests) == 1 else "attribute"] = exc.problem
        if values["source"] is not None:
            try:
                _networks(values["source"])
            except ValueError as exc:
                errors["source"] = str(exc)
        return errors

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        super().__init__(options, context)
        self.deny = options["action"] == "deny"
        self.matcher: Matcher | None = _attribute_matcher(options) if options["attribute"] is not None else None
        source = options["source"]
        self.networks = _networks(source) if source is not None else None
        principal = options["principal"]
        self.principals = None if principal is None else frozenset(p.strip() for p in principal.split(",") if p.strip())
        self._sources: dict[str | None, bool] = {}
        self._refused = LocalReply(Failure.DENIED, detail=f"rbac ({options['action']})")

    def on_request(self, request: FilterRequest) -> FilterResult:
        matched = (
            (self.matcher is None or self.matcher(request.attributes))
            and (self.networks is None or self._source_matches(request.peer_address))
            and (self.principals is None or not self.principals.isdisjoint(request.peer_names))
        )
        return self._refused if matched is self.deny else None

    def _source_matches(self, address: str | None) -> bool:
        """Whether ``address`` is within ``source``, remembered per address:
        parsing an address costs microseconds, and a client's connection
        sends many requests. At most 4,096 addresses are kept."""
        known = self._sources.get(address)
        if known is None:
            if len(self._sources) >= 4096:
                self._sources.clear()
            known = self._sources[address] = _within(address, self.networks or ())
        return known


def _attribute_matcher(values: Mapping[str, Any]) -> Matcher:
    tests = {test: values[test] for test in MATCH_TESTS if values[test] is not None}
    return compile_match(MatchConfig(values["attribute"], **tests))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(text: str) -> tuple[Network, ...]:
    networks: list[Network] = []
    for part in text.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ValueError(f"expected addresses or networks (10.0.0.0/8), got {part.strip()!r}") from None
    return tuple(networks)


def _within(address: str | None, networks: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(parse_address(address)[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)
