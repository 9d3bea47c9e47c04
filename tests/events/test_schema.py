"""Event models and their flat XADD encoding."""

from __future__ import annotations

import math
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import voicegate.events as events
from voicegate.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    BargeIn,
    CallDynamics,
    CallEnded,
    CallError,
    CallStarted,
    CallTransfer,
    Dtmf,
    Event,
    EventSchemaError,
    LegStatus,
    TranscriptAgent,
    call_events_key,
    call_key,
    decode_fields,
    encode_fields,
)
from voicegate.events.schema import (  # not re-exported by voicegate.events yet
    CallContext,
    CallerSpeech,
    CallReanchored,
    RecordingEnded,
    RecordingStarted,
    RecordingUploaded,
    TranscriptCaller,
)

COMMON = dict(call_id="CA0123abc", leg="twilio", t_ms=1234)

SAMPLES: list[Event] = [
    CallStarted(
        **COMMON, persona="teller", from_="+15550001", to="+15550002", leg_call_ref="CAxyz"
    ),
    CallEnded(
        **COMMON,
        reason="caller_hangup",
        result="success",
        detail="stop message",
        duration_ms=61_000,
        frames=762,
        underruns=2,
        bargeins=3,
        dynamics=CallDynamics(
            caller_talk_ms=20_000,
            agent_talk_ms=30_000,
            overlap_ms=1500,
            backchannels=4,
            response_gaps=7,
            response_gap_p50_ms=310.5,
            response_gap_p90_ms=720.0,
            caller_turn_ends=3,
            caller_turn_end_lag_p50_ms=240.0,
        ),
        counters={"late_ticks": 1, "cpu_ms": 12.5},
    ),
    CallEnded(**COMMON, reason="drain", duration_ms=0),
    TranscriptAgent(**COMMON, text="Hello, this is Sanni.", start_ms=100, end_ms=900),
    TranscriptAgent(
        **COMMON,
        text="Let me chec",
        start_ms=1000,
        end_ms=1400,
        is_heard=False,
        cut_at_ms=1400,
        cut_text="k your balance",
    ),
    BargeIn(
        **COMMON,
        caller_onset_ms=5000,
        agent_stop_ms=5180,
        latency_ms=180,
        discarded_ms=60,
        cut_text="your balance",
    ),
    Dtmf(**COMMON, digit="#"),
    Dtmf(**COMMON, digit="7", duration_ms=120),
    CallError(**COMMON, code="bad_frame", message="media payload is not base64", is_fatal=False),
    LegStatus(**COMMON, status="stream-started", detail="StreamSid=MZ1"),
    CallTransfer(
        **COMMON,
        trigger="dtmf",
        trigger_detail="0",
        destination="branch",
        to="+14155550123",
        handoff_id="h1",
        result="handed_off",
        latency_ms=120,
    ),
    CallReanchored(
        **COMMON,
        prompt_frames=310,
        kept_frames=1512,
        chunks=12,
        compute_ms=61.5,
        position_before=2750,
        position_after=1822,
    ),
    BargeIn(
        **COMMON,
        caller_onset_ms=5000,
        agent_stop_ms=5180,
        latency_ms=180,
        caller_text="wait, what about",
    ),
    TranscriptCaller(
        **COMMON,
        text="I lost my card",
        start_ms=2000,
        end_ms=3040,
        words=[("I", 2000, 2080), ("lost", 2160, 2480), ("my", 2480, 2640), ("card", 2720, 3040)],
    ),
    TranscriptCaller(**COMMON, text="I lost", start_ms=2000, end_ms=2480, final=False),
    CallerSpeech(**COMMON, start_ms=500, end_ms=1740),
    CallContext(
        **COMMON,
        persona="bank_teller",
        sources={"caller_name": "webhook", "account_tier": "numbers"},
        webhook="ok",
    ),
    RecordingStarted(
        **COMMON, path="var/recordings/2026-12-03/CA0123abc.wav", rate_hz=8000, announcement=True
    ),
    RecordingEnded(
        **COMMON,
        path="var/recordings/2026-12-03/CA0123abc.wav",
        duration_ms=61_240,
        size_bytes=44 + 61_240 * 32,
        status="complete",
    ),
    RecordingUploaded(
        **COMMON,
        path="var/recordings/2026-12-03/CA0123abc.wav",
        status="uploaded",
        url="https://calls.s3.us-east-1.amazonaws.com/recordings/2026-12-03/CA0123abc.wav",
        bucket="calls",
        key="recordings/2026-12-03/CA0123abc.wav",
        attempts=2,
        upload_ms=840,
    ),
]


