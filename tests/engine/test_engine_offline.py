"""Offline calls: WAV helpers, run_offline_call on the tiny engine, and ``voicegate call``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import BANK, tiny_engine
from typer.testing import CliRunner

from voicegate.audio.wav import read_wav, write_wav
from voicegate.engine import FRAME_SAMPLES, MODEL_RATE_HZ, TickMode
from voicegate.engine.offline import read_caller_wav, run_offline_call, write_call_outputs
from voicegate.errors import AudioError

REPO = Path(__file__).resolve().parents[2]


def tone(rate_hz: int, seconds: float, hz: float = 300.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_wav_round_trip_and_resampling(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    write_wav(path, tone(8000, 0.5), 8000)
    pcm, rate = read_wav(path)
    assert rate == 8000 and len(pcm) == 4000
    np.testing.assert_allclose(pcm, tone(8000, 0.5), atol=1 / 32767)
    at_24k = read_caller_wav(path)
    assert len(at_24k) == 12000
    # a 300 Hz tone stays a 300 Hz tone (compare away from the edges)
    np.testing.assert_allclose(at_24k[600:-600], tone(24000, 0.5)[600:-600], atol=2e-3)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError):
        read_wav(tmp_path / "bad.wav")


def test_offline_call_returns_every_frame_and_timed_text(tmp_path: Path) -> None:
    engine = tiny_engine(slots=2, mode=TickMode.OFFLINE)
    try:
        engine.load_persona(BANK)
        caller = tone(MODEL_RATE_HZ, 1.0)
        result = run_offline_call(engine, "bank", caller, seed=3, tail_s=0.4)
        again = run_offline_call(engine, "bank", caller, seed=3, tail_s=0.4)
    finally:
        engine.close()
    n_frames = -(-int(1.4 * MODEL_RATE_HZ) // FRAME_SAMPLES)
    assert len(result.pcm) == n_frames * FRAME_SAMPLES
    np.testing.assert_array_equal(result.pcm, again.pcm)  # same seed, same call
    assert result.pieces == again.pieces
    assert all(t % 80 == 0 and text for t, _, text in result.pieces)
    write_call_outputs(result, tmp_path / "agent.wav", tmp_path / "out.json")
    pcm, rate = read_wav(tmp_path / "agent.wav")
    assert rate == MODEL_RATE_HZ and len(pcm) == len(result.pcm)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["persona"] == "bank" and doc["text"] == result.text
    assert [p["t_ms"] for p in doc["pieces"]] == [t for t, _, _ in result.pieces]


def test_voicegate_call_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voicegate.cli import app

    caller = tmp_path / "caller.wav"
    write_wav(caller, tone(16000, 0.6), 16000)
    monkeypatch.setenv("VOICEGATE_ENGINE", "tiny")
    monkeypatch.setenv("VOICEGATE_PERSONAS_DIR", str(REPO / "personas"))
    monkeypatch.setenv("VOICEGATE_MAX_CALLS", "1")
    out, transcript = tmp_path / "agent.wav", tmp_path / "out.json"
    args = ["call", "--persona", "bank_teller", "--in", str(caller), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--transcript", str(transcript)])
    assert result.exit_code == 0, result.output
    pcm, rate = read_wav(out)
    assert rate == MODEL_RATE_HZ and len(pcm) >= int(1.6 * MODEL_RATE_HZ)
    assert json.loads(transcript.read_text())["persona"] == "bank_teller"
