"""The model runtime: every call of the process is one slot of a batch (see ``base``).

``create_engine(settings)`` builds one of three backends behind the same ``BatchedEngine``:
``personaplex`` (the 7B release from VOICEGATE_MODEL_DIR), ``tiny`` (random weights, small
shapes, CPU) and ``echo`` (each caller frame back one tick later). Sink callbacks run on the
engine thread.

Importing this package pulls numpy only: torch loads when a torch backend is built.
"""

from __future__ import annotations

from voicegate.engine.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    MODEL_RATE_HZ,
    Engine,
    EngineStats,
    PersonaPrompt,
    ReanchorReport,
    SamplingParams,
    Slot,
    SlotSink,
    SlotStats,
    TickOutput,
)
from voicegate.engine.echo import EchoModel
from voicegate.engine.factory import create_engine, create_model
from voicegate.engine.health import EngineFault, FaultKind
from voicegate.engine.runtime import BatchedEngine, TickMode
from voicegate.engine.stepper import TickModel
from voicegate.engine.supervisor import EngineSupervisor

__all__ = [
    "BatchedEngine",
    "EchoModel",
    "Engine",
    "EngineFault",
    "EngineStats",
    "EngineSupervisor",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "FaultKind",
    "MODEL_RATE_HZ",
    "PersonaPrompt",
    "ReanchorReport",
    "SamplingParams",
    "Slot",
    "SlotSink",
    "SlotStats",
    "TickMode",
    "TickModel",
    "TickOutput",
    "create_engine",
    "create_model",
]
