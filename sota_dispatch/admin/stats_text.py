"""The admin's ``/stats`` and ``/clusters?format=text``: Envoy's text forms.

Operators coming from Envoy read ``cluster.backends.upstream_rq_total: 10``
and ``backends::10.0.0.7:9000::health_flags::healthy``; these render the
same metrics (the Prometheus families ``/metrics`` serves, or a
supervisor's sums of them) and the same cluster descriptions in those
shapes, so their habits and scripts carry over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["clusters_text", "stat_lines", "stats_body"]

#: Labels that scope a stat, outermost first: ``cluster.NAME.endpoint.ADDRESS.…``.
_SCOPES = ("cluster", "endpoint", "listener")
#: Labels left out of the dotted name (the listener's name already says it).
_SILENT = frozenset({"protocol", "le"})


def stat_lines(families: Iterable[Any]) -> list[tuple[str, float]]:
    """``(dotted name, value)`` for every counter and gauge sample of
    prometheus-client ``Metric`` families, and each histogram's count and
    sum, sorted by name: ``sota_upstream_requests_total{cluster="c",
    outcome="success"}`` becomes ``cluster.c.upstream_requests.success``;
    metrics without a scope (the process's, the buffer budget) are under
    ``server.``."""
    lines: list[tuple[str, float]] = []
    for family in families:
        for sample in family.samples:
            name = sample.name
            if name.endswith(("_bucket", "_created")):
                continue
            if name.endswith("_total") and family.type == "counter":
                name = name[: -len("_total")]
            if name.startswith("sota_"):
                name = name[len("sota_") :]
            labels: Mapping[str, str] = sample.labels
            scope = [f"{key}.{labels[key]}" for key in _SCOPES if key in labels]
            rest = [value for key, value in labels.items() if key not in _SCOPES and key not in _SILENT]
            lines.append((".".join([*(scope or ["server"]), name, *rest]), sample.value))
    lines.sort()
    return lines


def stats_body(lines: list[tuple[str, float]], query: Mapping[str, list[str]]) -> tuple[str, str]:
    """``/stats`` as ``(content type, body)``: ``?filter=REGEX`` keeps the
    names it matches, ``?usedonly`` the non-zero ones, ``?format=json``
    gives ``{"stats": [{"name", "value"}]}``. Raises :class:`ValueError`
    (a 400) for a bad filter or format."""
    pattern = query.get("filter", [""])[-1]
    if pattern:
        try:
            matches = re.compile(pattern).search
        except re.error as exc:
            raise ValueError(f"filter {pattern!r} is not a regular expression: {exc}") from None
        lines = [line for line in lines if matches(line[0])]
    if "usedonly" in query:
        lines = [line for line in lines if line[1]]
    form = query.get("format", ["text"])[-1]
    if form == "json":
        stats = [{"name": name, "value": _number(value)} for name, value in lines]
        return "application/json", json.dumps({"stats": stats}, indent=2) + "\n"
    if form != "text":
        raise ValueError(f"format {form!r}: use text or json")
    return "text/plain; charset=utf-8", "".join(f"{name}: {_number(value)}\n" for name, value in lines)


def clusters_text(clusters: Mapping[str, Any]) -> str:
    """``/clusters?format=text``: one ``cluster::endpoint::stat::value`` line
    per fact, as Envoy prints them; a supervisor's ``{"workers": [{slot,
    clusters}]}`` gets a ``worker N::`` prefix on each worker's lines."""
    workers = clusters.get("workers")
    if isinstance(workers, list):
        return "".join(
            f"worker {worker.get('slot')}::{line}\n"
            for worker in workers
            for line in clusters_text(worker.get("clusters", {})).splitlines()
        )
    out: list[str] = []
    for name, cluster in clusters.items():
        for key in ("lb", "active_requests", "connections"):
            if key in cluster:
                out.append(f"{name}::{key}::{cluster[key]}")
        for endpoint in cluster.get("endpoints", []):
            prefix = f"{name}::{endpoint['address']}"
            out.append(f"{prefix}::health_flags::{endpoint.get('health')}")
            for key in ("weight", "priority", "breaker", "in_flight"):
                if endpoint.get(key) is not None:
                    out.append(f"{prefix}::{key}::{endpoint[key]}")
            for key, value in (endpoint.get("stats") or {}).items():
                out.append(f"{prefix}::{key}::{value}")
    return "".join(f"{line}\n" for line in out)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
