"""Histograms for hot paths: fixed buckets, a bisect and a list update per observation.

prometheus-client's ``Histogram`` takes a lock per ``observe``; these are observed from one
thread each (an event loop, the garbage collector's callback) and read when scraped.

Owns: FixedHistogram, Timings. Imports prometheus-client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["FixedHistogram", "Timings"]


class FixedHistogram:
    """Counts of observations per fixed upper bound (the last bucket is +Inf)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (inf when it is the last bucket)."""
        total = self.count
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")

    def cumulative(self, scale: float = 1.0) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound * ``scale``, observations at or below it)."""
        buckets: list[tuple[str, float]] = []
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            seen += n
            buckets.append((repr(bound * scale), seen))
        buckets.append(("+Inf", seen + self.counts[-1]))
        return buckets

    def prometheus(self, name: str, doc: str, scale: float = 1.0) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc)
        family.add_metric([], self.cumulative(scale), self.sum * scale)
        return family


class Timings(FixedHistogram, Collector):
    """A ``FixedHistogram`` of seconds that is its own collector (one unlabelled family), and
    keeps the largest value seen."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        super().__init__(bounds)
        self.name = name
        self.documentation = documentation
        self.max_s = float("-inf")

    def observe(self, value: float) -> None:
        super().observe(value)
        if value > self.max_s:
            self.max_s = value

    def collect(self) -> Iterator[Metric]:
        yield self.prometheus(self.name, self.documentation)
