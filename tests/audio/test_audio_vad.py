"""VoiceActivityDetector: the bundled espeak-ng caller, silence, noise, tones, hysteresis, gate.

Measured when written (Silero VAD 6.2.3, 8 kHz): onsets at 640 ms and 5568 ms for sentences that
start at 600 ms and 5568 ms; stops 24-64 ms after the speech ends; with white noise at 10 dB SNR
through mu-law the same onsets. White noise from -60 to -25 dBFS and 200 Hz-3 kHz tones at
-20 dBFS are never speech (highest window probability 0.19, for the 200 Hz tone).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest

from voicegate.audio import (
    StreamingResampler,
    VoiceActivityDetector,
    caller_speech_ms,
    float_to_int16,
    load_caller,
    mulaw_decode,
    mulaw_encode,
    silero_model_path,
)
from voicegate.errors import AudioError

FRAME_8K = 160
ONSET_LATE_MS = 100  # an onset may be reported up to this much after the true start ...
ONSET_EARLY_MS = 10  # ... and never more than this before it
STOP_LATE_MS = 150


def _run(
    vad: VoiceActivityDetector,
    pcm: npt.NDArray[np.int16] | npt.NDArray[np.float32],
    chunk: int = FRAME_8K,
) -> list[tuple[bool, int]]:
    """Feed ``pcm`` in chunks; the transitions as (is_speech, reported time ms)."""
    events = []
    for i in range(0, len(pcm), chunk):
        was = vad.is_speech
        if vad.process(pcm[i : i + chunk]) != was:
            events.append(
                (vad.is_speech, vad.speech_start_ms if vad.is_speech else vad.speech_stop_ms)
            )
    return events


def _noise(dbfs: float, seconds: float, seed: int = 0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return float_to_int16(rng.standard_normal(int(8000 * seconds)) * 10 ** (dbfs / 20))


def _assert_matches_caller_script(events: list[tuple[bool, int]]) -> None:
    truth = caller_speech_ms()
    onsets = [t for is_speech, t in events if is_speech]
    stops = [t for is_speech, t in events if not is_speech]
    assert len(onsets) == len(stops) >= len(truth)
    # every sentence's start is found, near the true start; nothing before the first
    for start_ms, _ in truth:
        nearest = min(onsets, key=lambda t: abs(t - start_ms))
        assert start_ms - ONSET_EARLY_MS <= nearest <= start_ms + ONSET_LATE_MS, (start_ms, events)
    assert onsets[0] >= truth[0][0] - ONSET_EARLY_MS
    # speech ends where a sentence ends ("Yes, thank you." may split at its comma)
    for _, end_ms in truth:
        assert any(end_ms - 300 <= t <= end_ms + STOP_LATE_MS for t in stops), (end_ms, events)
    # no speech reported in the silences around the sentences
    for is_speech, t in events:
        if is_speech:
            assert any(s - ONSET_EARLY_MS <= t <= e for s, e in truth), (t, events)


def test_caller_wav_speech_onsets_and_stops_near_the_truth() -> None:
    vad = VoiceActivityDetector(8000)
    events = _run(vad, load_caller(8000))
    _assert_matches_caller_script(events)
    assert events[0] == (True, 640)  # measured: 40 ms after the "H" of "Hello"
    assert vad.windows == len(load_caller(8000)) // 256


def test_noisy_caller_through_mulaw_at_10db_snr() -> None:
    clean = load_caller(8000)
    speech = clean[4800:33000].astype(np.float64)
    noise = np.random.default_rng(3).standard_normal(len(clean)) * np.sqrt(np.mean(speech**2))
    noisy = float_to_int16((clean + noise * 10 ** (-10 / 20)) / 32768)
    line = mulaw_decode(mulaw_encode(noisy))
    _assert_matches_caller_script(_run(VoiceActivityDetector(8000), line))


def test_decision_times_do_not_depend_on_chunking() -> None:
    pcm = load_caller(8000)
    expected = _run(VoiceActivityDetector(8000), pcm)
    # Chunks shorter than start_ms/stop_ms cannot hide a transition between two calls.
    for chunk in (97, 333, 1500):
        vad = VoiceActivityDetector(8000)
        assert _run(vad, pcm, chunk) == expected, chunk
        assert vad.windows == len(pcm) // 256
    whole = VoiceActivityDetector(8000)
    whole.process(pcm)
    assert (whole.speech_start_ms, whole.speech_stop_ms) == (expected[-2][1], expected[-1][1])


def test_silence_is_not_speech_and_skips_the_model() -> None:
    vad = VoiceActivityDetector(8000)
    assert _run(vad, np.zeros(8000 * 3, dtype=np.int16)) == []
    assert vad.windows_gated == vad.windows > 0


@pytest.mark.parametrize("dbfs", [-60.0, -45.0, -35.0, -25.0])
def test_white_noise_is_not_speech(dbfs: float) -> None:
    vad = VoiceActivityDetector(8000)
    assert _run(vad, _noise(dbfs, 4.0)) == []
    if dbfs > -50.0:
        assert vad.windows_gated == 0  # above the gate: the model itself said no


@pytest.mark.parametrize("freq_hz", [200, 1000, 3000])
def test_a_steady_tone_is_not_speech(freq_hz: int) -> None:
    # What a pure tone does: Silero scores it low (at most 0.19 measured), so no barge-in.
    n = np.arange(8000 * 4)
    tone = float_to_int16(0.1 * np.sqrt(2) * np.sin(2 * np.pi * freq_hz * n / 8000))
    vad = VoiceActivityDetector(8000)
    highest = 0.0
    for i in range(0, len(tone), FRAME_8K):
        assert not vad.process(tone[i : i + FRAME_8K])
        highest = max(highest, vad.last_probability)
    assert highest < 0.5


def test_energy_gate_keeps_the_decisions_and_saves_model_runs() -> None:
    pcm = load_caller(8000)
    gated = VoiceActivityDetector(8000)
    ungated = VoiceActivityDetector(8000, gate_dbfs=None)
    events_gated, events_ungated = _run(gated, pcm), _run(ungated, pcm)
    assert [e for e in events_gated if e[0]] == [e for e in events_ungated if e[0]]  # same onsets
    for (_, a), (_, b) in zip(events_gated, events_ungated, strict=True):
        assert abs(a - b) <= 96  # stops within 3 windows (the gate ends them sooner)
    assert ungated.windows_gated == 0
    assert gated.windows_gated >= 0.4 * gated.windows  # measured: 115 of 249 windows


def test_start_hysteresis_ignores_speech_shorter_than_start_ms() -> None:
    # "Yes," lasts about 0.4 s: with start_ms=1000 it is never speech, while the 3.6 s sentence
    # is, with its onset backdated to the start of the 1 s run that confirmed it.
    vad = VoiceActivityDetector(8000, start_ms=1000)
    pcm = load_caller(8000)
    decisions = []
    for i in range(0, len(pcm), FRAME_8K):
        was = vad.is_speech
        if vad.process(pcm[i : i + FRAME_8K]) and not was:
            decisions.append((vad.speech_start_ms, (i + FRAME_8K) * 1000 // 8000))
    (first_s, _), (yes_s, _) = caller_speech_ms()
    assert decisions, "the long sentence must be detected"
    for onset_ms, decided_ms in decisions:
        assert decided_ms - onset_ms >= 1000 - 32
        assert not yes_s - 50 <= onset_ms <= yes_s + 450  # "Yes," never starts speech
    assert first_s <= decisions[0][0] < yes_s


def test_stop_hysteresis_bridges_pauses_shorter_than_stop_ms() -> None:
    default = _run(VoiceActivityDetector(8000), load_caller(8000))
    assert len(default) == 6  # hello..account / yes / thank you
    bridged = _run(VoiceActivityDetector(8000, stop_ms=1000), load_caller(8000))
    assert [s for s, _ in bridged] == [True, False, True, False]  # "Yes, thank you." is one


def test_16khz_stream() -> None:
    pcm_24k = load_caller(24000)
    pcm_16k = float_to_int16(StreamingResampler(24000, 16000).process(pcm_24k))
    vad = VoiceActivityDetector(16000)
    _assert_matches_caller_script(_run(vad, pcm_16k, chunk=320))


def test_reset_starts_a_new_stream() -> None:
    vad = VoiceActivityDetector(8000)
    first = _run(vad, load_caller(8000))
    vad.reset()
    assert (vad.is_speech, vad.windows, vad.speech_start_ms) == (False, 0, 0)
    assert _run(vad, load_caller(8000)) == first


def test_bad_arguments_raise_audio_error() -> None:
    with pytest.raises(AudioError, match="44100"):
        VoiceActivityDetector(44100)
    with pytest.raises(AudioError, match="confidence"):
        VoiceActivityDetector(8000, confidence=1.5)


def test_model_ships_with_silero_vad_and_loading_does_not_import_torch() -> None:
    assert silero_model_path().name == "silero_vad.onnx"
    code = (
        "import sys; import numpy as np; from voicegate.audio import VoiceActivityDetector; "
        "v = VoiceActivityDetector(8000); v.process(np.ones(512, dtype=np.int16) * 3000); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_float_input_and_empty_chunks() -> None:
    pcm = load_caller(8000)
    as_int = _run(VoiceActivityDetector(8000), pcm)
    floats = pcm.astype(np.float32) / 32768.0
    vad = VoiceActivityDetector(8000)
    assert not vad.process(np.zeros(0, dtype=np.int16))
    assert _run(vad, floats) == as_int
    with pytest.raises(AudioError, match="int32"):
        vad.process(np.zeros(4, dtype=np.int32))  # type: ignore[arg-type]
