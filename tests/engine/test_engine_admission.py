"""Admission from measurement: the worst tick measured at start caps the calls admitted."""

from __future__ import annotations

import pytest

from voicegate.engine.base import PersonaPrompt
from voicegate.engine.capacity import TICK_BUDGET_MS, realtime_slots
from voicegate.engine.echo import EchoModel
from voicegate.engine.runtime import BatchedEngine, TickMode
from voicegate.errors import NoFreeSlot


class _Sink:
    def on_tick(self, out: object) -> None:
        pass


def test_realtime_slots_interpolates_between_one_and_all_rows() -> None:
    assert realtime_slots(40, 15.0, 60.0) == 40  # everything real time
    # 10 ms + 1 ms per extra call: 71 calls reach 80 ms exactly, the 72nd would be late
    assert realtime_slots(100, 10.0, 109.0) == 71
    assert realtime_slots(100, 10.0, 109.0, budget_ms=40.0) == 31
    assert realtime_slots(8, TICK_BUDGET_MS + 1, 200.0) == 0  # not even one call
    assert realtime_slots(1, 30.0, 30.0) == 1
    assert realtime_slots(0, 1.0, 1.0) == 0


class _MeasuredEcho(EchoModel):
    """An echo model whose warm-up 'measured' that only some of its rows stay real time."""

    def __init__(self, rows: int, limit: int) -> None:
        super().__init__(rows)
        self.limit = limit
        self.realtime_slots: int | None = None

    def warmup(self) -> None:
        super().warmup()
        self.realtime_slots = self.limit


def test_engine_admits_no_more_calls_than_measured_real_time() -> None:
    engine = BatchedEngine(_MeasuredEcho(rows=6, limit=4), mode=TickMode.MANUAL, seed=0)
    assert engine.max_slots == 6
    engine.start()
    try:
        assert engine.max_slots == 4
        assert engine.stats().max_slots == 4
        engine.load_persona(PersonaPrompt("p", "", "NATF0"))
        handles = [engine.join("p", _Sink()) for _ in range(4)]
        with pytest.raises(NoFreeSlot):
            engine.join("p", _Sink())
        handles[0].leave()
        engine.join("p", _Sink())  # a freed slot is admitted again
        assert engine.tick()
    finally:
        engine.close()


def test_engine_keeps_every_slot_when_all_are_real_time() -> None:
    engine = BatchedEngine(_MeasuredEcho(rows=3, limit=3), mode=TickMode.MANUAL, seed=0)
    engine.start()
    try:
        assert engine.max_slots == 3
    finally:
        engine.close()