def test_every_type_has_a_sample() -> None:
    assert {type(e).type for e in SAMPLES} == set(EVENT_TYPES)
    assert set(EVENT_TYPES) >= {
        "call.started",
        "call.ended",
        "transcript.agent",
        "bargein",
        "dtmf",
        "error",
    }


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).type)
def test_round_trip(event: Event) -> None:
    fields = encode_fields(event)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    for name in ("type", "id", "ts", "t", "call_id", "leg"):
        assert name in fields
    assert fields["type"] == type(event).type
    assert fields["t"] == "1234"
    assert decode_fields(fields) == event
    # what redis-py returns without decode_responses
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    assert decode_fields(as_bytes) == event


def test_flat_encoding_details() -> None:
    started = encode_fields(SAMPLES[0])
    assert started["from"] == "+15550001" and "from_" not in started
    ended = encode_fields(SAMPLES[1])
    assert ended["dynamics"].startswith("{") and '"overlap_ms":1500' in ended["dynamics"]
    assert ended["counters"] == '{"late_ticks":1,"cpu_ms":12.5}'
    assert encode_fields(SAMPLES[4])["is_heard"] == "false"
    assert "cut_at_ms" not in encode_fields(SAMPLES[3])  # None is omitted
    assert "dynamics" not in encode_fields(SAMPLES[2])


def test_ts_and_id_are_automatic() -> None:
    a = Dtmf(**COMMON, digit="1")
    b = Dtmf(**COMMON, digit="1")
    assert a.id != b.id
    assert a.ts > 1_600_000_000_000 and b.ts >= a.ts
    assert Dtmf(call_id="c", leg="sip", t=5, digit="1").t_ms == 5  # wire name accepted too


def test_keys() -> None:
    assert call_key("c1") == "voicegate:call:c1"
    assert call_events_key("c1") == "voicegate:call:c1:events"
    assert events.GLOBAL_EVENTS_KEY == "voicegate:events"


def test_call_hash_fields() -> None:
    assert SAMPLES[0].hash_fields()["status"] == "active"
    assert SAMPLES[0].hash_fields()["persona"] == "teller"
    ended = SAMPLES[1].hash_fields()
    assert ended["status"] == "ended" and ended["reason"] == "caller_hangup"
    assert SAMPLES[1].is_call_end and not SAMPLES[0].is_call_end


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(call_id="has space", leg="sip", t_ms=0, digit="1"),
        dict(call_id="x" * 200, leg="sip", t_ms=0, digit="1"),
        dict(call_id="c", leg="sip", t_ms=-1, digit="1"),
        dict(call_id="c", leg="sip", t_ms=0, digit="12"),
        dict(call_id="c", leg="sip", t_ms=0, digit="1", extra="no"),
    ],
)
def test_invalid_construction_is_a_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Dtmf(**kwargs)  # type: ignore[arg-type]


def test_text_limit() -> None:
    with pytest.raises(ValidationError, match="at most 8192"):
        TranscriptAgent(**COMMON, text="x" * 9000, start_ms=0, end_ms=1)


def test_oversized_event_is_refused_by_encode() -> None:
    big = CallEnded(**COMMON, reason="error", duration_ms=1, counters={"k" * MAX_EVENT_BYTES: 1})
    with pytest.raises(EventSchemaError, match="exceeds"):
        encode_fields(big)


def test_nan_is_refused_by_encode() -> None:
    with pytest.raises(EventSchemaError, match="counters"):
        encode_fields(CallEnded(**COMMON, reason="error", duration_ms=1, counters={"x": math.nan}))


def test_encode_refuses_non_events() -> None:
    with pytest.raises(EventSchemaError, match="expected an Event"):
        encode_fields("call.started")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"t": "1"}, "no 'type'"),
        ({"type": "call.nope"}, "unknown event type"),
        ({**encode_fields(SAMPLES[6]), "bogus": "1"}, "unexpected field 'bogus'"),
        ({**encode_fields(SAMPLES[1]), "dynamics": "{not json"}, "not JSON"),
        ({**encode_fields(SAMPLES[6]), "t": "soon"}, "dtmf"),
        ({k: v for k, v in encode_fields(SAMPLES[6]).items() if k != "digit"}, "digit"),
    ],
)
def test_decode_errors(fields: dict[str, str], match: str) -> None:
    with pytest.raises(EventSchemaError, match=match):
        decode_fields(fields)


@given(
    text=st.text(max_size=300),
    start=st.integers(0, 10**9),
    heard=st.booleans(),
)
def test_transcript_round_trip_any_text(text: str, start: int, heard: bool) -> None:
    ev = TranscriptAgent(**COMMON, text=text, start_ms=start, end_ms=start + 1, is_heard=heard)
    assert decode_fields(encode_fields(ev)) == ev


def test_exports() -> None:
    expected = {
        name
        for name, value in vars(events).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations"}
    assert events.__all__ == sorted(expected)
