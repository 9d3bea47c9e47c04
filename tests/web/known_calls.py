"""A known call (and a period of calls for the persona comparison) written to Redis through a
real EventLog: what the page's timeline and charts are checked against, and the README's
screenshots show.

The call: a caller asks about a card charge, barges in once, backchannels once, keys in four
digits and is transferred to a specialist (24 s; the same events a gateway would write, with
``transcript.caller`` entries in the wire format the caller-STT branch adds).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import redis

from voicegate.events import EventLog
from voicegate.events.schema import (
    BargeIn,
    CallDynamics,
    CallEnded,
    CallerSpeech,
    CallStarted,
    CallTransfer,
    Dtmf,
    Event,
    TranscriptAgent,
    call_events_key,
)

KNOWN_CALL_ID = "CAknown0000000000000000000000001"
CALLER_TURNS = [(400, 2900), (6200, 7400), (9800, 12600), (17200, 17600), (19000, 21500)]
CALLER_SAYS = [
    "Hi, I'd like to check a charge on my card.",
    "Yes, it's my debit card.",
    "The last four digits are... hold on, can I type them?",
    "mhm",
    "Yes please, I didn't make that payment.",
]
# (start, end, heard text, cut text, cut at)
AGENT_SEGMENTS: list[tuple[int, int, str, str, int | None]] = [
    (3300, 6000, "Good morning, First Harbor Bank. Which card is it about?", "", None),
    (7800, 10020, "Sure, I can help with that. Could you tell me", "the last four digits?", 10020),
    (12900, 15000, "Of course, please enter them on the keypad.", "", None),
    (16400, 18600, "Thank you. I see a pending charge of 42 dollars from yesterday.", "", None),
    (21800, 23000, "Let me put you through to a card specialist.", "", None),
]
BARGEIN = (9800, 10020)  # caller onset -> agent stop
DIGITS = [(15200, "4"), (15450, "2"), (15700, "1"), (15950, "7")]
TRANSFER_MS = 23200
END_MS = 23400
# what the timeline must show for it
EXPECTED = {
    "caller": len(CALLER_TURNS),
    "agent": len(AGENT_SEGMENTS),
    "cut": 1,
    "overlaps": 2,  # the barge-in (9800-10020) and the backchannel (17200-17600)
    "bargeins": 1,
    "dtmf": len(DIGITS),
    "transfers": 1,  # requested -> handed_off: one mark
}


def known_call_events() -> list[Event]:
    """The known call's events in the order a gateway emits them."""
    common: dict[str, Any] = {"call_id": KNOWN_CALL_ID, "leg": "twilio"}
    out: list[tuple[int, Event]] = [
        (
            0,
            CallStarted(
                **common, t_ms=0, persona="bank_teller", from_="+15005550006", to="+14155550100"
            ),
        )
    ]
    for start, end in CALLER_TURNS:
        out.append((end, CallerSpeech(**common, t_ms=end, start_ms=start, end_ms=end)))
    for start, end, heard, cut, cut_at in AGENT_SEGMENTS:
        out.append(
            (
                end,
                TranscriptAgent(
                    **common,
                    t_ms=end,
                    text=heard,
                    start_ms=start,
                    end_ms=end,
                    is_heard=cut_at is None,
                    cut_at_ms=cut_at,
                    cut_text=cut,
                ),
            )
        )
    onset, stop = BARGEIN
    out.append(
        (
            stop,
            BargeIn(
                **common,
                t_ms=stop,
                caller_onset_ms=onset,
                agent_stop_ms=stop,
                latency_ms=stop - onset,
                discarded_ms=560,
                cut_text="the last four digits?",
            ),
        )
    )
    for t, digit in DIGITS:
        out.append((t, Dtmf(**common, t_ms=t, digit=digit)))
    for t, result in ((TRANSFER_MS, "requested"), (END_MS, "handed_off")):
        out.append(
            (
                t,
                CallTransfer(
                    **common,
                    t_ms=t,
                    trigger="agent_says",
                    trigger_detail="put you through",
                    destination="cards",
                    to="+14155550111",
                    result=result,
                ),
            )
        )
    dyn = CallDynamics(
        caller_talk_ms=sum(e - s for s, e in CALLER_TURNS),
        agent_talk_ms=sum((c if c is not None else e) - s for s, e, _, _, c in AGENT_SEGMENTS),
        overlap_ms=(10020 - 9800) + (17600 - 17200),
        backchannels=1,
        response_gaps=4,
        response_gap_p50_ms=400.0,
        response_gap_p90_ms=540.0,
    )
    out.append(
        (
            END_MS + 1,
            CallEnded(
                **common,
                t_ms=END_MS,
                reason="transferred",
                result="success",
                detail="to cards (handed_off)",
                duration_ms=END_MS,
                frames=END_MS // 80,
                bargeins=1,
                dynamics=dyn,
            ),
        )
    )
    out.sort(key=lambda x: x[0])
    return [e for _, e in out]


