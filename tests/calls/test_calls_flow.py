"""CallFlow: key sequences, the agent's played words on word boundaries, hang-up after caller
silence, limits; and the Call acting on them with a leg that transfers (or cannot)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from utils import (
    SILENCE,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    make_manager,
    run_call,
    speech,
)

from voicegate.calls.flow import DIGIT_TIMEOUT_MS, CallFlow, normalise
from voicegate.contracts import (
    CallInfo,
    EndReason,
    FlowAction,
    FlowRules,
    TransferOutcome,
    TransferTarget,
)
from voicegate.events.schema import CallEnded, CallTransfer

TRANSFER = FlowAction("transfer", "branch")
HANGUP = FlowAction("hangup")


def rules(**kw: object) -> FlowRules:
    base: dict[str, object] = {"destinations": {"branch": "+14155550123"}}
    base.update(kw)
    return FlowRules(**base)  # type: ignore[arg-type]


def test_normalise_drops_case_and_punctuation() -> None:
    assert normalise("  Good-bye, SANNI!  ") == "good bye sanni"
    assert normalise("it's") == "it's"


def test_single_key_fires_at_once() -> None:
    flow = CallFlow(rules(dtmf={"0": TRANSFER, "9": HANGUP}))
    t = flow.on_dtmf("0", 1000)
    assert t is not None and (t.trigger, t.detail, t.action) == ("dtmf", "0", TRANSFER)
    assert flow.on_dtmf("5", 1100) is None  # no rule: nothing, nothing kept


def test_sequences_wait_for_their_keys_and_forget_after_a_pause() -> None:
    flow = CallFlow(rules(dtmf={"*9": HANGUP, "12": TRANSFER}))
    assert flow.on_dtmf("*", 0) is None
    t = flow.on_dtmf("9", 500)
    assert t is not None and t.detail == "*9"
    assert flow.on_dtmf("1", 1000) is None
    assert flow.on_dtmf("2", 1000 + DIGIT_TIMEOUT_MS + 1) is None  # too late: "2" alone
    assert flow.on_dtmf("1", 9000) is None
    t = flow.on_dtmf("2", 9100)
    assert t is not None and t.detail == "12"
    # a stray key before a sequence does not spoil it
    assert flow.on_dtmf("7", 20000) is None
    assert flow.on_dtmf("1", 20100) is None
    assert flow.on_dtmf("2", 20200) is not None


def test_a_rule_that_starts_a_longer_one_fires_after_the_digit_timeout() -> None:
    flow = CallFlow(rules(dtmf={"0": TRANSFER, "00": HANGUP}))
    assert flow.on_dtmf("0", 0) is None  # "00" may follow
    assert flow.poll(DIGIT_TIMEOUT_MS // 2, False, 0) is None
    t = flow.poll(DIGIT_TIMEOUT_MS + 1, False, 0)
    assert t is not None and t.detail == "0" and t.action == TRANSFER
    assert flow.on_dtmf("0", 10000) is None
    t = flow.on_dtmf("0", 10100)
    assert t is not None and t.detail == "00" and t.action == HANGUP


def feed(flow: CallFlow, pieces: list[str], start_ms: int = 0) -> list[object]:
    out = []
    for i, piece in enumerate(pieces):
        t = flow.on_agent_played(piece, start_ms + 80 * (i + 1))
        if t is not None:
            out.append((t.trigger, t.detail, 80 * (i + 1) + start_ms))
    return out


def test_phrase_across_token_pieces_fires_once_its_last_word_is_complete() -> None:
    flow = CallFlow(rules(agent_says=(("Let me transfer you", TRANSFER),)))
    fired = feed(flow, [" Let", " me", " trans", "fer", " you", " now", "."])
    # "you" is known complete when " now" starts a new word (the 6th tick)
    assert fired == [("agent_says", "Let me transfer you", 480)]


def test_phrase_at_a_pause_fires_on_the_silent_tick() -> None:
    flow = CallFlow(rules(agent_says=(("transfer you", TRANSFER),)))
    assert feed(flow, [" I'll", " transfer", " you"]) == []
    t = flow.on_agent_played("", 320)
    assert t is not None and t.detail == "transfer you"


def test_word_boundaries_are_respected() -> None:
    flow = CallFlow(rules(agent_says=(("bye", HANGUP), ("transfer you", TRANSFER))))
    assert feed(flow, [" good", "bye", "!", " transfer", " your", " money", "."]) == []
    assert flow._pending_hangup is None  # "goodbye" is not "bye"


def test_hangup_waits_for_caller_silence_and_a_reply_cancels_it() -> None:
    flow = CallFlow(rules(agent_says=(("goodbye", HANGUP),), hangup_silence_ms=1500))
    assert feed(flow, [" Good", "bye", "."]) == []  # played at 240 ms; hang-up pending
    assert flow.poll(1000, False, 0) is None  # only 760 ms of silence
    t = flow.poll(1800, False, 0)
    assert t is not None and t.action == HANGUP
    # again, but the caller answers: the call goes on
    feed(flow, [" good", "bye", "."], start_ms=5000)
    assert flow.poll(5600, True, 5300) is None  # speaking now
    assert flow.poll(9000, False, 5900) is None  # spoke after the phrase: cancelled


def test_say_goodbye_to_high_fees_mid_sentence_needs_caller_silence_too() -> None:
    flow = CallFlow(rules(agent_says=(("goodbye", HANGUP),), hangup_silence_ms=1500))
    feed(flow, [" say", " goodbye", " to", " high", " fees"])
    # the caller keeps talking with the agent: never ends
    assert flow.poll(1000, True, 900) is None
    assert flow.poll(4000, False, 3900) is None


def test_limits_map_to_actions() -> None:
    flow = CallFlow(rules(on_max_duration=TRANSFER))
    t = flow.on_limit("max_duration")
    assert t is not None and t.trigger == "max_duration" and t.action == TRANSFER
    assert flow.on_limit("silence_timeout") is None


@pytest.mark.parametrize("kind,destination", [("transfer", ""), ("dial", "x")])
def test_bad_actions_are_refused(kind: str, destination: str) -> None:
    with pytest.raises(ValueError):
        FlowAction(kind, destination)


# --- the Call acting on its persona's call flow ----------------------------------------------

RATE = 8000


class _Persona:
    def __init__(self, flow: FlowRules) -> None:
        self._flow = flow
        self.limits = None

    def flow_rules(self) -> FlowRules:
        return self._flow


class _Personas:
    def __init__(self, flow: FlowRules) -> None:
        self.persona = _Persona(flow)

    def get(self, name: str) -> _Persona:
        return self.persona


class TransferLeg(LoopbackLeg):
    """A leg that can transfer: records what it was asked; the test answers for it."""

    def __init__(self) -> None:
        super().__init__(RATE)
        self.asked: list[TransferTarget] = []

    def transfer(self, target: TransferTarget) -> None:
        self.asked.append(target)


def _call(flow: FlowRules, leg: LoopbackLeg, script=None):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(script or (lambda c, k, f: (SILENCE, "")))
    events = RecordingEvents()
    manager = make_manager(engine, events, personas=_Personas(flow))
    call = manager.start_call(CallInfo("c1", "sip", "p", "+15550001", "+15550002"), leg)
    return engine, events, manager, call


def test_key_transfer_handed_off_ends_the_call_as_transferred() -> None:
    leg = TransferLeg()
    engine, events, manager, call = _call(rules(dtmf={"0": TRANSFER}), leg)
    run_call(call, np.zeros(RATE // 2, dtype=np.int16), tick=engine.tick, leg=leg)
    call.on_dtmf("0")
    assert [t.to for t in leg.asked] == ["+14155550123"] and leg.asked[0].handoff_id
    assert call.is_active  # until the leg says the call has left
    call.on_transfer_result(leg.asked[0], TransferOutcome.HANDED_OFF, "REFER accepted")
    assert not call.is_active and call.end_reason is EndReason.TRANSFERRED
    results = [(e.trigger, e.trigger_detail, e.result) for e in events.of_type(CallTransfer)]
    assert results == [("dtmf", "0", "requested"), ("dtmf", "0", "handed_off")]
    assert events.of_type(CallEnded)[0].reason == "transferred"
    assert leg.hangups == []  # the leg closes its own side; no second hang-up asked
    m = manager.metrics
    assert m.transfers.labels("sip", "handed_off")._value.get() == 1


def test_failed_transfer_keeps_the_call_with_the_agent() -> None:
    leg = TransferLeg()
    engine, events, _, call = _call(rules(dtmf={"0": TRANSFER}), leg)
    call.on_dtmf("0")
    call.on_transfer_result(leg.asked[0], TransferOutcome.FAILED, "603 Declined")
    assert call.is_active
    assert [e.result for e in events.of_type(CallTransfer)] == ["requested", "failed"]
    assert events.of_type(CallTransfer)[-1].detail == "603 Declined"
    call.on_dtmf("0")  # and can try again
    assert len(leg.asked) == 2


def test_a_leg_that_cannot_transfer_ends_the_call_saying_why() -> None:
    leg = LoopbackLeg(RATE)
    _, events, _, call = _call(rules(dtmf={"0": TRANSFER}), leg)
    call.on_dtmf("0")
    assert not call.is_active and call.end_reason is EndReason.AGENT_HANGUP
    assert [e.result for e in events.of_type(CallTransfer)] == ["requested", "unsupported"]
    assert leg.hangups == [EndReason.AGENT_HANGUP]


def test_goodbye_plus_silence_hangs_up_after_the_words_were_played() -> None:
    words = {2: " Good", 3: "bye", 4: "."}

    def script(c: int, k: int, f: object) -> tuple[object, str]:
        return (speech() if k in words else SILENCE), words.get(k, "")

    leg = LoopbackLeg(RATE)
    flow = rules(agent_says=(("goodbye", HANGUP),), hangup_silence_ms=1000)
    engine, events, _, call = _call(flow, leg, script)
    run_call(call, np.zeros(RATE * 4, dtype=np.int16), tick=engine.tick, leg=leg)
    assert not call.is_active and call.end_reason is EndReason.AGENT_HANGUP
    ended = events.of_type(CallEnded)[0]
    # played at about 480 ms (ticks play 80 ms after they arrive), + 1 s of caller silence
    assert 1300 <= ended.duration_ms <= 2000, ended.duration_ms
    assert "goodbye" in ended.detail
    assert leg.hangups == [EndReason.AGENT_HANGUP]


def test_limit_action_transfers_and_a_failed_one_still_ends_the_call() -> None:
    leg = TransferLeg()
    flow = rules(on_silence_timeout=TRANSFER)
    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    events = RecordingEvents()

    personas = _Personas(flow)
    personas.persona.limits = SimpleNamespace(max_duration_s=0.0, silence_timeout_s=1.0)
    manager = make_manager(engine, events, personas=personas)
    call = manager.start_call(CallInfo("c2", "sip", "p"), leg)
    run_call(call, np.zeros(RATE * 2, dtype=np.int16), tick=engine.tick, leg=leg)
    assert [t.destination for t in leg.asked] == ["branch"] and call.is_active
    call.on_transfer_result(leg.asked[0], TransferOutcome.FAILED, "486 Busy Here")
    assert not call.is_active and call.end_reason is EndReason.SILENCE_TIMEOUT
    assert "transfer failed" in call.end_detail


def test_engine_fault_transfer_ends_as_overflow_or_engine_fault() -> None:
    leg = TransferLeg()
    _, events, _, call = _call(FlowRules(), leg)
    call.transfer_to("overflow", "+14155550199", "engine_fault", "tick raised")
    call.on_transfer_result(leg.asked[0], TransferOutcome.HANDED_OFF, "")
    assert call.end_reason is EndReason.OVERFLOW
    leg2 = TransferLeg()
    _, _, _, call2 = _call(FlowRules(), leg2)
    call2.transfer_to("overflow", "+14155550199", "engine_fault", "tick raised")
    call2.on_transfer_result(leg2.asked[0], TransferOutcome.FAILED, "busy")
    assert call2.end_reason is EndReason.ENGINE_FAULT
