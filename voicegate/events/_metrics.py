"""The EventLog's counters: a stats snapshot and the Prometheus collector that publishes it.

The EventLog counts with plain ints on its hot path; this collector reads them at scrape time.
Owns: EventLogStats and the ``voicegate_events_*`` metric names. Must not import redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["EventLogStats", "StatsCollector"]


@dataclass(frozen=True, slots=True)
class EventLogStats:
    """A snapshot of the EventLog's counters (the same numbers /metrics shows)."""

    emitted: int
    queued: int
    queued_bytes: int
    written: int
    batches: int
    duplicates_skipped: int
    journaled: int
    replayed: int
    dropped_queue_full: int
    dropped_malformed: int
    dropped_redis_rejected: int
    dropped_closed: int
    subscriber_dropped: int
    journal_bytes: int
    journal_corrupt_lines: int
    queue_peak: int
    is_redis_up: bool

    @property
    def dropped(self) -> int:
        return (
            self.dropped_queue_full
            + self.dropped_malformed
            + self.dropped_redis_rejected
            + self.dropped_closed
        )


class StatsCollector(Collector):
    """Publishes an EventLog's plain-int counters at scrape time."""

    def __init__(self, stats: Callable[[], EventLogStats]) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return self.collect()  # lets the registry refuse a second EventLog on it

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield _gauge(
            "voicegate_events_queued",
            "Events held in memory, not yet in Redis or the journal.",
            s.queued,
        )
        yield _gauge(
            "voicegate_events_queued_bytes", "Bytes of events held in memory.", s.queued_bytes
        )
        yield _gauge(
            "voicegate_events_journal_bytes",
            "Bytes of journaled events not yet replayed.",
            s.journal_bytes,
        )
        yield _gauge(
            "voicegate_events_redis_up",
            "1 when the event writer is connected to Redis.",
            int(s.is_redis_up),
        )
        yield _counter("voicegate_events_emitted", "Events emitted.", s.emitted)
        yield _counter(
            "voicegate_events_written", "Events written to Redis (replays included).", s.written
        )
        yield _counter(
            "voicegate_events_duplicates_skipped",
            "Re-sent events Redis already had (skipped).",
            s.duplicates_skipped,
        )
        yield _counter(
            "voicegate_events_journaled", "Events written to the on-disk journal.", s.journaled
        )
        yield _counter(
            "voicegate_events_replayed", "Journaled events written to Redis.", s.replayed
        )
        dropped = CounterMetricFamily(
            "voicegate_events_dropped", "Events lost, by reason.", labels=["reason"]
        )
        dropped.add_metric(["queue_full"], s.dropped_queue_full)
        dropped.add_metric(["malformed"], s.dropped_malformed)
        dropped.add_metric(["redis_rejected"], s.dropped_redis_rejected)
        dropped.add_metric(["closed"], s.dropped_closed)
        yield dropped
        yield _counter(
            "voicegate_events_subscriber_dropped",
            "Events a slow live subscriber missed.",
            s.subscriber_dropped,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
