"""Counters of the Twilio leg: plain ints bumped on the hot path, published at scrape time.

Every stream adds into one ``TwilioLegStats``; a Prometheus collector reads it when /metrics is
scraped. Delays are kept in ``FixedHistogram``s (bisect into fixed buckets, no locks, no
allocation): ``ingress`` is a caller media message's arrival to its audio handed to the Call,
``egress`` is an agent frame pulled from the Call to its media message written to the socket,
``ahead`` is the agent audio not yet confirmed played at each send.

Owns: ``TwilioLegStats``, ``TwilioLegCollector`` (``FixedHistogram`` is ``voicegate.histogram``'s). No asyncio, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from voicegate.histogram import FixedHistogram

__all__ = ["FixedHistogram", "TwilioLegCollector", "TwilioLegStats"]  # FixedHistogram: re-exported

DELAY_BUCKETS_MS = (
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    60.0,
    80.0,
    120.0,
    160.0,
)
AHEAD_BUCKETS_MS = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 200.0)
CUSHION_BUCKETS_MS = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0)


class TwilioLegStats:
    """All Twilio streams' counters (one instance per app)."""

    def __init__(self) -> None:
        self.webhooks = 0
        self.webhooks_refused = 0  # bad or missing signature, or a body too large (413)
        self.rejected_busy = 0  # answered <Reject reason="busy"/>
        self.status_callbacks = 0
        self.streams_started = 0
        self.streams_active = 0
        self.streams_refused_signature = 0
        self.streams_refused_token = 0
        self.streams_refused_busy = 0
        self.malformed_messages = 0
        self.unknown_events = 0
        self.media_in = 0
        self.media_in_bytes = 0
        self.media_before_start = 0
        self.sequence_missing = 0
        self.sequence_reordered = 0
        self.media_out = 0
        self.media_out_bytes = 0
        self.marks_out = 0
        self.marks_in = 0
        self.marks_unknown = 0
        self.clears = 0
        self.cleared_ms = 0
        self.dtmf = 0
        self.late_ticks = 0  # a 20 ms send tick ran more than one frame late
        self.skipped_ticks = 0  # ticks given up after the loop stalled for long
        self.held_frames_dropped = 0  # agent frames dropped because marks stopped coming back
        self.transfers = 0  # streams closed to hand the caller on (<Connect action> dials)
        self.played_wait_timeouts = 0  # closed before the last mark's echo came back
        self.overflow_dials = 0  # calls we could not take, dialled to the overflow
        self.next_requests = 0  # <Connect action> requests answered
        self.next_dials = 0  # of those, answered <Dial>
        self.dial_statuses = 0  # <Dial action> requests answered
        self.dial_unanswered = 0  # of those, busy / no-answer / failed / canceled
        self.placed_elsewhere = 0  # fleet: calls this pod placed on another pod
        self.placement_failures = 0  # fleet: the registry did not answer; decided locally
        self.ingress_ms = FixedHistogram(DELAY_BUCKETS_MS)
        self.egress_ms = FixedHistogram(DELAY_BUCKETS_MS)
        self.ahead_ms = FixedHistogram(AHEAD_BUCKETS_MS)
        self.cushion_ms = FixedHistogram(CUSHION_BUCKETS_MS)  # auto cushions, one per reply

    def snapshot(self) -> dict[str, float]:
        """Counters and delay quantiles as a flat dict (benchmarks, debugging)."""
        out: dict[str, float] = {
            k: v for k, v in vars(self).items() if isinstance(v, int) and not isinstance(v, bool)
        }
        for name in ("ingress_ms", "egress_ms", "ahead_ms", "cushion_ms"):
            hist: FixedHistogram = getattr(self, name)
            out[f"{name}_count"] = hist.count
            out[f"{name}_p50"] = hist.quantile(0.5)
            out[f"{name}_p99"] = hist.quantile(0.99)
            out[f"{name}_max_bucket"] = hist.quantile(1.0)
        return out


_COUNTERS = (
    ("webhooks", "voice webhooks received"),
    ("webhooks_refused", "webhooks refused: bad or missing signature, or body too large"),
    ("rejected_busy", "calls answered with Reject busy (full or draining)"),
    ("status_callbacks", "stream status callbacks recorded"),
    ("streams_started", "media streams that started a call"),
    ("streams_refused_signature", "stream upgrades refused for a bad or missing signature"),
    ("streams_refused_token", "streams refused for a missing, used or expired call token"),
    ("streams_refused_busy", "streams refused because no slot was free"),
    ("malformed_messages", "malformed messages received (answered with an error event)"),
    ("unknown_events", "messages with an event name we do not know"),
    ("media_in", "caller media messages"),
    ("media_in_bytes", "caller mu-law bytes"),
    ("media_before_start", "caller media messages that came before the stream's start (dropped)"),
    ("sequence_missing", "gaps in Twilio sequence numbers"),
    ("sequence_reordered", "repeated or out-of-order Twilio sequence numbers"),
    ("media_out", "agent media messages sent"),
    ("media_out_bytes", "agent mu-law bytes sent"),
    ("marks_out", "marks sent"),
    ("marks_in", "mark echoes received"),
    ("marks_unknown", "mark echoes with a name we did not send"),
    ("clears", "clear messages sent"),
    ("cleared_ms", "agent audio dropped from Twilio's queue by clear, ms"),
    ("dtmf", "DTMF digits received"),
    ("late_ticks", "send ticks that ran more than a frame late"),
    ("skipped_ticks", "send ticks skipped after a stall"),
    ("held_frames_dropped", "agent frames dropped because Twilio stopped confirming playout"),
    ("transfers", "streams closed to hand the caller to a person"),
    ("played_wait_timeouts", "streams closed before Twilio confirmed the last agent audio played"),
    ("overflow_dials", "calls we could not take answered with a Dial to the overflow"),
    ("next_requests", "Connect action requests answered"),
    ("next_dials", "Connect action requests answered with a Dial"),
    ("dial_statuses", "Dial action requests answered"),
    ("dial_unanswered", "dialled calls busy, unanswered, failed or canceled"),
    ("placed_elsewhere", "calls this pod placed on another pod of the fleet"),
    ("placement_failures", "fleet placements that failed (Redis), decided by this pod alone"),
)


class TwilioLegCollector(Collector):
    """Publishes a ``TwilioLegStats`` as ``voicegate_twilio_*`` metrics."""

    def __init__(self, stats: TwilioLegStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(f"voicegate_twilio_{name}", doc, value=getattr(s, name))
        yield GaugeMetricFamily(
            "voicegate_twilio_streams_active", "open media streams", value=s.streams_active
        )
        yield s.ingress_ms.prometheus(
            "voicegate_twilio_ingress_seconds",
            "caller media message arrival to audio handed to the call",
            scale=1e-3,
        )
        yield s.egress_ms.prometheus(
            "voicegate_twilio_egress_seconds",
            "agent frame pulled from the call to its media message written",
            scale=1e-3,
        )
        yield s.ahead_ms.prometheus(
            "voicegate_twilio_ahead_seconds",
            "agent audio sent and not yet confirmed played, at each send",
            scale=1e-3,
        )
        yield s.cushion_ms.prometheus(
            "voicegate_twilio_cushion_seconds",
            "silence sent ahead of each reply by the auto cushion (the loop's recent lateness)",
            scale=1e-3,
        )
