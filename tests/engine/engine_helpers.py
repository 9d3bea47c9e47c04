"""Helpers for the engine tests: a collecting sink, frames, a tiny engine in manual mode."""

from __future__ import annotations

import threading
import types

import numpy as np

from voicegate.engine import FRAME_SAMPLES, BatchedEngine, PersonaPrompt, TickMode, TickOutput
from voicegate.engine.factory import create_model

BANK = PersonaPrompt(
    "bank", "You are a friendly bank teller at Northwind Savings. Greet the caller.", "NATF0"
)
SUPPORT = PersonaPrompt("support", "You are a patient technical support agent.", "NATM1")


class Collect:
    """A sink that copies every output (runs on the engine thread)."""

    def __init__(self, want: int = 0) -> None:
        self.pcm: list[np.ndarray] = []
        self.tokens: list[int] = []
        self.texts: list[str] = []
        self.indices: list[int] = []
        self.want = want
        self.done = threading.Event()

    def on_tick(self, out: TickOutput) -> None:
        self.pcm.append(out.pcm.copy())
        self.tokens.append(out.text_token)
        self.texts.append(out.text)
        self.indices.append(out.frame_index)
        if self.want and len(self.pcm) >= self.want:
            self.done.set()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, np.float32)


def noise_frames(seed: int, n: int, level: float = 0.1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(FRAME_SAMPLES) * level).astype(np.float32) for _ in range(n)]


def tiny_engine(slots: int = 3, mode: TickMode = TickMode.MANUAL, **kw: object) -> BatchedEngine:
    settings = types.SimpleNamespace(engine="tiny", max_calls=slots, device="cpu")
    engine = BatchedEngine(create_model(settings), mode=mode, seed=7, **kw)  # type: ignore[arg-type]
    engine.start()
    return engine
