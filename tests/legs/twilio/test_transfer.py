"""Call control on the Twilio leg, over real sockets: the persona's call flow transfers (the
stream closes, the <Connect action> dials, the <Dial action> hangs up or says the fallback),
hangs up, and a full gateway dials the overflow. The simulator follows the TwiML as Twilio
documents it."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from voicegate.legs.twilio.sim import PlacedCall, SimulatedStream, TwilioSimulator

from ..gateway import REPO, read_events, serving
from .twilio_helpers import TwilioGateway, start_twilio_gateway

DESK = "+14155550170"  # transfer_desk, no overflow
DESK_OVERFLOW = "+14155550171"  # transfer_desk, overflow to OVERFLOW
OVERFLOW = "+14155550999"
HUMAN = "+14155550123"
CALLER = "+15005550006"
FALLBACK = "Nobody could take your call. Please try again later. Goodbye."

PERSONA = f"""description: A test desk whose call flow transfers and hangs up.
text_prompt: You answer the phone for a test desk.
voice: NATF0
call_flow:
  destinations:
    human: {{to: "{HUMAN}"}}
    queue: {{to: "sip:queue@pbx.example.com"}}
  dtmf:
    "0": {{transfer: human}}
    "8": {{transfer: queue}}
    "9": hangup
  fallback_say: {FALLBACK}
"""

NUMBERS = f"""default: support_agent
numbers:
  "{DESK}": transfer_desk
  "{DESK_OVERFLOW}": transfer_desk
overflow:
  "{DESK_OVERFLOW}": "{OVERFLOW}"
"""


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    tmp = tmp_path_factory.mktemp("gw-transfer")
    personas = tmp / "personas"
    shutil.copytree(REPO / "personas", personas)
    (personas / "transfer_desk.yaml").write_text(PERSONA)
    numbers = tmp / "numbers.yaml"
    numbers.write_text(NUMBERS)
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp,
            personas_dir=personas,
            numbers_file=numbers,
            twilio_dial_timeout_s=20,
        )
    )


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


async def transfers(
    gateway: TwilioGateway, call_id: str, until: str, timeout_s: float = 8.0
) -> list[dict[str, str]]:
    """The call's ``call.transfer`` events, once one has ``result == until``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await read_events(gateway.redis_url, call_id, "call.transfer", timeout_s)
        found = [e for e in events if e["type"] == "call.transfer"]
        if any(e["result"] == until for e in found):
            return found
        assert time.monotonic() < deadline, f"no call.transfer {until} for {call_id}: {found}"
        await asyncio.sleep(0.05)


async def press(twilio: TwilioSimulator, to: str, digit: str) -> tuple[PlacedCall, SimulatedStream]:
    """A call to ``to`` that hears the agent for a while, then presses ``digit``."""
    placed = await twilio.place_call(CALLER, to)
    assert placed.connect_action == "https://gw.test/twilio/next"
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.6))  # the echo engine answers: agent audio is queued at Twilio
    await stream.dtmf(digit)
    await stream.play_silence(100)
    await stream.wait_closed(5)
    assert (stream.report.close_code, stream.report.close_reason) == (1000, "transfer")
    return placed, stream


