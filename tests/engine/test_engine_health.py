"""Engine faults: a tick that raises, returns NaN/inf audio or hangs latches one fault, reported
once; the supervisor rebuilds a fresh engine with the personas loaded again."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from voicegate.engine import (
    BatchedEngine,
    EchoModel,
    EngineFault,
    EngineSupervisor,
    FaultKind,
    PersonaPrompt,
    TickMode,
    TickOutput,
)
from voicegate.engine.faulty import FaultInjectingModel
from voicegate.engine.health import non_finite_rows

PERSONA = PersonaPrompt("p", "hello", "NATF0")


class Collect:
    def __init__(self) -> None:
        self.pcm: list[np.ndarray] = []

    def on_tick(self, out: TickOutput) -> None:
        self.pcm.append(out.pcm.copy())


class Faults:
    """An on_fault subscriber that records every call (the engine must call it once)."""

    def __init__(self) -> None:
        self.seen: list[EngineFault] = []
        self.threads: list[str] = []
        self.event = threading.Event()

    def __call__(self, fault: EngineFault) -> None:
        self.seen.append(fault)
        self.threads.append(threading.current_thread().name)
        self.event.set()


def manual_engine(kind: str, faults: Faults, slots: int = 2) -> BatchedEngine:
    model = FaultInjectingModel(EchoModel(slots), kind, after_s=0.0, min_calls=2)
    engine = BatchedEngine(model, mode=TickMode.MANUAL, on_fault=faults)
    engine.start()
    engine.load_persona(PERSONA)
    return engine


@pytest.mark.parametrize("kind", ["raise", "nan"])
def test_a_raising_or_non_finite_tick_latches_one_fault_and_delivers_nothing(kind: str) -> None:
    faults = Faults()
    engine = manual_engine(kind, faults)
    first, second = Collect(), Collect()
    engine.join("p", first)
    assert engine.tick()  # one call in: the fault clock has not started
    assert len(first.pcm) == 1 and not faults.seen
    engine.join("p", second)
    assert not engine.tick()  # two calls in: due at once
    assert not engine.tick()  # latched: no more steps
    assert len(first.pcm) == 1 and second.pcm == []  # the bad tick reached no sink
    assert [f.kind for f in faults.seen] == [FaultKind(kind)]
    health = engine.health()
    assert health is not None and health.startswith(f"engine fault: echo: {kind}: ")
    if kind == "nan":
        assert "slot(s) 0, 1" in health
    engine.close()


def test_nan_in_a_free_slot_row_is_not_a_fault() -> None:
    pcm = np.zeros((4, 1920), np.float32)
    active = np.array([True, False, True, False])
    pcm[1, 5] = np.nan
    assert non_finite_rows(pcm, 3, active) == ""
    pcm[2, 7] = np.inf
    assert non_finite_rows(pcm, 3, active) == "slot(s) 2"


def test_a_hung_tick_is_reported_by_the_watch_thread_and_its_late_output_is_void() -> None:
    faults = Faults()
    model = FaultInjectingModel(EchoModel(2), "hang", after_s=0.2, min_calls=1)
    engine = BatchedEngine(model, tick_timeout_s=0.3, on_fault=faults)
    engine.start()
    engine.load_persona(PERSONA)
    sink = Collect()
    engine.join("p", sink)
    assert faults.event.wait(10)
    (fault,) = faults.seen
    assert fault.kind is FaultKind.HANG and "limit 0.3 s" in fault.detail
    assert faults.threads == ["voicegate-engine-watch-echo"]
    ticks = len(sink.pcm)
    engine.close(timeout_s=5)  # releases the hung step: it returns and delivers nothing
    assert len(sink.pcm) == ticks and len(faults.seen) == 1


def test_the_supervisor_rebuilds_a_fresh_engine_with_the_personas_and_reports_faults_once() -> None:
    built: list[FaultInjectingModel] = []

    def build(generation: int) -> BatchedEngine:
        model = FaultInjectingModel(EchoModel(2), "raise" if generation == 0 else "", after_s=0)
        built.append(model)
        return BatchedEngine(model, mode=TickMode.MANUAL)

    faults = Faults()
    supervisor = EngineSupervisor(build)
    supervisor.on_fault = faults
    assert supervisor.health() == "engine: not started"
    supervisor.start()
    supervisor.load_persona(PERSONA)
    supervisor.load_persona(PersonaPrompt("q", "bye", "NATF0"))
    supervisor.unload_persona("q")
    first = supervisor.current
    supervisor.join("p", Collect())
    first._stats.call_prompts, first._stats.reanchors = 3, 2  # noqa: SLF001 (as if it had run)
    assert not first.tick()
    assert len(faults.seen) == 1 and supervisor.fault is not None
    assert (supervisor.health() or "").startswith("engine fault: echo: raise")
    supervisor.rebuild()
    assert supervisor.current is not first and supervisor.generation == 1
    assert supervisor.health() is None and supervisor.rebuilds == 1
    assert supervisor.has_persona("p") and not supervisor.has_persona("q")
    sink = Collect()
    slot = supervisor.join("p", sink)
    slot.push(np.full(1920, 0.25, np.float32))
    assert supervisor.current.tick() and supervisor.current.tick()
    assert float(sink.pcm[1][0]) == pytest.approx(0.25)  # echo: the frame back one tick later
    stats = supervisor.stats()
    assert stats.tick_errors == 1  # the retired engine's counters are kept
    assert (stats.call_prompts, stats.reanchors) == (3, 2)
    assert stats.max_slots == 2  # a gauge: the current engine's, not summed
    assert len(faults.seen) == 1 and len(built) == 2
    supervisor.close()
