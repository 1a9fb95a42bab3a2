"""The Prometheus side of :class:`~shoal.interfaces.Metrics`: one registry per node.

Every metric of the catalogue (:data:`shoal.interfaces.METRICS`) is created up
front in a registry of the node's own (not ``prometheus_client``'s global
one, so two nodes in one process — tests, benches — keep their figures
apart), with the label values its spec knows in advance already exported at
zero. Recording looks the labelled child up in a dict, so a hot path pays
a dict lookup and an add; gauge sources are read when the metrics are
scraped, their gauges cleared first.

:meth:`PrometheusMetrics.quantile` estimates a quantile from a histogram's
buckets the way PromQL's ``histogram_quantile`` does (the benches print p50
and p99 from it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shoal.interfaces import METRICS, GaugeSource, MetricKind, MetricSpec

__all__ = ["PrometheusMetrics", "histogram_quantile"]

# No `*_created` series beside every counter and histogram: they double the
# series for a timestamp nobody alerts on (and the agent is the whole process).
disable_created_metrics()  # type: ignore[no-untyped-call]


class PrometheusMetrics:
    """Records Shoal's metrics in a ``prometheus_client`` registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._sources: list[GaugeSource] = []
        for spec in METRICS:
            self._metrics[spec.name] = _create(spec, self.registry)
            for values in spec.known:  # exported at zero from the start: no series appears later
                self._child(spec, values)

    def _child(self, metric: MetricSpec, labels: tuple[str, ...]) -> Any:
        key = (metric.name, labels)
        child = self._children.get(key)
        if child is None:
            try:
                parent = self._metrics[metric.name]
            except KeyError:
                raise KeyError(
                    f"metric {metric.name} is not in shoal.interfaces.METRICS: add it to "
                    "the Catalogue (and to docs/observability.md)"
                ) from None
            child = parent.labels(*labels) if metric.labels else parent
            self._children[key] = child
        return child

    def inc(self, metric: MetricSpec, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        self._child(metric, labels).inc(amount)

    def observe(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Record one observation in a histogram."""
        self._child(metric, labels).observe(value)

    def set(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Set a gauge."""
        self._child(metric, labels).set(value)

    def add_source(self, source: GaugeSource) -> Callable[[], None]:
        """Read gauges from ``source`` at every scrape, until the returned function is called."""
        self._sources.append(source)

        def remove() -> None:
            if source in self._sources:
                self._sources.remove(source)

        return remove

    def refresh(self) -> None:
        """Read every gauge source (each scrape does it first)."""
        samples = [sample for source in list(self._sources) for sample in source()]
        for spec in {spec.name: spec for spec, _, _ in samples}.values():
            if spec.labels:
                self._metrics[spec.name].clear()
                for key in [k for k in self._children if k[0] == spec.name]:
                    del self._children[key]
        for spec, labels, value in samples:
            self.set(spec, value, *labels)

    def exposition(self) -> tuple[bytes, str]:
        """Return the metrics in the Prometheus text format, and its content type."""
        self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def series(self) -> int:
        """Return how many series (samples) the registry exports now."""
        self.refresh()
        return sum(len(family.samples) for family in self.registry.collect())

    def count(self, metric: MetricSpec, **labels: str) -> float:
        """Return a histogram's count, or a counter's or gauge's value, summed over ``labels``."""
        name = metric.name + ("_count" if metric.kind == MetricKind.HISTOGRAM else "")
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def quantile(self, metric: MetricSpec, q: float, **labels: str) -> float | None:
        """Estimate quantile ``q`` (0-1) of a histogram over the label sets matching ``labels``.

        Interpolates linearly within the bucket the quantile falls in, as
        PromQL's ``histogram_quantile`` does; None without observations.
        """
        (estimate,) = self.quantiles([(metric, q, labels)])
        return estimate

    def quantiles(
        self, asked: Sequence[tuple[MetricSpec, float, Mapping[str, str]]]
    ) -> list[float | None]:
        """Estimate several quantiles (as :meth:`quantile`) from one collection of the registry."""
        for metric, _, _ in asked:
            if metric.kind != MetricKind.HISTOGRAM:
                raise ValueError(f"{metric.name} is a {metric.kind}, not a histogram")
        names = {metric.name + "_bucket" for metric, _, _ in asked}
        samples = [
            sample
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name in names
        ]
        estimates = []
        for metric, q, labels in asked:
            buckets: dict[float, float] = {}
            for sample in samples:
                if sample.name != metric.name + "_bucket":
                    continue
                if not all(sample.labels.get(k) == v for k, v in labels.items()):
                    continue
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            estimates.append(histogram_quantile(q, sorted(buckets.items())))
        return estimates


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Estimate quantile ``q`` as PromQL does, from cumulative ``(upper bound, count)`` pairs.

    The pairs are sorted by bound, +Inf last; None when there are no observations.
    """
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is the best guess
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _create(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    labels = list(spec.labels)
    if spec.kind == MetricKind.COUNTER:
        name = spec.name.removesuffix("_total")
        return Counter(name, spec.help, labels, registry=registry)
    if spec.kind == MetricKind.GAUGE:
        return Gauge(spec.name, spec.help, labels, registry=registry)
    return Histogram(spec.name, spec.help, labels, registry=registry, buckets=spec.buckets)
