"""The Twilio leg against the real app over real sockets (echo engine, real Redis)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest

from voicegate.audio import caller_speech_ms, load_caller
from voicegate.legs.twilio.sim import TwilioSimulator

from .twilio_helpers import TwilioGateway

CALLED = "+14155550100"  # bank_teller in telephony/numbers.yaml
CALLER = "+15005550006"


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


async def test_voice_webhook_answers_connect_stream(twilio: TwilioSimulator) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    assert placed.status_code == 200
    root = ET.fromstring(placed.twiml)
    assert [el.tag for el in root] == ["Connect"]
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.attrib["url"] == "wss://gw.test/twilio/media"
    assert stream.attrib["statusCallback"] == "https://gw.test/twilio/status"
    assert placed.parameters["persona"] == "bank_teller"
    assert len(placed.parameters["token"]) >= 32
    other = await twilio.place_call(CALLER, "+19999999999")
    assert other.parameters["persona"] == "support_agent"  # numbers.yaml default
    assert other.parameters["token"] != placed.parameters["token"]


@pytest.mark.parametrize("signature", [None, "bogus", "wrong-url"])
async def test_unsigned_or_wrongly_signed_webhooks_get_403(
    gateway: TwilioGateway,
    twilio: TwilioSimulator,
    signature: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = twilio.voice_params("CA" + "1" * 32, CALLER, CALLED)
    if signature == "wrong-url":
        # signed for the internal address instead of the public URL Twilio uses
        async with gateway.simulator(public_url=gateway.base_url) as internal:
            signature = internal._signer.sign_webhook("/twilio/voice", params)
    refused = gateway.twilio_stats.webhooks_refused
    with caplog.at_level(logging.WARNING, logger="voicegate.legs.twilio"):
        response = await twilio.post_signed("/twilio/voice", params, signature=signature)
    assert response.status_code == 403
    assert gateway.twilio_stats.webhooks_refused == refused + 1
    assert any("refused (403)" in r.getMessage() for r in caplog.records)
    status = await twilio.post_signed("/twilio/status", {"CallSid": "CA1"}, signature=signature)
    assert status.status_code == 403


async def test_webhook_signed_with_another_auth_token_gets_403(gateway: TwilioGateway) -> None:
    async with gateway.simulator(auth_token="another-accounts-token") as forger:
        placed = await forger.place_call(CALLER, CALLED)
    assert placed.status_code == 403


async def test_unsigned_stream_is_closed_1008(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    for signature in (None, "bogus"):
        stream = await twilio.open_stream(placed, signature=signature)
        await stream.wait_closed(5)
        assert stream.report.close_code == 1008
        assert stream.report.media_messages == 0
    assert gateway.calls.active_count == 0


async def test_bad_or_reused_token_is_closed_1008(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    forged = dataclasses.replace(placed, parameters={**placed.parameters, "token": "x" * 32})
    stream = await twilio.open_stream(forged)
    await stream.wait_closed(5)
    assert (stream.report.close_code, stream.report.close_reason) == (1008, "invalid call token")

    good = await twilio.open_stream(placed)
    await asyncio.sleep(0.1)
    assert not good.is_closed
    replay = await twilio.open_stream(placed)  # the token worked once
    await replay.wait_closed(5)
    assert replay.report.close_code == 1008
    await good.stop()


async def test_call_end_to_end(gateway: TwilioGateway, twilio: TwilioSimulator) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(1.5))
    await stream.dtmf("5")
    await stream.play_silence(400)
    await stream.stop()
    await gateway.wait_idle()

    report = stream.report
    # message shapes: the simulator parses strictly and counts anything off
    assert report.protocol_errors == []
    assert report.wrong_stream_sid == 0
    assert report.media_messages > 20
    assert report.marks_received == report.media_messages  # a mark after each chunk
    # pacing: never more than 100 ms ahead of Twilio's (simulated) playout clock
    assert report.max_ahead_ms <= 100.5
    # the echo engine sent the caller's tone back
    heard = stream.heard_pcm().astype(np.float64)
    assert np.sqrt(np.mean(heard**2)) > 500

    events = await gateway.events(placed.call_sid)
    kinds = [e["type"] for e in events]
    assert kinds.count("call.started") == 1
    started = events[kinds.index("call.started")]
    assert (started["persona"], started["from"], started["to"]) == ("bank_teller", CALLER, CALLED)
    assert started["leg"] == "twilio" and started["leg_call_ref"] == placed.call_sid
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["5"]
    assert "leg.status" in kinds  # the stream-started callback
    ended = [e for e in events if e["type"] == "call.ended"]
    assert len(ended) == 1 and ended[0]["reason"] == "caller_hangup"


async def test_output_is_paced_against_the_playout_clock(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(2.0, hz=300))
    await stream.stop()
    report = stream.report
    assert len(report.ahead_samples_ms) > 30  # ~1.8 s of agent audio in 40 ms messages
    assert max(report.ahead_samples_ms) <= 100.5
    # one message per send period: 40 ms = 320 samples by default
    offsets = [offset for _, offset in report.arrivals]
    assert float(np.median(np.diff(offsets))) == 320
    # real time: media arrivals are spread over the audio's own duration, not bursted
    first, last = report.arrivals[0][0], report.arrivals[-1][0]
    received_ms = report.media_bytes / 8
    assert last - first >= (received_ms - 100) / 1000


async def test_stop_frees_the_slot_and_full_gateway_rejects_busy(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    streams = []
    for _ in range(2):
        placed = await twilio.place_call(CALLER, CALLED)
        assert placed.is_connect
        streams.append(await twilio.open_stream(placed))
    await asyncio.sleep(0.1)
    assert gateway.calls.active_count == 2
    busy = await twilio.place_call(CALLER, CALLED)
    assert busy.reject_reason == "busy" and not busy.is_connect
    await streams[0].stop()
    for _ in range(200):
        if gateway.calls.active_count == 1:
            break
        await asyncio.sleep(0.01)
    assert gateway.calls.active_count == 1
    again = await twilio.place_call(CALLER, CALLED)
    assert again.is_connect
    await streams[1].drop()  # a dropped socket frees its slot too
    await gateway.wait_idle()
    events = await gateway.events(streams[1].call.call_sid)
    assert events[-1]["type"] == "call.ended"


async def test_malformed_frames_are_reported_and_other_calls_are_unaffected(
    gateway: TwilioGateway, twilio: TwilioSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    bad_placed = await twilio.place_call(CALLER, CALLED)
    good_placed = await twilio.place_call(CALLER, CALLED)
    bad = await twilio.open_stream(bad_placed)
    good = await twilio.open_stream(good_placed)
    garbage = [
        "{not json",
        '["media"]',
        json.dumps({"event": "media", "media": {"payload": "@@@"}, "streamSid": bad.stream_sid}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": "55"}, "streamSid": bad.stream_sid}),
        '{"event":"media","sequenceNumber":"x","media":{"payload":""}}',
    ]

    async def misbehave() -> None:
        for text in garbage:
            await bad.send_text(text)
            await bad.play(tone(0.2))
        await bad.play(tone(0.4))

    with caplog.at_level(logging.WARNING, logger="voicegate.legs.twilio"):
        await asyncio.gather(misbehave(), good.play(tone(1.6, hz=500)))
    assert not bad.is_closed  # the call went on
    await bad.stop()
    await good.stop()
    await gateway.wait_idle()

    bad_events = await gateway.events(bad_placed.call_sid)
    errors = [e for e in bad_events if e["type"] == "error"]
    assert len(errors) == len(garbage)
    assert all(e["code"] == "malformed_message" for e in errors)
    assert sum("malformed message" in r.getMessage() for r in caplog.records) == len(garbage)
    assert bad.report.media_messages > 10  # it still got the echo of its good frames

    good_events = await gateway.events(good_placed.call_sid)
    assert not [e for e in good_events if e["type"] == "error"]
    assert good.report.protocol_errors == [] and good.report.max_ahead_ms <= 100.5
    assert good_events[-1]["reason"] == "caller_hangup"


async def test_clear_drops_queued_audio_and_returns_marks(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    leg = gateway.app.state.twilio
    loop = gateway.app.state.loop

    async def clear_mid_reply() -> None:
        await asyncio.sleep(0.8)  # the echo of the tone is playing by now
        gateway_stream = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(_get_stream(leg, placed.call_sid), loop)
        )
        assert gateway_stream is not None and gateway_stream.queued_ms <= 100
        loop.call_soon_threadsafe(gateway_stream.clear_playout)  # what the Call does at barge-in

    await asyncio.gather(stream.play(tone(1.6)), clear_mid_reply())
    media_ms_before_stop = stream.report.media_bytes / 8  # 8 mu-law bytes per ms
    await stream.stop()
    report = stream.report
    assert report.clears == 1
    # what was queued (at most the bound; often less than a frame at real-time pacing) was dropped
    assert report.cleared_ms <= 100.5
    # every mark was echoed (the clear returned the pending ones) but the last few at hang-up
    assert report.marks_received - report.marks_echoed <= 100 // 20
    assert report.protocol_errors == []
    assert media_ms_before_stop > 800  # output went on after the clear (at 0.8 s)
    assert gateway.twilio_stats.clears >= 1


async def _get_stream(leg: object, call_id: str) -> object:
    return leg.stream(call_id)  # type: ignore[attr-defined]


async def test_scripted_barge_in_clears_twilio_and_logs_the_event(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    # The echo engine "speaks" the caller's audio back a few hundred ms later. The caller says
    # sentence A, then a 2 kHz tone (loud, not speech: the caller's voice activity stops while
    # the agent stays audible), then starts sentence B over the agent's echo of that tone. When
    # the agent then falls silent (the echo of the silence after B) that is a barge-in: the
    # Call asks the leg to clear Twilio's queue, and logs it.
    speech = load_caller(8000)
    spans = caller_speech_ms()
    a = speech[: spans[0][1] * 8]
    b = speech[spans[1][0] * 8 : spans[1][1] * 8 + 800]
    filler = tone(0.4, hz=2000, amplitude=3000)
    script = np.concatenate([a, filler, b, np.zeros(8000, np.int16)])
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    await stream.play(script)
    await stream.stop()
    events = await gateway.events(placed.call_sid)
    bargeins = [e for e in events if e["type"] == "bargein"]
    assert bargeins, [e["type"] for e in events]
    assert stream.report.clears >= 1  # Twilio was told to drop its queue
    assert stream.report.cleared_ms <= 100.5  # and little was there to drop
    assert int(bargeins[0]["latency_ms"]) >= 0
    assert events[-1]["bargeins"] == str(len(bargeins))


async def test_a_long_network_path_does_not_starve_the_caller(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    # mark echoes take 150 ms to come back: marks alone would count that as queued audio
    dropped = gateway.twilio_stats.held_frames_dropped
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    stream.mark_delay_s = 0.15
    await stream.play(tone(2.0))
    await stream.stop()
    report = stream.report
    assert report.max_ahead_ms <= 100.5
    # nearly all of the echoed tone went out at real time: no frames were held back or dropped
    assert report.media_bytes >= 8 * 1600
    assert gateway.twilio_stats.held_frames_dropped == dropped


async def test_when_twilio_stops_confirming_output_stops_at_the_bound(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.6))
    stream.is_echoing_marks = False  # Twilio (or the path back) stalls
    dropped = gateway.twilio_stats.held_frames_dropped
    sent = stream.report.media_bytes
    await stream.play(tone(0.8))
    await stream.stop()
    # after the stall began at most the bound (plus the frame in flight) went out ...
    assert stream.report.media_bytes - sent <= 8 * (100 + 20)
    assert stream.report.max_ahead_ms <= 100.5
    # ... and what the Call kept producing was dropped, not queued without bound
    assert gateway.twilio_stats.held_frames_dropped > dropped


async def test_a_start_with_the_wrong_call_sid_leaves_the_token_for_the_real_one(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    misrouted = dataclasses.replace(placed, call_sid="CA" + "f" * 32)
    stream = await twilio.open_stream(misrouted)
    await stream.wait_closed(5)
    assert (stream.report.close_code, stream.report.close_reason) == (1008, "invalid call token")
    retry = await twilio.open_stream(placed)  # the legitimate start, same token
    await retry.play(tone(0.3))
    assert not retry.is_closed and retry.report.media_messages > 0
    await retry.stop()


async def test_every_leg_counter_is_on_metrics(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed, send_start=False)
    await stream.send_mulaw(b"\xff" * 160)  # media before the start: dropped and counted
    await stream.send_start()
    await stream.play(tone(0.2))
    await stream.stop()
    await gateway.wait_idle()
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        metrics = (await client.get("/metrics")).text
    values = {
        line.split()[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("voicegate_twilio_") and "{" not in line
    }
    assert values["voicegate_twilio_media_before_start_total"] >= 1
    counters = [n for n, v in vars(gateway.twilio_stats).items() if type(v) is int]
    assert "media_before_start" in counters
    missing = [
        n
        for n in counters
        if f"voicegate_twilio_{n}_total" not in values and f"voicegate_twilio_{n}" not in values
    ]
    assert missing == []


async def test_ready_and_metrics(gateway: TwilioGateway, twilio: TwilioSimulator) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(tone(0.3))
        await stream.stop()
        metrics = (await client.get("/metrics")).text
    for name in (
        "voicegate_twilio_webhooks_total",
        "voicegate_twilio_streams_started_total",
        "voicegate_twilio_media_in_total",
        "voicegate_twilio_media_out_total",
        "voicegate_twilio_ingress_seconds_bucket",
        "voicegate_twilio_egress_seconds_bucket",
        "voicegate_twilio_ahead_seconds_bucket",
    ):
        assert name in metrics
    started = [
        line
        for line in metrics.splitlines()
        if line.startswith("voicegate_twilio_streams_started_total")
    ]
    assert float(started[0].split()[-1]) >= 1


async def test_a_stalled_event_loop_keeps_the_playout_clock_real_time(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    loop = gateway.app.state.loop
    skipped = gateway.twilio_stats.skipped_ticks

    def clock_gap_ms() -> int:
        # the Call's playout clock (samples pulled) minus its caller clock (samples received);
        # a constant offset (media that arrived while the call was being admitted) is fine
        call = gateway.calls.get(placed.call_sid)
        return int(call.playout.played_ms - call.caller_ms)

    async def stall_then_check() -> tuple[int, int]:
        await asyncio.sleep(0.4)
        before = clock_gap_ms()
        loop.call_soon_threadsafe(time.sleep, 0.3)  # the gateway's loop is blocked for 300 ms
        await asyncio.sleep(0.6)
        drifts = []
        for _ in range(5):  # a few looks: one may land in a moment of catch-up on a busy box
            drifts.append(abs(clock_gap_ms() - before))
            await asyncio.sleep(0.1)
        return before, min(drifts)

    _, (_, drift_ms) = await asyncio.gather(stream.play(tone(1.8)), stall_then_check())
    await stream.stop()
    assert gateway.twilio_stats.skipped_ticks > skipped
    # the frames the stall skipped were still taken from the Call: its playout clock (what the
    # caller hears) did not fall 300 ms behind
    assert drift_ms < 100