async def test_pressing_0_dials_the_person_and_the_call_ends_transferred(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed, stream = await press(twilio, DESK, "0")
    # the agent audio sent before the close had played: its last mark came back
    assert stream.report.marks_echoed == stream.report.marks_received > 0
    flow = await twilio.follow(placed, dial_outcome="completed")

    assert flow.errors == []
    assert flow.verbs == ["Dial", "Hangup"]
    (dial,) = flow.dials
    assert dial.timeout_s == 20 and not dial.answer_on_bridge
    ((number, whisper),) = dial.numbers
    assert number == HUMAN
    assert whisper.startswith("https://gw.test/twilio/whisper?handoff=")
    handoff = whisper.split("handoff=")[1]
    assert dial.action == f"https://gw.test/twilio/dial-status?handoff={handoff}"
    assert dial.whisper_said and "transferred" in dial.whisper_said[0]
    assert [code for _, code in flow.requests] == [200, 200, 200]  # next, whisper, dial-status

    found = await transfers(gateway, placed.call_sid, "answered")
    assert [e["result"] for e in found] == ["requested", "handed_off", "answered"]
    assert {e["handoff_id"] for e in found} == {handoff}
    assert {e["to"] for e in found} == {HUMAN}
    assert found[0]["trigger"] == "dtmf"
    assert int(found[1]["latency_ms"]) >= 0
    assert "DialCallStatus completed" in found[2]["detail"]
    events = await gateway.events(placed.call_sid)
    (ended,) = [e for e in events if e["type"] == "call.ended"]
    assert ended["reason"] == "transferred"
    assert len(gateway.app.state.twilio.next_steps) == 0  # the record is gone with the call


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_a_person_who_does_not_answer_gets_the_fallback(
    gateway: TwilioGateway, twilio: TwilioSimulator, outcome: str
) -> None:
    placed, _ = await press(twilio, DESK, "0")
    flow = await twilio.follow(placed, dial_outcome=outcome)

    assert flow.errors == []
    assert flow.verbs == ["Dial", "Say", "Hangup"]
    assert flow.said == [FALLBACK]
    assert flow.dials[0].whisper_said == []  # nobody answered: no whisper
    found = await transfers(gateway, placed.call_sid, outcome)
    assert [e["result"] for e in found] == ["requested", "handed_off", outcome]


async def test_a_sip_destination_carries_the_handoff_id_as_a_header(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed, _ = await press(twilio, DESK, "8")
    flow = await twilio.follow(placed, dial_outcome="completed")

    (dial,) = flow.dials
    (uri,) = dial.sips
    assert uri.startswith("sip:queue@pbx.example.com?X-Handoff-Id=")
    assert len(uri) < 255
    found = await transfers(gateway, placed.call_sid, "answered")
    assert uri.endswith(found[0]["handoff_id"])
    assert flow.verbs == ["Dial", "Hangup"]


async def test_agent_hangup_closes_the_stream_and_hangs_up(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.4))
    await stream.dtmf("9")
    await stream.wait_closed(5)
    assert stream.report.close_code == 1000
    assert stream.report.marks_echoed == stream.report.marks_received
    flow = await twilio.follow(placed)

    assert flow.verbs == ["Hangup"] and flow.dials == [] and flow.is_hung_up
    events = await gateway.events(placed.call_sid)
    (ended,) = [e for e in events if e["type"] == "call.ended"]
    assert ended["reason"] == "agent_hangup"


async def test_caller_hangup_leaves_nothing_to_dial(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.2))
    await stream.stop()
    await gateway.wait_idle()
    flow = await twilio.follow(placed)
    assert flow.verbs == ["Hangup"]


