"""A Twilio caller whose media stops mid-speech while the socket stays open (a frozen peer),
against the real app over real sockets: the missing media is silence for the persona's silence
timeout, and VOICEGATE_TWILIO_MEDIA_TIMEOUT_S ends the call as ``media_timeout`` on its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voicegate.audio import caller_speech_ms, load_caller

from ..gateway import REPO, serving
from .twilio_helpers import AUTH_TOKEN, PUBLIC_URL, TwilioGateway, start_twilio_gateway

CALLED = "+14155550100"  # bank_teller in telephony/numbers.yaml
CALLER = "+15005550006"


@pytest.fixture
def short_silence_gateway(redis_url: str, tmp_path: Path) -> Iterator[TwilioGateway]:
    """bank_teller with a 3 s silence timeout; the media timeout off, so only silence ends it."""
    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    teller = personas / "bank_teller.yaml"
    teller.write_text(teller.read_text().replace("silence_timeout_s: 30", "silence_timeout_s: 3"))
    yield from serving(
        start_twilio_gateway(redis_url, tmp_path, personas_dir=personas, twilio_media_timeout_s=0)
    )


@pytest.fixture
def media_timeout_gateway(redis_url: str, tmp_path: Path) -> Iterator[TwilioGateway]:
    """The shipped personas (30 s silence timeout) and a 1 s media timeout."""
    yield from serving(start_twilio_gateway(redis_url, tmp_path, twilio_media_timeout_s=1.0))


def first_half_of_a_sentence() -> Any:
    start_ms, end_ms = caller_speech_ms()[0]
    return load_caller(8000)[: (start_ms + end_ms) // 2 * 8]  # cut mid-word, speech still on


async def test_media_that_stops_mid_speech_counts_as_silence(
    short_silence_gateway: TwilioGateway,
) -> None:
    gw = short_silence_gateway
    async with gw.simulator(AUTH_TOKEN, PUBLIC_URL) as twilio:
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(first_half_of_a_sentence())
        # the socket stays open and quiet: no media, no stop
        await stream.wait_closed(15)  # without the fix: open until max_duration_s (600 s)
        assert stream.report.close_reason == "silence_timeout"
    events = await gw.events(placed.call_sid)
    assert events[-1]["type"] == "call.ended" and events[-1]["reason"] == "silence_timeout"


async def test_a_stream_whose_media_stopped_ends_as_media_timeout(
    media_timeout_gateway: TwilioGateway,
) -> None:
    gw = media_timeout_gateway
    async with gw.simulator(AUTH_TOKEN, PUBLIC_URL) as twilio:
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(first_half_of_a_sentence())
        await stream.wait_closed(10)  # without the fix: until the ping finds it, or never
        assert (stream.report.close_code, stream.report.close_reason) == (1000, "media_timeout")
        # a call whose media keeps coming is not touched by the timeout
        placed2 = await twilio.place_call(CALLER, CALLED)
        steady = await twilio.open_stream(placed2)
        await steady.play_silence(2500)
        assert not steady.is_closed
        await steady.stop()
    events = await gw.events(placed.call_sid)
    assert events[-1]["type"] == "call.ended" and events[-1]["reason"] == "media_timeout"
    events2 = await gw.events(placed2.call_sid)
    assert events2[-1]["reason"] == "caller_hangup"
