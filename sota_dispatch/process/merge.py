"""One ``/metrics`` for several worker processes, as Prometheus' own multi-process mode gives.

Each worker renders its metrics as usual; the supervisor parses the texts
and sums samples with the same name and labels: counters and histograms
(buckets, counts and sums) over every worker that ever ran, so they never
go backwards when a worker dies (a dead worker's last report is kept, as
prometheus-client keeps a dead process's counter files); gauges over the
live workers only (prometheus-client's ``livesum``). Names, labels and help
stay those of a single process, so dashboards work unchanged. The
workers' ``process_*`` metrics add up to their total CPU time, memory and
open files; start time and the descriptor limit, which do not add up, are
left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

__all__ = ["MetricsSum"]

#: Families whose samples outlive the worker that counted them.
_CUMULATIVE = frozenset({"counter", "histogram", "summary"})

#: Per-process values that mean nothing summed (the other ``process_*``
#: ones add up to the workers' total: CPU seconds, memory, open files).
_NOT_ADDITIVE = frozenset({"process_start_time_seconds", "process_max_fds"})

Labels = tuple[tuple[str, str], ...]


@attrs.define
class _Family:
    kind: str
    documentation: str
    samples: dict[tuple[str, Labels], float] = attrs.Factory(dict)


@attrs.define(eq=False)
class MetricsSum:
    """Metric families summed over worker reports."""

    families: dict[str, _Family] = attrs.Factory(dict)

    def add(self, text: str, *, gauges: bool = True) -> None:
        """Add one worker's exposition text (``gauges=False``: its counters
        and histograms only, for a worker that has exited)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            if (not gauges and family.type not in _CUMULATIVE) or family.name in _NOT_ADDITIVE:
                continue
            mine = self.families.setdefault(family.name, _Family(family.type, family.documentation))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                mine.samples[key] = mine.samples.get(key, 0.0) + sample.value

    def copy(self) -> MetricsSum:
        return MetricsSum(
            {name: _Family(f.kind, f.documentation, dict(f.samples)) for name, f in self.families.items()}
        )

    def collect(self) -> Iterator[object]:
        """prometheus-client ``Metric`` objects (a collector's ``collect``)."""
        from prometheus_client.metrics_core import Metric

        for name, family in self.families.items():
            metric = Metric(name, family.documentation, family.kind)
            for (sample_name, labels), value in _ordered(family.samples.items()):
                metric.add_sample(sample_name, dict(labels), value)
            yield metric

    def render(self) -> bytes:
        """The Prometheus text exposition of the sums."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)  # type: ignore[arg-type]
        return generate_latest(registry)


def _ordered(
    samples: Iterable[tuple[tuple[str, Labels], float]],
) -> list[tuple[tuple[str, Labels], float]]:
    """Samples in a stable order: by labels, then name (``_bucket`` before
    ``_count`` and ``_sum``), histogram buckets by their bound."""

    def key(item: tuple[tuple[str, Labels], float]) -> tuple[Labels, str, float]:
        (name, labels), _ = item
        bound = dict(labels).get("le")
        return tuple(pair for pair in labels if pair[0] != "le"), name, float(bound) if bound is not None else 0.0

    return sorted(samples, key=key)
