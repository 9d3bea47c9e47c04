"""CallRecorder and RecordingWriter: both channels on the call's clock, barge-in cuts, a channel
that stops early, and a file that is a valid WAV after every second (what a killed process
leaves)."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voicegate.calls.recording import (
    HOLD_MS,
    CallRecorder,
    RecordingResult,
    RecordingWriter,
    wav_header,
)

RATE = 8000
CHUNK = 160  # 20 ms


@pytest.fixture
def writer() -> Iterator[RecordingWriter]:
    w = RecordingWriter()
    w.start()
    yield w
    w.close()


def read(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, RATE)
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, 2).copy()


def signal(n: int, seed: int) -> npt.NDArray[np.int16]:
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)


def finish(rec: CallRecorder, end: int, **kw: bool) -> RecordingResult:
    results: list[RecordingResult] = []
    rec.finish(end, results.append, **kw)
    deadline = time.monotonic() + 5
    while not results:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return results[0]


def test_channels_are_placed_on_the_call_clock(writer: RecordingWriter, tmp_path: Path) -> None:
    path = tmp_path / "day" / "c1.wav"
    rec = CallRecorder(writer, path, RATE)
    caller, agent = signal(3 * RATE, 1), signal(4 * RATE, 2)
    for at in range(0, len(agent), CHUNK):  # the agent's clock runs on after the caller stopped
        if at < len(caller):
            rec.caller(caller[at : at + CHUNK], at)
        rec.agent(agent[at : at + 3 * CHUNK // 2], at)  # other chunk sizes overlap: later wins
    result = finish(rec, len(agent))
    assert result.is_kept and result.duration_ms == 4000
    assert result.size_bytes == path.stat().st_size == 44 + 4 * len(agent)
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    frames = read(path)
    assert np.array_equal(frames[: len(caller), 0], caller)
    assert not frames[len(caller) :, 0].any()  # silence after the caller's last sample
    assert np.array_equal(frames[:, 1], agent)


def test_bargein_cut_removes_agent_audio_that_was_never_heard(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    rec = CallRecorder(writer, tmp_path / "c2.wav", RATE)
    agent = signal(2 * RATE, 3)
    pos = 0
    for at in range(0, RATE + 4 * CHUNK, CHUNK):
        rec.caller(np.zeros(CHUNK, np.int16), at)
        rec.agent(agent[at : at + CHUNK], at)
        pos = at + CHUNK
    rec.cut(pos - 2 * CHUNK)  # 40 ms were queued at the far side and cleared
    for at in range(pos, 2 * RATE, CHUNK):
        rec.caller(np.zeros(CHUNK, np.int16), at)
        rec.agent(np.zeros(CHUNK, np.int16), at)
    finish(rec, 2 * RATE)
    right = read(tmp_path / "c2.wav")[:, 1]
    assert np.array_equal(right[: pos - 2 * CHUNK], agent[: pos - 2 * CHUNK])
    assert not right[pos - 2 * CHUNK :].any()


def test_a_cut_older_than_the_hold_is_too_late(writer: RecordingWriter, tmp_path: Path) -> None:
    rec = CallRecorder(writer, tmp_path / "c3.wav", RATE)
    agent = signal(3 * RATE, 4)
    for at in range(0, len(agent), CHUNK):
        rec.caller(np.zeros(CHUNK, np.int16), at)
        rec.agent(agent[at : at + CHUNK], at)
    committed = rec.committed
    assert committed >= len(agent) - RATE * HOLD_MS // 1000 - RATE  # written as it goes
    rec.cut(0)  # only what is still held can be silenced
    finish(rec, len(agent))
    right = read(tmp_path / "c3.wav")[:, 1]
    assert np.array_equal(right[:committed], agent[:committed])
    assert not right[committed:].any()


def test_a_lagging_channel_keeps_its_place(writer: RecordingWriter, tmp_path: Path) -> None:
    rec = CallRecorder(writer, tmp_path / "c4.wav", RATE)
    agent = signal(12 * RATE, 5)
    for at in range(0, len(agent), CHUNK):  # no caller audio for 12 s (the ring holds 8)
        rec.agent(agent[at : at + CHUNK], at)
    late = signal(CHUNK, 6)
    rec.caller(late, 0)  # arrives for a place already written: dropped, nothing moves
    rec.caller(late, len(agent) - CHUNK)  # still in the ring: placed on the call's clock
    finish(rec, len(agent))
    frames = read(tmp_path / "c4.wav")
    assert np.array_equal(frames[:, 1], agent)
    assert not frames[: len(agent) - CHUNK, 0].any()
    assert np.array_equal(frames[len(agent) - CHUNK :, 0], late)


def test_the_file_is_a_valid_wav_after_every_second(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    path = tmp_path / "c5.wav"
    rec = CallRecorder(writer, path, RATE)
    x = signal(5 * RATE, 7)
    for at in range(0, len(x), CHUNK):
        rec.caller(x[at : at + CHUNK], at)
        rec.agent(x[at : at + CHUNK], at)
    # what a process killed now leaves: the header matches every second written so far
    deadline = time.monotonic() + 5
    while not path.exists() or path.stat().st_size != 44 + 4 * rec.committed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert rec.committed >= 3 * RATE
    frames = read(path)
    assert len(frames) == rec.committed
    assert np.array_equal(frames[:, 0], x[: rec.committed])
    finish(rec, len(x))


def test_discard_deletes_the_file(writer: RecordingWriter, tmp_path: Path) -> None:
    rec = CallRecorder(writer, tmp_path / "c6.wav", RATE)
    rec.caller(signal(RATE * 2, 8), 0)
    rec.agent(signal(RATE * 2, 9), 0)
    result = finish(rec, 2 * RATE, is_discard=True)
    assert not result.is_kept and result.size_bytes == 0
    assert not (tmp_path / "c6.wav").exists()


def test_an_unwritable_folder_fails_the_recording_not_the_call(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rec = CallRecorder(writer, blocker / "c7.wav", RATE)
    rec.caller(signal(RATE * 2, 10), 0)
    rec.agent(signal(RATE * 2, 11), 0)
    result = finish(rec, 2 * RATE)
    assert not result.is_kept and "cannot open" in result.error


def test_header_fields() -> None:
    h = wav_header(8000, 400)
    assert len(h) == 44 and h[:4] == b"RIFF" and h[8:16] == b"WAVEfmt "
    assert int.from_bytes(h[4:8], "little") == 436 and int.from_bytes(h[40:44], "little") == 400


# --- the CallManager: a call with an announcement joins its slot once it has played ----------


def _manager_with_plan(
    tmp_path: Path, writer: RecordingWriter, clip: npt.NDArray[np.int16]
) -> tuple[Any, Any, Any]:
    from utils import SILENCE, RecordingEvents, ScriptedEngine, make_manager

    from voicegate.calls.recording import RecordingPlan

    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    events = RecordingEvents()
    calls = make_manager(
        engine,
        events,
        recording_plan=lambda info, rate: RecordingPlan(tmp_path / f"{info.call_id}.wav", clip),
        recording_writer=writer,
    )
    return engine, events, calls


async def test_the_call_joins_its_slot_after_the_announcement(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    from utils import LoopbackLeg

    from voicegate.contracts import CallInfo, EndReason
    from voicegate.events.schema import RecordingEnded

    clip = signal(400, 12)
    engine, events, calls = _manager_with_plan(tmp_path, writer, clip)
    call = calls.start_call(CallInfo("CAann", "twilio", "p"), LoopbackLeg())
    assert call.is_announcing and call.slot is None and calls.active_count == 1
    assert events.types() == ["call.started", "recording.started"]
    assert events.events[1].announcement is True
    heard = []
    for _ in range(3):  # 480 samples pulled: the clip's 400 and 80 of silence
        call.feed_caller_audio(signal(CHUNK, 13))
        heard.append(call.pull_agent_audio(CHUNK).copy())
        if _ < 2:
            assert call.slot is None and call.frames_pushed == 0  # the model hears nothing
    out = np.concatenate(heard)
    assert np.array_equal(out[:400], clip) and not out[400:].any()
    assert not call.is_announcing and call.slot is not None and engine.active_slots == 1
    assert events.types().count("call.started") == 1
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    for _ in range(300):
        await asyncio.sleep(0.01)  # recording.ended comes back from the writer thread
        if events.of_type(RecordingEnded):
            break
    (ended,) = events.of_type(RecordingEnded)
    assert ended.status == "complete" and ended.duration_ms == 60


async def test_a_join_that_fails_after_the_announcement_ends_only_that_call(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    from utils import LoopbackLeg

    from voicegate.contracts import CallInfo, EndReason

    engine, events, calls = _manager_with_plan(tmp_path, writer, signal(200, 14))
    call = calls.start_call(CallInfo("CAgone", "sip", "p"), LoopbackLeg())
    engine.personas.clear()  # the persona unloaded while the announcement played
    call.pull_agent_audio(CHUNK)
    call.pull_agent_audio(CHUNK)
    assert not call.is_active and call.end_reason is EndReason.ERROR
    assert "join" in call.end_detail and calls.active_count == 0


async def test_a_call_ended_from_our_side_during_the_announcement_keeps_no_recording(
    writer: RecordingWriter, tmp_path: Path
) -> None:
    from utils import LoopbackLeg

    from voicegate.contracts import CallInfo, EndReason
    from voicegate.events.schema import CallEnded, RecordingEnded

    engine, events, calls = _manager_with_plan(tmp_path, writer, signal(4000, 15))
    call = calls.start_call(CallInfo("CAfault", "twilio", "p"), LoopbackLeg())
    call.feed_caller_audio(signal(CHUNK, 16))
    call.pull_agent_audio(CHUNK)
    calls.end_all(EndReason.ENGINE_FAULT, "engine fault")  # what the FaultResponder does last
    for _ in range(300):
        await asyncio.sleep(0.01)
        if events.of_type(RecordingEnded):
            break
    (ended,) = events.of_type(RecordingEnded)
    assert ended.status == "discarded" and "(engine_fault) during" in ended.detail
    (call_ended,) = events.of_type(CallEnded)
    assert call_ended.reason == "engine_fault" and call_ended.frames == 0
    assert not (tmp_path / "CAfault.wav").exists() and engine.active_slots == 0
