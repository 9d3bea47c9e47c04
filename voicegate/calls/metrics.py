"""Prometheus metrics of calls and of the engine behind them, on a registry passed in.

Counters of a call's hot path are plain ints on the Call; they reach Prometheus only when the
call ends (histograms, totals) or when /metrics is scraped (the collector reads the live calls
and ``engine.stats()``). Nothing here runs per frame.

Owns: CallMetrics. Imports prometheus_client; no voicegate module but engine.base.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voicegate.engine.base import EngineStats

__all__ = ["CallMetrics"]

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
_COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 500)


class CallMetrics:
    """The call metrics; ``engine_stats`` (optional) is read at scrape time."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        engine_stats: Callable[[], EngineStats] | None = None,
    ) -> None:
        self.active = Gauge(
            "voicegate_calls_active", "Calls in progress.", ["leg"], registry=registry
        )
        self.total = Counter(
            "voicegate_calls",
            "Calls ended, by leg and end reason.",
            ["leg", "reason"],
            registry=registry,
        )
        self.rejected = Counter(
            "voicegate_calls_rejected",
            "Calls refused at admission (full: no slot or max_calls; edge: the event loop's measured capacity; draining: shutting down; engine_fault: the engine is being rebuilt).",
            ["leg", "why"],
            registry=registry,
        )
        self.transfers = Counter(
            "voicegate_call_transfers",
            "Transfers asked by a persona's call flow, by leg and outcome (handed_off: our side "
            "let the call go; failed: refused or failed, the call stayed; unsupported).",
            ["leg", "outcome"],
            registry=registry,
        )
        self.transfer_latency = Histogram(
            "voicegate_call_transfer_latency_seconds",
            "Trigger (key, phrase, limit) to the call handed off (stream closed / REFER accepted).",
            ["leg"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.bargein_latency = Histogram(
            "voicegate_bargein_latency_seconds",
            "Caller speech onset to the agent's audio stopping, per barge-in.",
            ["leg"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.bargein_discarded = Histogram(
            "voicegate_bargein_discarded_seconds",
            "Queued agent audio dropped at a barge-in (ours and the far side's).",
            ["leg"],
            buckets=(0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5),
            registry=registry,
        )
        self.call_underruns = Histogram(
            "voicegate_call_underruns",
            "Per call: leg pulls that found no agent audio queued.",
            ["leg"],
            buckets=_COUNT_BUCKETS,
            registry=registry,
        )
        self.call_overruns = Histogram(
            "voicegate_call_overruns",
            "Per call: times agent audio queued past the limit was dropped.",
            ["leg"],
            buckets=_COUNT_BUCKETS,
            registry=registry,
        )
        self.call_duration = Histogram(
            "voicegate_call_duration_seconds",
            "Call durations.",
            ["leg"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
            registry=registry,
        )
        self.caller_turn_end_lag = Histogram(
            "voicegate_caller_turn_end_lag_seconds",
            "Caller STT end-of-turn signal: from the end of the caller's last word to the "
            "model saying the caller's turn ended (models with the head: stt-1b-en_fr).",
            ["leg"],
            buckets=(0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
            registry=registry,
        )
        self._engine_stats = engine_stats
        if registry is not None and engine_stats is not None:
            registry.register(_EngineCollector(engine_stats))


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            s = self._stats()
        except Exception:
            return
        yield _counter("voicegate_engine_ticks", "Engine ticks run.", s.ticks)
        yield _counter(
            "voicegate_engine_late_ticks", "Ticks that ended after the next was due.", s.late_ticks
        )
        yield _counter(
            "voicegate_engine_skipped_ticks", "Ticks skipped to catch up.", s.skipped_ticks
        )
        yield _counter("voicegate_engine_tick_errors", "Model steps that raised.", s.tick_errors)
        yield _counter("voicegate_engine_sink_errors", "Sink callbacks that raised.", s.sink_errors)
        yield _counter(
            "voicegate_engine_slot_underruns", "Ticks that found no caller frame.", s.underruns
        )
        yield _counter(
            "voicegate_engine_slot_overruns", "Caller frames dropped (queue full).", s.overruns
        )
        yield _counter(
            "voicegate_engine_reanchors",
            "Long calls' contexts rebuilt (persona prompt + last frames) before the persona "
            "left the 240 s window.",
            s.reanchors,
        )
        yield _counter(
            "voicegate_engine_reanchor_seconds",
            "Engine time those rebuilds took, summed.",
            s.reanchor_ms / 1000.0,
        )
        yield _gauge("voicegate_engine_active_slots", "Slots in use.", s.active_slots)
        yield _gauge("voicegate_engine_max_slots", "Slots in the batch.", s.max_slots)
        yield _gauge(
            "voicegate_engine_tick_ms_p50",
            "Median tick time over recent ticks (ms).",
            s.tick_ms_p50,
        )
        yield _gauge(
            "voicegate_engine_tick_ms_p99", "p99 tick time over recent ticks (ms).", s.tick_ms_p99
        )
        # per-call context: joins with their own prompt (text phases computed per call)
        yield _counter(
            "voicegate_engine_call_prompts", "Joins with a per-call text prompt.", s.call_prompts
        )
        yield _counter(
            "voicegate_engine_call_prompt_errors",
            "Per-call prompts that could not be computed (the call used its persona's).",
            s.call_prompt_errors,
        )
        yield _counter(
            "voicegate_engine_call_prompt_forced",
            "Per-call prompts computed with no room before the next tick (waited the longest).",
            s.call_prompt_forced,
        )
        yield _gauge(
            "voicegate_engine_join_ms_p99",
            "p99 of join to the prompt state in the slot over recent joins (ms).",
            s.join_ms_p99,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