# persona -> (calls, duration s mean, gap p50 ms, barge-ins per min, overlap share, transfer %)
PERSONA_MIX = {
    "bank_teller": (14, 150, 420, 0.8, 0.05, 0.20),
    "support_agent": (11, 260, 610, 1.6, 0.09, 0.35),
    "wise_teacher": (8, 420, 380, 0.5, 0.04, 0.0),
}
REASONS = ["caller_hangup", "agent_hangup", "silence_timeout", "max_duration"]


def comparison_events(seed: int = 19) -> list[Event]:
    """Calls of three personas with different habits (seeded): ``call.started`` + ``call.ended``."""
    rng = random.Random(seed)
    out: list[Event] = []
    for persona, (n, dur_s, gap, bpm, share, transfer) in PERSONA_MIX.items():
        for k in range(n):
            call_id = f"CMP{persona[:4]}{k:04d}"
            common: dict[str, Any] = {"call_id": call_id, "leg": rng.choice(["twilio", "sip"])}
            out.append(
                CallStarted(**common, t_ms=0, persona=persona, from_=f"+1500555{k:04d}", to="+1")
            )
            duration = max(20_000, int(rng.lognormvariate(0, 0.45) * dur_s * 1000))
            talk = duration * 0.8
            overlap = talk * share * rng.uniform(0.5, 1.5)
            p50 = gap * rng.uniform(0.7, 1.3)
            reason = (
                "transferred"
                if rng.random() < transfer
                else REASONS[min(len(REASONS) - 1, int(rng.expovariate(1.5)))]
            )
            out.append(
                CallEnded(
                    **common,
                    t_ms=duration,
                    reason=reason,
                    duration_ms=duration,
                    bargeins=int(bpm * duration / 60_000 * rng.uniform(0.4, 1.6)),
                    dynamics=CallDynamics(
                        caller_talk_ms=int(talk * 0.45 + overlap / 2),
                        agent_talk_ms=int(talk * 0.55 + overlap / 2),
                        overlap_ms=int(overlap),
                        response_gaps=10,
                        response_gap_p50_ms=round(p50, 1),
                        response_gap_p90_ms=round(p50 * rng.uniform(1.6, 2.4), 1),
                    ),
                )
            )
    return out


def raw_caller_transcripts() -> list[dict[str, str]]:
    """The known call's ``transcript.caller`` entries as stream fields (the caller-STT branch's
    wire format: text, start_ms, end_ms, words = JSON [[word, start_ms, end_ms], ...], final)."""
    out = []
    for (start, end), text in zip(CALLER_TURNS, CALLER_SAYS, strict=True):
        words = text.split()
        step = (end - start) // max(1, len(words))
        timed = [[w, start + k * step, start + (k + 1) * step] for k, w in enumerate(words)]
        out.append(
            {
                "type": "transcript.caller",
                "t": str(end + 1),
                "call_id": KNOWN_CALL_ID,
                "leg": "twilio",
                "text": text,
                "start_ms": str(start),
                "end_ms": str(end),
                "words": json.dumps(timed, separators=(",", ":")),
                "final": "true",
            }
        )
    return out


async def write_events(redis_url: str, events: list[Event], journal_dir: Path) -> None:
    """Write ``events`` to Redis through a real EventLog and wait until they are there; the
    known call's caller transcripts go straight to its stream, in the wire format the caller-STT
    branch writes (a gateway that knows the type decodes them with its model; one that does not
    passes them through raw)."""
    log = EventLog(redis_url, journal_dir=journal_dir)
    await log.start()
    try:
        for event in events:
            log.emit(event)
        assert await log.wait_idle(), "the events did not reach Redis"
    finally:
        await log.aclose()
    if any(e.call_id == KNOWN_CALL_ID for e in events):
        client = redis.Redis.from_url(redis_url)
        try:
            for fields in raw_caller_transcripts():
                client.xadd(call_events_key(KNOWN_CALL_ID), fields)  # type: ignore[arg-type]
        finally:
            client.close()
