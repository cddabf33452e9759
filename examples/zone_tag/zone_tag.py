"""zone_tag: tags each request with the zone of the client it came from."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from sota_dispatch import Failure, Option, OptionSchema, parse_address
from sota_dispatch.filters import FilterContext, FilterRequest, FilterResult, LocalReply, StreamFilter
from sota_dispatch.protocol.options import FILTER


def read_zones(raw: str) -> dict[Any, str]:
    """``NETWORK=ZONE`` pairs, comma separated (``10.1.0.0/16=eu,10.2.0.0/16=us``)."""
    zones = {}
    for pair in raw.split(","):
        network, sep, zone = pair.strip().partition("=")
        if not sep or not zone:
            raise ValueError(f"expected NETWORK=ZONE, got {pair.strip()!r}")
        zones[ipaddress.ip_network(network, strict=False)] = zone
    return zones


class ZoneTag(StreamFilter):
    """Sets the routing attribute ``zone`` from the client's address; refuses unknown clients."""

    options: ClassVar[OptionSchema] = OptionSchema(
        zones=Option("NETWORK=ZONE pairs, comma separated", read_zones, {}, FILTER),
        unknown=Option("a client in no zone: deny, or the zone to give it", Option.text, "deny", FILTER),
    )

    def __init__(self, options: Mapping[str, Any], context: FilterContext) -> None:
        super().__init__(options, context)
        self.zones: dict[Any, str] = options["zones"]
        self.unknown: str = options["unknown"]
        self.answered: Counter[str] = Counter()  # answers per zone and outcome

    def zone_of(self, address: str | None) -> str | None:
        if address is not None:
            ip = ipaddress.ip_address(parse_address(address)[0])
            for network, zone in self.zones.items():
                if ip in network:
                    return zone
        return None if self.unknown == "deny" else self.unknown

    def on_request(self, request: FilterRequest) -> FilterResult:
        zone = self.zone_of(request.peer_address)
        if zone is None:
            return LocalReply(Failure.DENIED, public="unknown client")
        request.set_attribute("zone", zone)  # routes can match it, hash balancers hash it
        return None

    def on_response(self, request: FilterRequest) -> None:
        self.answered[f"{request.attributes.get('zone')} {request.outcome}"] += 1
