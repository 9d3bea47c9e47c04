"""VOICEGATE_TWILIO_CUSHION_MS: silence ahead of each reply, which stays queued at Twilio;
fixed, or (-1, the default) as large as the event loop's recent worst lateness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voicegate.histogram import FixedHistogram
from voicegate.legs.twilio.metrics import CUSHION_BUCKETS_MS

from ..gateway import serving
from .twilio_helpers import AUTH_TOKEN, PUBLIC_URL, TwilioGateway, start_twilio_gateway

RATE = 8000
CALLED = "+14155550100"
CALLER = "+15005550006"


@pytest.fixture
def uncushioned(redis_url: str, tmp_path: Path) -> Iterator[TwilioGateway]:
    yield from serving(start_twilio_gateway(redis_url, tmp_path, twilio_cushion_ms=0))


@pytest.fixture
def cushioned(redis_url: str, tmp_path: Path) -> Iterator[TwilioGateway]:
    yield from serving(start_twilio_gateway(redis_url, tmp_path, twilio_cushion_ms=30))


def _queued_at_arrivals(arrivals: list[tuple[float, int]], t0: float) -> np.ndarray:
    """For each media message after the first: how much agent audio was still queued at
    Twilio when it arrived (ms; its start on the playout timeline minus its arrival)."""
    times = np.array([t for t, _ in arrivals[1:]])
    starts = np.array([o for _, o in arrivals[1:]]) / RATE
    return (starts - (times - t0)) * 1000


async def _echo_of_a_tone(gw: TwilioGateway) -> tuple[list[tuple[float, int]], float]:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(int(1.2 * RATE)) / RATE)).astype(np.int16)
    async with gw.simulator(AUTH_TOKEN, PUBLIC_URL) as twilio:
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(tone)
        await stream.stop()
        report = stream.report
        assert report.protocol_errors == []
        assert report.media_messages > 10  # the echo engine sent the tone back
        return list(report.arrivals), stream.t0


async def test_each_media_message_finds_the_cushion_still_queued(
    cushioned: TwilioGateway,
) -> None:
    arrivals, t0 = await _echo_of_a_tone(cushioned)
    queued = _queued_at_arrivals(arrivals, t0)
    # the reply's first message carried 30 ms more silence than it plays in real time, so
    # every later one arrives with about that much still to play (minus this box's jitter)
    assert np.median(queued) > 20
    assert cushioned.app.state.twilio.cushion_ms == 30


async def test_without_a_cushion_messages_arrive_as_the_queue_runs_dry(
    uncushioned: TwilioGateway,
) -> None:
    arrivals, t0 = await _echo_of_a_tone(uncushioned)
    assert np.median(_queued_at_arrivals(arrivals, t0)) < 10


async def _auto_cushions(gw: TwilioGateway, lateness_s: float) -> tuple[float, FixedHistogram]:
    """A tone's echo with the loop's recent lateness read as ``lateness_s``: the median audio
    queued at Twilio at each later message (ms), and the cushions sent (this call's only)."""
    twilio = gw.app.state.twilio
    assert twilio.cushion_ms == -1  # the default
    real, stats = twilio.lateness, twilio.stats.cushion_ms
    twilio.lateness = lambda: lateness_s
    twilio.stats.cushion_ms = FixedHistogram(CUSHION_BUCKETS_MS)
    try:
        arrivals, t0 = await _echo_of_a_tone(gw)
        return float(np.median(_queued_at_arrivals(arrivals, t0))), twilio.stats.cushion_ms
    finally:
        twilio.lateness, twilio.stats.cushion_ms = real, stats


async def test_the_auto_cushion_is_the_loops_recent_lateness(gateway: TwilioGateway) -> None:
    queued, cushions = await _auto_cushions(gateway, 0.0305)  # a probe woke 30.5 ms late
    assert queued > 20
    assert cushions.count >= 1 and cushions.quantile(0.5) == 40.0  # 31 ms: the 30-40 bucket


async def test_a_loop_that_keeps_time_gets_no_auto_cushion(gateway: TwilioGateway) -> None:
    queued, cushions = await _auto_cushions(gateway, 0.0)
    assert queued < 10  # no delay added
    assert cushions.count >= 1 and cushions.quantile(1.0) == 0.0
