"""Calls read back from a real Redis for the operators' views: one call's events, the filtered
list of ended calls, and the persona comparison's figures (written through a real EventLog)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from voicegate.events import EventLog
from voicegate.events.schema import (
    CallDynamics,
    CallEnded,
    CallerSpeech,
    CallStarted,
    CallTransfer,
    TranscriptAgent,
    call_events_key,
)
from voicegate.web import history as history_module
from voicegate.web.history import CallHistory, HistoryError, Period, summarise

# (call_id, persona, from, reason, duration_ms, bargeins, caller/agent/overlap ms, gap p50/p90)
CALLS: list[tuple[str, str, str, str, int, int, tuple[int, int, int], tuple[float, float]]] = [
    ("a1", "teller", "+15550001", "caller_hangup", 60_000, 2, (20_000, 30_000, 2_000), (300, 700)),
    ("a2", "teller", "+15550002", "transferred", 120_000, 0, (50_000, 60_000, 0), (500, 900)),
    ("a3", "teller", "+15550003", "caller_hangup", 30_000, 1, (10_000, 10_000, 1_000), (400, 800)),
    ("b1", "support", "+15559999", "agent_hangup", 90_000, 6, (40_000, 40_000, 8_000), (200, 400)),
]


@pytest.fixture
async def written(
    redis_factory: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[tuple[str, CallHistory]]:
    """A private Redis holding the calls of CALLS, and a CallHistory on it."""
    url = redis_factory().url
    log = EventLog(url, journal_dir=tmp_path / "journal")
    await log.start()
    for call_id, persona, from_, reason, dur, bargeins, talk, gaps in CALLS:
        common: dict[str, Any] = {"call_id": call_id, "leg": "twilio"}
        log.emit(CallStarted(**common, t_ms=0, persona=persona, from_=from_, to="+15551000"))
        log.emit(CallerSpeech(**common, t_ms=1500, start_ms=200, end_ms=1500))
        log.emit(TranscriptAgent(**common, t_ms=3000, text="hello", start_ms=1800, end_ms=3000))
        if reason == "transferred":
            log.emit(CallTransfer(**common, t_ms=dur, destination="desk", result="handed_off"))
        dyn = CallDynamics(
            caller_talk_ms=talk[0],
            agent_talk_ms=talk[1],
            overlap_ms=talk[2],
            response_gaps=4,
            response_gap_p50_ms=gaps[0],
            response_gap_p90_ms=gaps[1],
        )
        log.emit(
            CallEnded(
                **common, t_ms=dur, reason=reason, duration_ms=dur, bargeins=bargeins, dynamics=dyn
            )
        )
    assert await log.wait_idle()
    await log.aclose()
    history = CallHistory(url)
    try:
        yield url, history
    finally:
        history.close()


async def test_a_calls_events_come_back_in_order(written: tuple[str, CallHistory]) -> None:
    _, history = written
    events = await history.events("a2")
    assert [e["type"] for e in events] == [
        "call.started",
        "caller.speech",
        "transcript.agent",
        "call.transfer",
        "call.ended",
    ]
    assert events[1]["end_ms"] == 1500 and events[1]["t"] == 1500
    assert events[0]["from"] == "+15550002"  # wire names, as the live feed sends them
    assert await history.events("nope") == []


async def test_an_unknown_event_type_comes_back_raw_and_a_malformed_one_is_left_out(
    written: tuple[str, CallHistory],
) -> None:
    url, history = written
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        key = call_events_key("a1")
        client.xadd(key, {"type": "from.the.future", "t": "1700", "x": "1"})
        client.xadd(key, {"type": "dtmf", "t": "1800", "call_id": "a1", "leg": "twilio"})
    finally:
        client.close()
    events = await history.events("a1")
    assert events[-1] == {"type": "from.the.future", "t": "1700", "x": "1"}
    assert "dtmf" not in [e["type"] for e in events]  # no digit: malformed, left out


async def test_ended_calls_are_listed_newest_first_and_filtered(
    written: tuple[str, CallHistory],
) -> None:
    _, history = written
    period = Period.last(3600)
    rows = (await history.ended_calls(period))["calls"]
    assert [r["call_id"] for r in rows] == ["b1", "a3", "a2", "a1"]
    assert rows[0]["persona"] == "support" and rows[0]["from"] == "+15559999"
    assert rows[0]["to"] == "+15551000" and rows[0]["reason"] == "agent_hangup"
    assert rows[0]["duration_ms"] == 90_000 and rows[0]["bargeins"] == 6
    pick = history.ended_calls
    assert [r["call_id"] for r in (await pick(period, persona="teller"))["calls"]] == [
        "a3",
        "a2",
        "a1",
    ]
    assert [r["call_id"] for r in (await pick(period, number="0002"))["calls"]] == ["a2"]
    assert [r["call_id"] for r in (await pick(period, number="1000", limit=2))["calls"]] == [
        "b1",
        "a3",
    ]
    assert [r["call_id"] for r in (await pick(period, reason="caller_hangup"))["calls"]] == [
        "a3",
        "a1",
    ]
    # a period that ended before the calls were written holds none of them
    before = Period(0, time.time_ns() // 1_000_000 - 3_600_000)
    assert (await pick(before))["calls"] == []


async def test_the_persona_comparison_figures(written: tuple[str, CallHistory]) -> None:
    _, history = written
    table = await history.compare(Period.last(3600))
    assert table["calls"] == 4 and not table["truncated"]
    teller, support = sorted(table["personas"], key=lambda p: p["persona"] != "teller")
    assert teller["persona"] == "teller" and teller["calls"] == 3
    assert teller["duration_s"]["p50"] == 60.0
    assert teller["duration_s"]["p10"] == pytest.approx(30 + 0.2 * 30)
    assert teller["gap_p50_ms"]["p50"] == 400.0 and teller["gap_p90_ms"]["p50"] == 800.0
    # barge-ins per minute: 2 in 1 min, 0 in 2 min, 1 in 0.5 min
    assert teller["bargeins_per_min"]["p50"] == 2.0
    assert teller["bargeins_per_min"]["p90"] == pytest.approx(2.0 + 0.8 * 0.0)
    # overlap share: both talking / anyone talking
    assert teller["overlap_share"]["p50"] == round(2_000 / 48_000, 4)
    assert teller["transfer_rate"] == round(1 / 3, 4)
    assert teller["end_reasons"] == {"caller_hangup": 2, "transferred": 1}
    assert support["calls"] == 1 and support["transfer_rate"] == 0
    assert support["bargeins_per_min"]["p50"] == 4.0
    assert support["overlap_share"]["p50"] == round(8_000 / 72_000, 4)


async def test_a_scan_over_its_bound_says_it_was_truncated(
    written: tuple[str, CallHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, history = written
    monkeypatch.setattr(history_module, "MAX_SCAN_ENTRIES", 4)  # b1 wrote the newest 4 of 17
    monkeypatch.setattr(history_module, "PAGE_ENTRIES", 4)
    body = await history.ended_calls(Period.last(3600))
    assert body["truncated"] and [r["call_id"] for r in body["calls"]] == ["b1"]


async def test_paging_through_the_stream_reads_every_entry(
    written: tuple[str, CallHistory], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, history = written
    monkeypatch.setattr(history_module, "PAGE_ENTRIES", 3)
    body = await history.ended_calls(Period.last(3600))
    assert not body["truncated"] and len(body["calls"]) == 4


async def test_redis_down_is_a_history_error_not_a_crash(
    redis_factory: Callable[..., Any],
) -> None:
    server = redis_factory()
    url = server.url
    server.stop()
    history = CallHistory(url, timeout_s=0.5)
    try:
        with pytest.raises(HistoryError, match="cannot read the call history"):
            await history.compare(Period.last(60))
    finally:
        history.close()


def test_periods_and_summaries() -> None:
    assert Period.parse(1000, 5000, 60) == Period(1000, 5000)
    assert Period.parse(None, 100_000, 60) == Period(40_000, 100_000)
    for since, until in ((5000, 1000), (-1, 10), (0, 500 * 86_400_000)):
        with pytest.raises(ValueError):
            Period.parse(since, until, 60)
    assert summarise([]) == {
        "n": 0,
        "p10": None,
        "p25": None,
        "p50": None,
        "p75": None,
        "p90": None,
    }
    s = summarise([1, 2, 3, 4, 5])
    assert (s["n"], s["p10"], s["p50"], s["p90"]) == (5, 1.4, 3.0, 4.6)
