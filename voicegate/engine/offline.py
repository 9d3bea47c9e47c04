"""A whole conversation offline: caller audio in, the agent's audio and timed text out.

Usage (``voicegate call`` does this)::

    engine = create_engine(settings, offline=True, seed=0); engine.start()
    engine.load_persona(prompt)
    result = run_offline_call(engine, prompt.key, caller_pcm_24k)
    write_call_outputs(result, Path("agent.wav"), Path("out.json"))

The caller's frames are pushed a few ticks ahead of the engine (never more than the input ring
holds, so nothing is dropped), and a second of silence follows the caller's audio so the
agent's reply to the last words comes out too.

Owns: run_offline_call, CallResult, write_call_outputs, read_caller_wav. Imports numpy and the
engine only (no pydantic; the CLI resolves the persona).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.audio.wav import read_wav, write_wav
from voicegate.engine.base import FRAME_MS, FRAME_SAMPLES, MODEL_RATE_HZ, TickOutput
from voicegate.engine.clips import resample_clip
from voicegate.engine.runtime import OFFLINE_QUEUE_FRAMES, BatchedEngine
from voicegate.errors import EngineError

__all__ = ["CallResult", "read_caller_wav", "run_offline_call", "write_call_outputs"]

TAIL_S = 1.0
AHEAD_FRAMES = OFFLINE_QUEUE_FRAMES // 2
WAIT_S = 600.0


@dataclass(slots=True)
class CallResult:
    """The agent's side of an offline call."""

    persona: str
    engine: str
    pcm: npt.NDArray[np.float32]  # 24 kHz
    pieces: list[tuple[int, int, str]] = field(default_factory=list)  # (t_ms, token, text)

    @property
    def text(self) -> str:
        return "".join(p[2] for p in self.pieces).strip()


class _Recorder:
    def __init__(self, n_frames: int) -> None:
        self.pcm = np.zeros(n_frames * FRAME_SAMPLES, dtype=np.float32)
        self.pieces: list[tuple[int, int, str]] = []
        self.received = 0
        self.cond = threading.Condition()

    def on_tick(self, out: TickOutput) -> None:
        k = out.frame_index
        self.pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES] = out.pcm
        if out.text:
            self.pieces.append((k * FRAME_MS, out.text_token, out.text))
        with self.cond:
            self.received = k + 1
            self.cond.notify_all()


def read_caller_wav(path: Path) -> npt.NDArray[np.float32]:
    """A WAV at any rate, first channel, as 24 kHz float32."""
    pcm, rate = read_wav(path)
    return resample_clip(pcm, rate, MODEL_RATE_HZ)


def run_offline_call(
    engine: BatchedEngine,
    persona_key: str,
    caller_pcm_24k: npt.NDArray[np.float32],
    *,
    seed: int | None = None,
    tail_s: float = TAIL_S,
) -> CallResult:
    """Play ``caller_pcm_24k`` into a new call on an offline-mode engine; blocks until done."""
    tail = int(tail_s * MODEL_RATE_HZ)
    total = len(caller_pcm_24k) + tail
    n_frames = max(1, -(-total // FRAME_SAMPLES))
    audio = np.zeros(n_frames * FRAME_SAMPLES, dtype=np.float32)
    audio[: len(caller_pcm_24k)] = caller_pcm_24k
    frames = audio.reshape(n_frames, FRAME_SAMPLES)
    recorder = _Recorder(n_frames)
    slot = engine.join(persona_key, recorder, seed=seed)
    try:
        for k in range(n_frames):

            def has_room(k: int = k) -> bool:
                return k - recorder.received < AHEAD_FRAMES

            with recorder.cond:
                is_ready = recorder.cond.wait_for(has_room, timeout=WAIT_S)
            if not is_ready:
                raise EngineError(f"offline call: no output for frame {recorder.received}")
            slot.push(frames[k])
        with recorder.cond:
            if not recorder.cond.wait_for(lambda: recorder.received >= n_frames, timeout=WAIT_S):
                raise EngineError(f"offline call: stalled at frame {recorder.received}/{n_frames}")
    finally:
        slot.leave()
    return CallResult(persona_key, engine.name, recorder.pcm, recorder.pieces)


def write_call_outputs(result: CallResult, out_wav: Path, transcript_json: Path) -> None:
    """The agent's WAV (24 kHz, 16-bit) and its timed text pieces as JSON."""
    write_wav(out_wav, result.pcm, MODEL_RATE_HZ)
    transcript_json.write_text(
        json.dumps(
            {
                "persona": result.persona,
                "engine": result.engine,
                "sample_rate_hz": MODEL_RATE_HZ,
                "duration_ms": len(result.pcm) * 1000 // MODEL_RATE_HZ,
                "text": result.text,
                "pieces": [{"t_ms": t, "token": tok, "text": s} for t, tok, s in result.pieces],
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
