"""CallManager: admission, NoFreeSlot, drain, persona limits, metrics, real EventLog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from utils import (
    SILENCE,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    make_manager,
    run_call,
    speech,
    tone,
)

import voicegate.calls
from voicegate.calls import CallInfo, CallLimits, EndReason, limits_of
from voicegate.calls.edge import EdgeMonitor
from voicegate.errors import InvalidStateError, NoFreeSlot, UnknownPersona
from voicegate.events import EventLog
from voicegate.events.schema import CallEnded, decode_fields
from voicegate.personas.schema import Limits, Persona

RATE = 8000


def silent_engine(max_slots: int = 4) -> ScriptedEngine:
    return ScriptedEngine(lambda c, k, f: (SILENCE, ""), max_slots=max_slots)


def test_no_free_slot_when_the_engine_is_full() -> None:
    engine = silent_engine(max_slots=2)
    calls = make_manager(engine, RecordingEvents())
    a = calls.start_call(CallInfo("a", "twilio", "p"), LoopbackLeg())
    calls.start_call(CallInfo("b", "twilio", "p"), LoopbackLeg())
    assert not calls.can_admit() and calls.active_count == 2
    with pytest.raises(NoFreeSlot):
        calls.start_call(CallInfo("c", "twilio", "p"), LoopbackLeg())
    a.on_leg_closed(EndReason.CALLER_HANGUP)
    assert calls.can_admit()
    calls.start_call(CallInfo("c", "twilio", "p"), LoopbackLeg())
    assert calls.active_count == 2 and calls.get("a") is None and calls.get("c") is not None


def test_max_calls_caps_admission_below_the_engine() -> None:
    engine = silent_engine(max_slots=4)
    calls = make_manager(engine, RecordingEvents(), max_calls=1)
    assert calls.capacity == 1
    calls.start_call(CallInfo("a", "sip", "p"), LoopbackLeg())
    assert not calls.can_admit()
    with pytest.raises(NoFreeSlot, match="1 call places"):
        calls.start_call(CallInfo("b", "sip", "p"), LoopbackLeg())
    assert engine.active_slots == 1  # the refused call never took a slot


def test_the_edge_capacity_caps_admission_and_says_so() -> None:
    engine = silent_engine(max_slots=4)
    clock = {"wall": 0.0, "cpu": 0.0}
    calls_now = [0]
    edge = EdgeMonitor(
        lambda: calls_now[0],
        budget=0.5,
        prior_cost=0.2,  # 0.5 / 0.2 -> the loop carries 2 calls
        clock=lambda: clock["wall"],
        cpu=lambda: clock["cpu"],
    )
    calls = make_manager(engine, RecordingEvents(), edge=edge)
    assert calls.limits() == {"engine": 4, "edge": 2} and calls.capacity == 2
    calls.start_call(CallInfo("a", "sip", "p"), LoopbackLeg())
    calls.start_call(CallInfo("b", "sip", "p"), LoopbackLeg())
    assert not calls.can_admit()
    with pytest.raises(NoFreeSlot, match="limit: edge"):
        calls.start_call(CallInfo("c", "sip", "p"), LoopbackLeg())
    assert engine.active_slots == 2  # the refused call never took a slot
    assert calls.metrics.rejected.labels("sip", "edge")._value.get() == 1
    # measured: 4 calls cost 10% of a core -> 2.5% each -> the engine's 4 slots bind again
    calls_now[0] = 4
    clock["wall"], clock["cpu"] = 1.0, 0.1
    edge.sample()
    assert calls.limits()["edge"] == 20 and calls.capacity == 4 and calls.can_admit()


def test_duplicate_and_unknown_persona_are_refused_without_leaking() -> None:
    engine = silent_engine()
    events = RecordingEvents()
    calls = make_manager(engine, events)
    calls.start_call(CallInfo("a", "sip", "p"), LoopbackLeg())
    with pytest.raises(InvalidStateError):
        calls.start_call(CallInfo("a", "sip", "p"), LoopbackLeg())
    with pytest.raises(UnknownPersona):
        calls.start_call(CallInfo("b", "sip", "nobody"), LoopbackLeg())
    assert calls.active_count == 1 and engine.active_slots == 1
    assert events.types() == ["call.started"]


async def test_drain_refuses_new_calls_and_ends_the_rest_at_the_deadline() -> None:
    engine = silent_engine()
    events = RecordingEvents()
    calls = make_manager(engine, events)
    leg_a, leg_b = LoopbackLeg(), LoopbackLeg()
    a = calls.start_call(CallInfo("a", "twilio", "p"), leg_a)
    b = calls.start_call(CallInfo("b", "twilio", "p"), leg_b)

    async def a_hangs_up_soon() -> None:
        await asyncio.sleep(0)
        a.on_leg_closed(EndReason.CALLER_HANGUP)

    task = asyncio.create_task(a_hangs_up_soon())
    drain = asyncio.create_task(calls.drain(timeout_s=0.2))
    await asyncio.sleep(0)
    assert calls.is_draining and not calls.can_admit()
    with pytest.raises(NoFreeSlot, match="draining"):
        calls.start_call(CallInfo("c", "twilio", "p"), LoopbackLeg())
    await drain
    await task
    assert a.end_reason is EndReason.CALLER_HANGUP and leg_a.hangups == []
    assert b.end_reason is EndReason.DRAIN and leg_b.hangups == [EndReason.DRAIN]
    assert calls.active_count == 0 and engine.active_slots == 0
    assert sorted(e.reason for e in events.of_type(CallEnded)) == ["caller_hangup", "drain"]


async def test_drain_returns_as_soon_as_the_last_call_ends() -> None:
    engine = silent_engine()
    calls = make_manager(engine, RecordingEvents())
    a = calls.start_call(CallInfo("a", "twilio", "p"), LoopbackLeg())
    asyncio.get_running_loop().call_soon(a.on_leg_closed, EndReason.CALLER_HANGUP)
    await asyncio.wait_for(calls.drain(timeout_s=3600), 5)  # would hang were it not woken
    assert a.end_reason is EndReason.CALLER_HANGUP
    await calls.drain(timeout_s=0)  # idempotent, nothing to do


def test_limits_come_from_the_persona() -> None:
    persona = Persona(
        name="p",
        description="d",
        text_prompt="t",
        voice="NATF0",
        limits=Limits(max_duration_s=10, silence_timeout_s=3),
    )
    assert limits_of(persona) == CallLimits(max_duration_s=10.0, silence_timeout_s=3.0)

    class Store:
        def get(self, name: str) -> Persona:
            assert name == "p"
            return persona

    engine = ScriptedEngine(lambda c, k, f: (speech(), ""))
    events = RecordingEvents()
    calls = make_manager(engine, events, personas=Store())
    leg = LoopbackLeg()
    call = calls.start_call(CallInfo("a", "twilio", "p"), leg)
    run_call(call, np.zeros(5 * RATE, dtype=np.int16), tick=engine.tick, leg=leg)
    assert call.end_reason is EndReason.SILENCE_TIMEOUT
    assert events.of_type(CallEnded)[0].duration_ms == 3000


def test_metrics_on_the_registry() -> None:
    registry = CollectorRegistry()
    script_state = {"loud": 0}

    def script(c: int, k: int, frame: np.ndarray) -> tuple[np.ndarray, str]:
        if float(np.abs(frame).max()) > 0.05:
            script_state["loud"] += 1
        return (SILENCE, "") if script_state["loud"] >= 2 else (speech(), " w")

    engine = ScriptedEngine(script)
    calls = make_manager(engine, RecordingEvents(), registry=registry)
    leg = LoopbackLeg()
    call = calls.start_call(CallInfo("a", "twilio", "p"), leg)
    assert registry.get_sample_value("voicegate_calls_active", {"leg": "twilio"}) == 1
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[RATE : 2 * RATE] = tone(RATE)
    run_call(call, caller, tick=engine.tick, leg=leg)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    with pytest.raises(NoFreeSlot):
        calls.begin_drain()
        calls.start_call(CallInfo("b", "twilio", "p"), LoopbackLeg())
    get = registry.get_sample_value
    assert get("voicegate_calls_active", {"leg": "twilio"}) == 0
    assert get("voicegate_calls_total", {"leg": "twilio", "reason": "caller_hangup"}) == 1
    assert get("voicegate_calls_rejected_total", {"leg": "twilio", "why": "draining"}) == 1
    assert get("voicegate_bargein_latency_seconds_count", {"leg": "twilio"}) == 1
    assert get("voicegate_bargein_latency_seconds_sum", {"leg": "twilio"}) == pytest.approx(
        call.bargeins[0].latency_ms / 1000
    )
    assert get("voicegate_call_underruns_count", {"leg": "twilio"}) == 1
    assert get("voicegate_engine_ticks_total") == engine.ticks
    assert get("voicegate_engine_max_slots") == 4


def test_public_exports() -> None:
    names = voicegate.calls.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(voicegate.calls, name) is not None


async def test_events_reach_redis_through_the_real_event_log(
    redis_url: str, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    log = EventLog(redis_url, journal_dir=tmp_path / "journal")
    await log.start()
    try:
        engine = silent_engine()
        calls = make_manager(engine, log)
        leg = LoopbackLeg()
        call = calls.start_call(CallInfo("redis-call-1", "sip", "p", from_="+1555"), leg)
        call.on_dtmf("7")
        run_call(call, np.zeros(RATE // 2, dtype=np.int16), tick=engine.tick, leg=leg)
        call.on_leg_closed(EndReason.CALLER_HANGUP)
        assert await log.wait_idle(5.0)
    finally:
        await log.aclose()
    client = aioredis.from_url(redis_url)
    try:
        entries = await client.xrange("voicegate:call:redis-call-1:events")
        meta = await client.hgetall("voicegate:call:redis-call-1")
    finally:
        await client.aclose()
    events = [decode_fields(fields) for _, fields in entries]
    assert [type(e).type for e in events] == ["call.started", "dtmf", "call.ended"]
    assert meta[b"status"] == b"ended" and meta[b"reason"] == b"caller_hangup"
    assert meta[b"from"] == b"+1555"


def test_a_failing_engine_stats_does_not_break_a_scrape() -> None:
    from prometheus_client import generate_latest

    class Broken(ScriptedEngine):
        def stats(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("engine gone")

    registry = CollectorRegistry()
    make_manager(Broken(lambda c, k, f: (SILENCE, "")), RecordingEvents(), registry=registry)
    text = generate_latest(registry).decode()
    assert "voicegate_calls_active" in text and "voicegate_engine_ticks" not in text