async def test_unsigned_next_and_dial_status_are_refused_and_change_nothing(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed, _ = await press(twilio, DESK, "0")
    steps = gateway.app.state.twilio.next_steps
    assert steps.get(placed.call_sid) is not None
    params = twilio.call_params(placed)
    refused = gateway.twilio_stats.webhooks_refused
    for path, extra in (
        ("/twilio/next", {}),
        ("/twilio/dial-status", {"DialCallStatus": "busy", "DialCallSid": "CA" + "2" * 32}),
        ("/twilio/whisper", {}),
    ):
        for signature in (None, "bogus"):
            response = await twilio.post_signed(path, {**params, **extra}, signature=signature)
            assert response.status_code == 403, path
    assert gateway.twilio_stats.webhooks_refused == refused + 6
    assert steps.get(placed.call_sid) is not None  # the decision is still there
    flow = await twilio.follow(placed, dial_outcome="completed")
    assert flow.verbs == ["Dial", "Hangup"]
    found = await transfers(gateway, placed.call_sid, "answered")
    assert "busy" not in [e["result"] for e in found]


async def test_a_full_gateway_dials_the_overflow_or_answers_busy(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    streams = []
    for _ in range(2):  # MAX_CALLS
        placed = await twilio.place_call(CALLER, DESK)
        streams.append(await twilio.open_stream(placed))
    await asyncio.sleep(0.1)
    assert gateway.calls.active_count == 2

    overflowed = await twilio.place_call(CALLER, DESK_OVERFLOW)
    assert not overflowed.is_connect and not overflowed.reject_reason
    flow = await twilio.follow(overflowed, twiml=overflowed.twiml, dial_outcome="completed")
    assert flow.verbs == ["Dial", "Hangup"]
    (dial,) = flow.dials
    assert dial.numbers == [(OVERFLOW, "")] and dial.answer_on_bridge
    found = await transfers(gateway, overflowed.call_sid, "answered")
    assert [(e["destination"], e["to"]) for e in found] == [("overflow", OVERFLOW)]

    busy = await twilio.place_call(CALLER, DESK)  # no overflow for this number
    assert busy.reject_reason == "busy"
    busy_overflow = await twilio.place_call(CALLER, DESK_OVERFLOW)
    flow = await twilio.follow(busy_overflow, twiml=busy_overflow.twiml, dial_outcome="busy")
    assert flow.verbs == ["Dial", "Hangup"]  # no persona, no fallback: hang up
    for stream in streams:
        await stream.stop()


async def test_a_slot_gone_at_stream_start_dials_the_overflow(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    late = await twilio.place_call(CALLER, DESK_OVERFLOW)  # admitted: a slot was free
    streams = []
    for _ in range(2):  # then others take every slot before its stream starts
        placed = await twilio.place_call(CALLER, DESK)
        streams.append(await twilio.open_stream(placed))
    stream = await twilio.open_stream(late)
    await stream.wait_closed(5)
    assert stream.report.close_code == 1013
    flow = await twilio.follow(late, dial_outcome="completed")
    assert flow.verbs == ["Dial", "Hangup"]
    assert flow.dials[0].numbers == [(OVERFLOW, "")]
    for other in streams:
        await other.stop()


async def test_transfers_are_counted_and_timed_on_metrics(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed, _ = await press(twilio, DESK, "0")
    await twilio.follow(placed)
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        metrics = (await client.get("/metrics")).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert values['voicegate_call_transfers_total{leg="twilio",outcome="handed_off"}'] >= 1
    assert values['voicegate_call_transfer_latency_seconds_count{leg="twilio"}'] >= 1
    assert values["voicegate_twilio_transfers_total"] >= 1
    assert values["voicegate_twilio_next_dials_total"] >= 1
    assert values["voicegate_twilio_dial_statuses_total"] >= 1


def test_settings_reach_the_leg(gateway: TwilioGateway) -> None:
    assert gateway.app.state.twilio.dial_timeout_s == 20
    assert Path(gateway.personas_dir / "transfer_desk.yaml").exists()


async def test_the_stream_closes_only_after_the_agent_audio_sent_has_played(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    stream.mark_delay_s = 0.3  # a long way back: every echo comes 300 ms after its audio played
    await stream.play(tone(0.6))
    assert stream.report.marks_received > stream.report.marks_echoed  # audio still queued
    await stream.dtmf("0")
    await stream.wait_closed(5)
    assert stream.report.close_reason == "transfer"
    assert stream.report.marks_echoed == stream.report.marks_received
    assert (await twilio.follow(placed)).verbs == ["Dial", "Hangup"]


async def test_a_lost_last_echo_delays_the_transfer_by_a_bounded_time(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    timeouts = gateway.twilio_stats.played_wait_timeouts
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.6))
    stream.is_echoing_marks = False  # Twilio stops confirming
    await stream.play(tone(0.2))
    await stream.dtmf("0")
    await stream.wait_closed(5)  # the wait is bounded: audio unconfirmed + 1 s
    assert stream.report.close_reason == "transfer"
    assert gateway.twilio_stats.played_wait_timeouts == timeouts + 1
    assert (await twilio.follow(placed)).verbs == ["Dial", "Hangup"]
    found = await transfers(gateway, placed.call_sid, "answered")
    assert [e["result"] for e in found] == ["requested", "handed_off", "answered"]


async def test_transfers_outside_the_persona_rules(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.3))
    call = gateway.on_loop(gateway.calls.get, placed.call_sid)
    assert call is not None
    # a number Twilio cannot dial: refused at once, the caller stays with the agent
    gateway.on_loop(call.transfer_to, "desk", "555-0123", "operator")
    found = await transfers(gateway, placed.call_sid, "failed")
    assert "neither an E.164 number nor a SIP URI" in found[-1]["detail"]
    await stream.play(tone(0.2))
    assert not stream.is_closed
    # an overflow transfer (what an engine fault does): the call ends overflow
    gateway.on_loop(call.transfer_to, "overflow", OVERFLOW, "overflow", "test")
    await stream.wait_closed(5)
    flow = await twilio.follow(placed, dial_outcome="completed")
    assert flow.dials[0].numbers[0][0] == OVERFLOW
    events = await gateway.events(placed.call_sid)
    (ended,) = [e for e in events if e["type"] == "call.ended"]
    assert ended["reason"] == "overflow"


async def test_a_draining_gateway_dials_the_overflow(
    gateway: TwilioGateway, twilio: TwilioSimulator
) -> None:
    leg = gateway.app.state.twilio
    leg.begin_drain()
    try:
        placed = await twilio.place_call(CALLER, DESK_OVERFLOW)
        flow = await twilio.follow(placed, twiml=placed.twiml, dial_outcome="no-answer")
        assert flow.dials[0].numbers == [(OVERFLOW, "")]
        assert flow.verbs == ["Dial", "Hangup"]
        assert (await twilio.place_call(CALLER, DESK)).reject_reason == "busy"
    finally:
        leg.is_draining = False
    found = await transfers(gateway, placed.call_sid, "no-answer")
    assert [e["destination"] for e in found] == ["overflow"]
