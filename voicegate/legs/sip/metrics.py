"""Counters of the SIP leg: plain ints bumped on the hot path, published when /metrics is scraped.

Owns: ``SipStats`` and its Prometheus collector. No asyncio, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["SipStats", "SipStatsCollector"]

_GAUGES = frozenset({"dialogs_active", "rtp_ports_in_use"})


@dataclass
class SipStats:
    """Every SIP dialog and RTP session of one server adds into one of these."""

    messages_in: int = 0
    messages_forwarded: int = 0  # handed to the worker that owns the dialog (serve --workers)
    messages_forward_dropped: int = 0  # that worker's inbox was full: dropped, as UDP may be
    messages_malformed: int = 0
    messages_oversize: int = 0
    requests_refused_source: int = 0
    invites_rate_limited: int = 0
    invites: int = 0
    invites_busy: int = 0
    invites_unauthorized: int = 0
    invites_not_acceptable: int = 0
    invites_cancelled: int = 0
    invites_redirected: int = 0  # 302 to the overflow destination
    retransmissions_absorbed: int = 0
    responses_retransmitted: int = 0
    no_ack_hangups: int = 0
    reinvites: int = 0
    unknown_dialog: int = 0
    dialogs_active: int = 0
    rtp_ports_in_use: int = 0
    rtp_in: int = 0
    rtp_out: int = 0
    rtp_malformed: int = 0
    rtp_foreign_source: int = 0  # from another source once latched
    rtp_refused_source: int = 0  # before the latch, from a source the signalling did not name
    rtp_unknown_payload: int = 0
    rtp_lost: int = 0
    rtp_gap_filled_samples: int = 0
    rtp_late: int = 0
    rtp_ssrc_changes: int = 0
    rtcp_in: int = 0
    dtmf_digits: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    media_timeouts: int = 0
    refers_sent: int = 0
    refers_refused: int = 0  # a 3xx-6xx answer to our REFER
    refer_notifies: int = 0  # NOTIFYs of a transfer's progress, answered 200
    transfers_handed_off: int = 0
    transfers_failed: int = 0

    def collector(self) -> SipStatsCollector:
        return SipStatsCollector(self)


class SipStatsCollector(Collector):
    """Exposes ``SipStats`` as ``voicegate_sip_*`` metrics."""

    def __init__(self, stats: SipStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        for f in fields(self._stats):
            value = getattr(self._stats, f.name)
            name = f"voicegate_sip_{f.name}"
            if f.name in _GAUGES:
                yield GaugeMetricFamily(name, f"SIP leg: {f.name.replace('_', ' ')}", value=value)
            else:
                yield CounterMetricFamily(name, f"SIP leg: {f.name.replace('_', ' ')}", value=value)
