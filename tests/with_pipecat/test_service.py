"""``VoiceGateS2SService`` in real pipecat pipelines (pipecat's ``PipelineWorker`` and
``WorkerRunner``) against the tiny engine (and the echo engine for the scripted barge-in),
with the calls' events written to a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    EndWorkerFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSTextFrame,
)

from tests.legs.gateway import REPO, read_events
from tests.with_pipecat.pipecat_helpers import Run, frames_of, run_pipelines
from voicegate.audio.samples import caller_speech_ms, load_caller
from voicegate.errors import ConfigError, PersonaError
from voicegate.personas.loader import load_persona
from voicegate.pipecat import (
    SharedEngine,
    VoiceGateS2SService,
    VoiceGateTransferFrame,
    shared_engine,
)

PERSONAS = REPO / "personas"


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


async def test_a_pipeline_gets_the_agents_audio_and_words_and_logs_the_call(
    redis_url: str, tmp_path: Path
) -> None:
    shared = SharedEngine(
        "tiny", personas_dir=PERSONAS, events_url=redis_url, journal_dir=tmp_path, max_calls=2
    )
    try:
        run = Run(VoiceGateS2SService(shared, persona="support_agent", call_id="pc-one"))
        await run_pipelines([run], [frames_of(load_caller(8000)[: 8000 * 3])])
        audio = run.down.of(OutputAudioRawFrame)
        assert audio and {(f.sample_rate, f.num_channels) for f in audio} == {(24000, 1)}
        assert all(len(f.audio) == 2 * 480 for f in audio)  # 20 ms at 24 kHz
        words = run.down.of(TTSTextFrame)
        assert words and all(w.text for w in words)
        assert run.service.call is not None and not run.service.call.is_active
        events = await read_events(redis_url, "pc-one")
        types = [e["type"] for e in events]
        assert types[0] == "call.started" and types[-1] == "call.ended"
        assert {e["leg"] for e in events} == {"pipecat"}
        assert events[-1]["reason"] == "caller_hangup"
        assert shared.calls.active_count == 0
    finally:
        await shared.aclose()


async def test_two_pipelines_in_one_process_share_one_engine() -> None:
    shared = SharedEngine("tiny", personas_dir=PERSONAS, max_calls=2)
    try:
        persona = load_persona(PERSONAS / "bank_teller.yaml", PERSONAS)  # a Persona object
        runs = [
            Run(VoiceGateS2SService(shared, persona="support_agent")),
            Run(VoiceGateS2SService(shared, persona=persona)),
        ]
        speech = load_caller(8000)
        await run_pipelines(runs, [frames_of(speech[: 8000 * 3]), frames_of(speech[8000:32000])])
        engine = shared.engine
        assert engine.max_slots == 2
        # both calls sat in the one engine at once, each in its own slot
        assert runs[0].slots_seen | runs[1].slots_seen == {0, 1}
        assert runs[0].slots_seen.isdisjoint(runs[1].slots_seen)
        for run in runs:
            assert run.down.of(OutputAudioRawFrame) and run.down.of(TTSTextFrame)
        assert [r.service.call.info.persona for r in runs] == [  # type: ignore[union-attr]
            "support_agent",
            "bank_teller",
        ]
    finally:
        await shared.aclose()


async def test_a_barge_in_broadcasts_pipecats_interruption_frames(
    redis_url: str, tmp_path: Path
) -> None:
    # the echo engine speaks the caller's audio back: sentence A, a loud 2 kHz tone (no speech:
    # the caller's voice activity stops while the agent stays audible), then sentence B over the
    # agent's echo of the tone; when the agent falls silent that is a barge-in (as in the Twilio
    # leg's test of the same script)
    shared = SharedEngine(
        "echo", personas_dir=PERSONAS, events_url=redis_url, journal_dir=tmp_path, max_calls=2
    )
    try:
        speech = load_caller(8000)
        spans = caller_speech_ms()
        a = speech[: spans[0][1] * 8]
        b = speech[spans[1][0] * 8 : spans[1][1] * 8 + 800]
        script = np.concatenate(
            [a, tone(0.4, hz=2000, amplitude=3000), b, np.zeros(8000, np.int16)]
        )
        run = Run(VoiceGateS2SService(shared, persona="support_agent", call_id="pc-barge"))
        await run_pipelines([run], [frames_of(script)])
        assert run.service.interruptions >= 1
        assert len(run.down.of(InterruptionFrame)) == run.service.interruptions  # downstream
        assert len(run.up.of(InterruptionFrame)) == run.service.interruptions  # and upstream
        events = await read_events(redis_url, "pc-barge")
        bargeins = [e for e in events if e["type"] == "bargein"]
        assert len(bargeins) == run.service.interruptions
    finally:
        await shared.aclose()


async def test_the_call_flow_transfer_pushes_a_transfer_frame_and_ends_the_pipeline() -> None:
    shared = SharedEngine("echo", personas_dir=PERSONAS, max_calls=2)
    asked: list[str] = []

    async def on_transfer(target: object) -> bool:
        asked.append(target.to)  # type: ignore[attr-defined]
        return True

    try:
        # bank_teller: DTMF 0 transfers to the branch (+14155550123)
        run = Run(VoiceGateS2SService(shared, persona="bank_teller", on_transfer=on_transfer))
        silence = frames_of(np.zeros(8000 * 3, np.int16))
        script = [*silence[:25], InputDTMFFrame(KeypadEntry.ZERO), *silence[25:]]
        await run_pipelines([run], [script])
        transfers = run.down.of(VoiceGateTransferFrame)
        assert [(t.destination, t.to) for t in transfers] == [("branch", "+14155550123")]
        assert asked == ["+14155550123"]
        assert run.down.of(EndWorkerFrame) or run.service.call.end_reason is not None  # type: ignore[union-attr]
        call = run.service.call
        assert call is not None and call.end_reason is not None
        assert call.end_reason.value == "transferred"
    finally:
        await shared.aclose()


async def test_a_persona_hang_up_ends_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "hanger.yaml").write_text(
        "description: hangs up on 9\nvoice: NATF0\ntext_prompt: You answer the phone.\n"
        "call_flow:\n  dtmf:\n    '9': hangup\n"
    )
    shared = SharedEngine("echo", personas_dir=tmp_path, max_calls=1)
    try:
        run = Run(VoiceGateS2SService(shared, persona="hanger"))
        silence = frames_of(np.zeros(8000 * 3, np.int16))
        await run_pipelines(
            [run], [[*silence[:10], InputDTMFFrame(KeypadEntry.NINE), *silence[10:]]]
        )
        call = run.service.call
        assert call is not None and call.end_reason is not None
        assert call.end_reason.value == "agent_hangup"
    finally:
        await shared.aclose()


async def test_an_unknown_persona_is_a_clear_error(tmp_path: Path) -> None:
    shared = SharedEngine("echo", personas_dir=PERSONAS, max_calls=1)
    try:
        await shared.start()
        with pytest.raises(PersonaError, match="no persona 'nobody'.*support_agent"):
            await shared.persona("nobody")
    finally:
        await shared.aclose()


async def test_an_engine_fault_ends_the_pipelines_call_and_the_engine_is_rebuilt() -> None:
    # the test-only fault injector: the echo model raises 0.5 s after a call is in it
    shared = SharedEngine(
        "echo",
        personas_dir=PERSONAS,
        max_calls=2,
        engine_fault="raise",
        engine_fault_after_s=0.5,
        engine_fault_calls=1,
        engine_fault_engines=1,
    )
    try:
        run = Run(VoiceGateS2SService(shared, persona="support_agent"))
        await run_pipelines([run], [frames_of(tone(4.0))])
        call = run.service.call
        assert call is not None and call.end_reason is not None
        assert call.end_reason.value == "engine_fault"
        assert run.down.of(EndWorkerFrame)  # the pipeline was told to end, not left silent
        for _ in range(100):  # the supervisor rebuilds the engine off the loop
            if not shared.calls.admission_hold:
                break
            await asyncio.sleep(0.05)
        assert shared.calls.can_admit()
    finally:
        await shared.aclose()


def test_shared_engine_is_one_per_name_and_refuses_other_settings() -> None:
    first = shared_engine("test-one", engine="echo", max_calls=1)
    assert shared_engine("test-one") is first
    assert shared_engine("test-one", engine="echo", max_calls=1) is first
    with pytest.raises(ConfigError, match="other settings"):
        shared_engine("test-one", engine="tiny")
