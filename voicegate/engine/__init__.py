"""The model runtime: every call of the process is one slot of a batch (see ``base``)."""

from __future__ import annotations

from voicegate.engine.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    MODEL_RATE_HZ,
    Engine,
    PersonaPrompt,
    SamplingParams,
    Slot,
    SlotSink,
    SlotStats,
    TickOutput,
)

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "MODEL_RATE_HZ",
    "Engine",
    "PersonaPrompt",
    "SamplingParams",
    "Slot",
    "SlotSink",
    "SlotStats",
    "TickOutput",
]
