"""Serving-mode pacing (with an injected clock), exports, and the pure import path."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np

from voicegate.engine import EchoModel, PersonaPrompt, TickOutput, runtime
from voicegate.engine.runtime import TICK_S, BatchedEngine, TickMode


class SteppingClock:
    """A clock that only moves when the model steps: a tick costs a quarter period, except
    the slow ones."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowEcho(EchoModel):
    def __init__(self, clock: SteppingClock, slow_ticks: dict[int, float]) -> None:
        super().__init__(2)
        self.clock = clock
        self.slow_ticks = slow_ticks
        self.steps = 0

    def step(self, pcm_in, active, n_rows):  # type: ignore[no-untyped-def]
        self.steps += 1
        self.clock.now += self.slow_ticks.get(self.steps, 0.25) * TICK_S
        return super().step(pcm_in, active, n_rows)


class Counting:
    def __init__(self, want: int) -> None:
        self.n = 0
        self.want = want
        self.done = threading.Event()

    def on_tick(self, out: TickOutput) -> None:
        self.n += 1
        if self.n >= self.want:
            self.done.set()


def test_late_ticks_are_counted_and_far_behind_ticks_skipped() -> None:
    clock = SteppingClock()
    # tick 3 ends one period late (caught up by the next ticks), tick 12 six periods late
    model = SlowEcho(clock, slow_ticks={3: 2.0, 12: 7.0})
    engine = BatchedEngine(model, clock=clock, sleep=clock.sleep)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "", "NATF0"))
        sink = Counting(want=20)
        engine.join("p", sink)
        assert sink.done.wait(30)
    finally:
        engine.close()
    stats = engine.stats()
    # each slow tick is late, and so are at most the next one or two while catching up
    assert 2 <= stats.late_ticks <= 5
    # only the second fell more than two periods behind: its missed ticks are skipped
    assert stats.skipped_ticks in (5, 6)
    assert stats.underruns >= 20  # nobody pushed: every tick played silence


def test_engine_exports_are_sorted_and_present() -> None:
    import voicegate.engine as engine_pkg

    assert engine_pkg.__all__ == sorted(engine_pkg.__all__)
    for name in engine_pkg.__all__:
        assert hasattr(engine_pkg, name)
    assert runtime.__all__ == ["BatchedEngine", "TickMode"]


def test_engine_import_path_pulls_no_web_or_settings_modules() -> None:
    code = (
        "import sys; import voicegate.engine, voicegate.engine.backends, voicegate.engine.synthetic;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_settings', 'fastapi', 'redis', 'starlette', 'yaml')"
        " or m == 'voicegate.config'); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sink_receives_copies_of_nothing_after_leave() -> None:
    engine = BatchedEngine(EchoModel(1), mode=runtime.TickMode.MANUAL)
    engine.start()
    engine.load_persona(PersonaPrompt("p", "", "NATF0"))
    sink = Counting(want=0)
    slot = engine.join("p", sink)
    slot.push(np.zeros(1920, np.float32))
    engine.tick()
    slot.leave()
    engine.tick()
    assert sink.n == 1 and not slot.is_active and slot.stats.frames == 1


class RecordingSchedule(EchoModel):
    """Records, at each step, the tick's start and what ``next_tick_at`` says then."""

    def __init__(self, clock: SteppingClock, slow_ticks: dict[int, float]) -> None:
        super().__init__(2)
        self.clock = clock
        self.slow_ticks = slow_ticks
        self.engine: BatchedEngine | None = None
        self.seen: list[tuple[float, float | None]] = []

    def step(self, pcm_in, active, n_rows):  # type: ignore[no-untyped-def]
        assert self.engine is not None
        self.seen.append((self.clock.now, self.engine.next_tick_at()))
        self.clock.now += self.slow_ticks.get(len(self.seen), 0.25) * TICK_S
        return super().step(pcm_in, active, n_rows)


def test_next_tick_at_tells_the_serving_schedule_and_keeps_its_phase() -> None:
    clock = SteppingClock()
    start = clock.now
    model = RecordingSchedule(clock, slow_ticks={5: 4.5})  # tick 5 overruns: ticks get skipped
    engine = BatchedEngine(model, clock=clock, sleep=clock.sleep)
    model.engine = engine
    assert engine.next_tick_at() is None  # not started
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "", "NATF0"))
        sink = Counting(want=12)
        slot = engine.join("p", sink)
        assert sink.done.wait(30)
        at = slot.next_tick_at()
        assert at is not None and at == engine.next_tick_at()
    finally:
        engine.close()
    assert engine.next_tick_at() is None and slot.next_tick_at() is None
    assert engine.stats().skipped_ticks >= 1
    for began, next_at in model.seen:
        assert next_at is not None
        # during a tick the next one is the following period, on the grid started at start()
        periods = (next_at - start) / TICK_S
        assert abs(periods - round(periods)) < 1e-6
        assert 0 < next_at - began <= TICK_S + 1e-9


def test_next_tick_at_is_none_without_a_clock() -> None:
    for mode in (TickMode.MANUAL, TickMode.OFFLINE):
        engine = BatchedEngine(EchoModel(2), mode=mode)
        engine.start()
        try:
            engine.load_persona(PersonaPrompt("p", "", "NATF0"))
            slot = engine.join("p", Counting(want=1))
            slot.push(np.zeros(1920, dtype=np.float32))
            if mode is TickMode.MANUAL:
                engine.tick()
            assert engine.next_tick_at() is None and slot.next_tick_at() is None
        finally:
            engine.close()
