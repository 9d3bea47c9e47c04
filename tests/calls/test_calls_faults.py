"""FaultResponder: on an engine fault every live call is transferred to overflow or ended, a call
nobody moves is ended at the deadline, admission is held until the rebuild succeeds."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from utils import SILENCE, LoopbackLeg, RecordingEvents, ScriptedEngine, make_manager

from voicegate.calls.faults import FaultResponder
from voicegate.contracts import CallInfo, EndReason, TransferTarget
from voicegate.errors import NoFreeSlot


class Kind(enum.Enum):
    RAISE = "raise"


@dataclass(frozen=True)
class Fault:
    kind: Kind
    at: float

    def describe(self) -> str:
        return "engine fault: scripted: raise: boom"


class SilentTransferLeg(LoopbackLeg):
    """A leg that accepts a transfer and never reports its outcome."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[TransferTarget] = []

    def transfer(self, target: TransferTarget) -> None:
        self.targets.append(target)


def script(call: int, frame: int, pcm: np.ndarray) -> tuple[np.ndarray, str]:
    return SILENCE, ""


async def test_every_call_is_moved_and_admission_waits_for_the_rebuild() -> None:
    registry = CollectorRegistry()
    events = RecordingEvents()
    calls = make_manager(ScriptedEngine(script), events, registry=registry)
    plain = calls.start_call(CallInfo("plain", "twilio", "p", to="+1555"), LoopbackLeg())
    silent_leg = SilentTransferLeg()
    moving = calls.start_call(CallInfo("moving", "sip", "p", to="+1555"), silent_leg)
    busy_leg = SilentTransferLeg()
    busy = calls.start_call(CallInfo("busy", "sip", "p", to="+1666"), busy_leg)
    busy.transfer_to("human", "+1777", "dtmf")  # a persona's transfer already under way
    attempts: list[float] = []

    def rebuild() -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("no GPU memory yet")

    responder = FaultResponder(
        calls,
        events,
        overflow=lambda to: "+1999" if to == "+1555" else "",
        rebuild=rebuild,
        registry=registry,
        retry_s=0.05,
        deadline_s=0.1,
        transfer_deadline_s=0.3,
    )
    responder.report(Fault(Kind.RAISE, time.monotonic()))
    await asyncio.sleep(0.01)
    assert not calls.can_admit()
    with pytest.raises(NoFreeSlot, match="engine fault"):
        calls.start_call(CallInfo("late", "twilio", "p"), LoopbackLeg())
    # no transfer on this leg: UNSUPPORTED, the call ends engine_fault at once
    assert plain.end_reason is EndReason.ENGINE_FAULT
    assert [t.to for t in silent_leg.targets] == ["+1999"]
    assert moving.is_active and moving.transfer_trigger == "engine_fault"
    assert busy.is_active and busy.transfer_trigger == "dtmf"
    await asyncio.sleep(0.15)
    assert busy.end_reason is EndReason.ENGINE_FAULT  # the first deadline
    assert moving.is_active  # its overflow transfer has until the final deadline
    await asyncio.sleep(0.25)
    assert moving.end_reason is EndReason.ENGINE_FAULT
    assert len(attempts) == 2 and calls.can_admit()
    errors = [e for e in events.events if e.type == "error"]
    assert sorted(e.call_id for e in errors) == ["busy", "moving", "plain"]
    assert all(e.code == "engine_fault" and e.is_fatal for e in errors)
    transfers = [e for e in events.events if e.type == "call.transfer" and e.call_id != "busy"]
    assert [(e.trigger, e.result) for e in transfers] == [
        ("engine_fault", "requested"),
        ("engine_fault", "unsupported"),
        ("engine_fault", "requested"),
    ]
    assert registry.get_sample_value("voicegate_engine_faults_total", {"kind": "raise"}) == 1
    assert registry.get_sample_value("voicegate_engine_rebuilds") == 1
    assert registry.get_sample_value("voicegate_engine_faulted") == 0
    await responder.aclose()
