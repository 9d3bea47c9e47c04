"""Per-call prompts in serving mode (an injected clock, a model whose costs are set): they are
computed between ticks when they fit before the next one, so no tick is late because of
them; one that does not fit waits for room, at most ``MAX_CALL_PROMPT_WAIT_S``. A pass takes
as many calls as fit (its cost grows with its calls), and one slow pass does not hold back the
joins after it. A model that timed its passes' shapes (``call_prompt_cost_s``) gets passes of
several calls as soon as its table says they fit, and a pass's calls are loaded together
(``reset_slots``)."""

from __future__ import annotations

import threading

import pytest

from voicegate.engine import EchoModel, PersonaPrompt, TickOutput
from voicegate.engine.runtime import (
    MAX_CALL_PROMPT_WAIT_S,
    TICK_S,
    BatchedEngine,
)
from voicegate.errors import NoFreeSlot

PERSONA = PersonaPrompt("p", "You are an agent.", "NATF0")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class PromptEcho(EchoModel):
    """Echo with per-call prompts: a tick costs ``tick`` periods, a prompt pass ``prompt``."""

    def __init__(
        self,
        clock: Clock,
        tick: float,
        prompt: float,
        per_call: float = 0.0,
        slots: int = 4,
        slow_pass: tuple[int, float] = (-1, 0.0),
    ) -> None:
        super().__init__(slots)
        self.clock, self.tick_cost, self.prompt_cost = clock, tick, prompt
        self.per_call_cost = per_call  # a pass costs prompt + per_call x its calls (ticks)
        self.slow_pass = slow_pass  # (which pass, its cost in ticks): a one-off outlier
        self.loaded: dict[int, object] = {}
        self.passes: list[tuple[float, int]] = []  # (clock, calls in the pass)
        self.on_step: list[object] = []  # callables run at each step (engine thread)
        self.engine: BatchedEngine | None = None  # set by ``storm``

    def prepare_calls(self, requests: list[tuple[object, str]]) -> list[object]:
        cost = self.prompt_cost + self.per_call_cost * len(requests)
        if len(self.passes) == self.slow_pass[0]:
            cost = self.slow_pass[1]
        self.passes.append((self.clock.now, len(requests)))
        self.clock.now += cost * TICK_S
        return [("own", text) for _, text in requests]

    def reset_slot(self, index, persona_state, sampling, seed):  # type: ignore[no-untyped-def]
        self.loaded[index] = persona_state
        super().reset_slot(index, persona_state, sampling, seed)

    def step(self, pcm_in, active, n_rows):  # type: ignore[no-untyped-def]
        for fn in self.on_step:
            fn()  # type: ignore[operator]
        self.clock.now += self.tick_cost * TICK_S
        return super().step(pcm_in, active, n_rows)


class First:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.at: float | None = None
        self.done = threading.Event()

    def on_tick(self, out: TickOutput) -> None:
        if self.at is None:
            self.at = self.clock.now
            self.done.set()


def run(tick: float, prompt: float, joins: int) -> tuple[PromptEcho, BatchedEngine, list[First]]:
    clock = Clock()
    model = PromptEcho(clock, tick, prompt)
    engine = BatchedEngine(model, clock=clock, sleep=clock.sleep)
    engine.start()
    engine.load_persona(PERSONA)
    live = First(clock)
    engine.join("p", live)  # a call in progress: its ticks must stay on time
    assert live.done.wait(10)
    sinks = []
    for i in range(joins):
        sink = First(clock)
        sink.joined = clock.now  # type: ignore[attr-defined]  # at or before the join
        slot = engine.join("p", sink, text_prompt=f"You are an agent. The caller is {i}.")
        assert sink.done.wait(10)
        slot.leave()
        sinks.append(sink)
    engine.close()
    return model, engine, sinks


def test_prompts_that_fit_between_ticks_make_no_tick_late() -> None:
    model, engine, sinks = run(tick=0.5, prompt=0.3, joins=6)
    assert engine.stats().late_ticks == 0
    assert engine.stats().call_prompts == 6
    assert all(
        state == ("own", f"You are an agent. The caller is {i}.")
        for i, state in [
            (int(s[1].rsplit(" ", 1)[1][:-1]), s) for s in model.loaded.values() if s is not None
        ]
    )
    assert len(model.passes) == 6


def test_a_prompt_that_does_not_fit_waits_for_room_then_runs() -> None:
    model, engine, sinks = run(tick=0.7, prompt=0.5, joins=3)
    # no room for any pass (the first, unmeasured, needs half a tick): each call waited its
    # longest (not forever), then its prompt ran alone and it started
    assert len(model.passes) == 3
    waits = [at - s.joined for (at, _), s in zip(model.passes, sinks, strict=True)]  # type: ignore[attr-defined]
    assert all(MAX_CALL_PROMPT_WAIT_S <= w < MAX_CALL_PROMPT_WAIT_S + 2 * TICK_S for w in waits)
    assert all(s.at is not None for s in sinks)
    assert engine.stats().call_prompt_forced == 3


class Storm:
    """Joins with own prompts at ``rate`` per second of the fake clock, ``burst`` of them at
    the first step, until ``until`` (run on the engine thread, at each step); a call leaves
    at its first output. Records each join's wait to its first output."""

    def __init__(
        self, engine: BatchedEngine, clock: Clock, rate: float, burst: int, until: float
    ) -> None:
        self.engine, self.clock, self.rate, self.until = engine, clock, rate, until
        self.next_at = clock.now
        self.burst = burst
        self.waits: list[float] = []
        self.n = self.refused = 0
        self.done = threading.Event()

    def __call__(self) -> None:
        now = self.clock.now
        if now >= self.until:
            self.done.set()
            return
        todo = self.burst
        self.burst = 0
        while self.next_at <= now:
            self.next_at += 1.0 / self.rate
            todo += 1
        for _ in range(todo):
            self.join(now)

    def join(self, now: float) -> None:
        holder: list[object] = []
        waits, clock = self.waits, self.clock

        class Leaves:
            def on_tick(self, out: TickOutput) -> None:
                if holder:
                    waits.append(clock.now - now)
                    holder.pop().leave()  # type: ignore[attr-defined]

        self.n += 1
        text = f"You are an agent. The caller is number {self.n} of the storm."
        try:
            holder.append(self.engine.join("p", Leaves(), text_prompt=text))
        except NoFreeSlot:
            self.refused += 1  # joins pile up waiting


def storm(model: PromptEcho, clock: Clock, rate: float, burst: int) -> tuple[BatchedEngine, Storm]:
    engine = BatchedEngine(model, clock=clock, sleep=clock.sleep)
    model.engine = engine
    engine.start()
    engine.load_persona(PERSONA)
    live = First(clock)
    engine.join("p", live)  # a call in progress: its ticks must stay on time
    assert live.done.wait(10)
    driver = Storm(engine, clock, rate, burst, clock.now + 3.0)
    model.on_step.append(driver)
    assert driver.done.wait(30)
    engine.close()
    return engine, driver


def test_a_burst_of_joins_is_split_into_passes_that_fit_and_makes_no_tick_late() -> None:
    # a pass of 8 would take 1.06 ticks; the room after a tick is 0.75: at most 4 fit
    clock = Clock()
    model = PromptEcho(clock, tick=0.25, prompt=0.1, per_call=0.12, slots=16)
    engine, driver = storm(model, clock, rate=20.0, burst=8)
    stats = engine.stats()
    assert driver.refused == 0
    assert stats.late_ticks == 0 and stats.call_prompt_forced == 0
    assert max(n for _, n in model.passes) <= 4
    assert driver.n >= 60 and len(driver.waits) >= driver.n - 4
    # the burst clears in a few ticks and the 20/s after it wait about a tick
    assert max(driver.waits) < 5 * TICK_S < MAX_CALL_PROMPT_WAIT_S
    assert stats.call_prompt_done == stats.call_prompt_passes + sum(n - 1 for _, n in model.passes)


def test_one_slow_pass_does_not_hold_back_the_joins_after_it() -> None:
    # the fifth pass takes 2 ticks (a first use of some kernel): late, but not the next ones
    clock = Clock()
    model = PromptEcho(clock, tick=0.25, prompt=0.1, per_call=0.12, slots=16, slow_pass=(4, 2.0))
    engine, driver = storm(model, clock, rate=20.0, burst=0)
    stats = engine.stats()
    assert driver.refused == 0 and stats.call_prompt_forced == 0
    assert stats.late_ticks <= 2  # the slow pass's
    assert sorted(driver.waits)[-3] < 3 * TICK_S  # all but those behind the slow pass


def test_keep_newest_drops_the_oldest_frames_as_overruns() -> None:
    import numpy as np

    from voicegate.engine.slots import SlotState

    state = SlotState(0, 4)
    state.active = True
    for value in (1.0, 2.0, 3.0):
        state.push(np.full(1920, value, dtype=np.float32), state.generation)
    state.keep_newest(1)
    out = np.zeros(1920, dtype=np.float32)
    assert state.queued() == 1 and state.stats.overruns == 2
    assert state.pop_into(out) and out[0] == 3.0
    state.keep_newest(1)  # nothing queued: nothing to drop
    assert state.stats.overruns == 2


class ShapedPromptEcho(PromptEcho):
    """Per-call prompts in fixed-shape passes of 4 rows (a captured graph): a pass of 1 to 4
    calls costs the same, ``prompt`` + 4 x ``per_call``; ``call_prompt_size`` says so."""

    def prepare_calls(self, requests: list[tuple[object, str]]) -> list[object]:
        out = []
        for first in range(0, len(requests), 4):
            self.passes.append((self.clock.now, len(requests[first : first + 4])))
            self.clock.now += (self.prompt_cost + 4 * self.per_call_cost) * TICK_S
            out.extend(("own", text) for _, text in requests[first : first + 4])
        return out

    def call_prompt_size(self, calls: int, tokens: int) -> int:
        return -(-calls // 4) * 4 * tokens


def test_fixed_shape_passes_are_paced_by_their_padded_size() -> None:
    # a pass costs 0.58 ticks whatever its calls (up to 4), 1.16 for 5 to 8; the room after
    # a tick is 0.65: the pacing fits the cost to padded sizes and fills passes of 4 (on
    # calls x tokens a pass of 2 would be predicted at 0.87 ticks: one call per pass)
    clock = Clock()
    model = ShapedPromptEcho(clock, tick=0.25, prompt=0.1, per_call=0.12, slots=16)
    engine, driver = storm(model, clock, rate=20.0, burst=8)
    stats = engine.stats()
    assert driver.refused == 0
    assert stats.late_ticks == 0 and stats.call_prompt_forced == 0
    assert max(n for _, n in model.passes) == 4


# an H200 at 80 live calls (ms; a tick is 80): the tick takes 45, a bare pass of 200-token
# prompts (256 text positions) 9.4 / 14.4 / 20.8 / 29.0 for 1 to 4 calls, copies in and out
# 0.6 + 0.6 per call, the loads into the slots (together) 7.5 + 0.3 per call
TICK_MS, TABLE_MS = 45.0, {1: 9.4, 2: 14.4, 3: 20.8, 4: 29.0}
COPY_MS, LOAD_MS = (0.6, 0.6), (7.5, 0.3)


class TimedPromptEcho(PromptEcho):
    """Per-call prompts in fixed-shape passes of at most 4 calls (more take several) whose
    bare cost the model measured (``call_prompt_cost_s``: ``TABLE_MS``) unless ``has_table``
    is False; a pass also copies in and out, and its loads into the slots (``reset_slots``;
    ``reset_slot`` is one of them) cost ``LOAD_MS``. Records each pass: (its start, its calls,
    the tick due next, when its loads ended)."""

    def __init__(self, clock: Clock, *, has_table: bool = True) -> None:
        super().__init__(clock, TICK_MS / 80.0, prompt=0.0, slots=16)
        self.has_table = has_table
        self.timed: list[tuple[float, int, float, float]] = []
        self.batched_loads: list[list[int]] = []

    def prepare_calls(self, requests: list[tuple[object, str]]) -> list[object]:
        assert self.engine is not None
        due = self.engine.next_tick_at()
        self.timed.append((self.clock.now, len(requests), due or 0.0, 0.0))
        self.passes.append((self.clock.now, len(requests)))
        for first in range(0, len(requests), 4):
            calls = len(requests[first : first + 4])
            self.clock.now += (TABLE_MS[calls] + COPY_MS[0] + COPY_MS[1] * calls) / 1000.0
        return [("own", text) for _, text in requests]

    def call_prompt_cost_s(self, calls: int, tokens: int) -> float | None:
        if not self.has_table:
            return None
        full, rest = divmod(calls, 4)
        return (full * TABLE_MS[4] + (TABLE_MS[rest] if rest else 0.0)) / 1000.0

    def reset_slot(self, index, persona_state, sampling, seed):  # type: ignore[no-untyped-def]
        self.reset_slots([(index, persona_state, sampling, seed)])

    def reset_slots(self, items):  # type: ignore[no-untyped-def]
        self.clock.now += (LOAD_MS[0] + LOAD_MS[1] * len(items)) / 1000.0
        self.batched_loads.append([index for index, *_ in items])
        for index, state, sampling, seed in items:
            PromptEcho.reset_slot(self, index, state, sampling, seed)
        if self.timed and self.timed[-1][3] == 0.0:
            start, calls, due, _ = self.timed[-1]
            self.timed[-1] = (start, calls, due, self.clock.now)


def spy_on_pacing(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[float, int, int, dict[int, float]]]:
    """Every paced decision: (room, waiting calls, calls taken, the predicted seconds of a
    pass of each size it considered)."""
    decisions: list[tuple[float, int, int, dict[int, float]]] = []
    predicted: dict[int, float] = {}
    fit, predict = BatchedEngine._calls_that_fit, BatchedEngine._predict_s

    def spy_predict(self, calls, longest, line, extra):  # type: ignore[no-untyped-def]
        predicted[calls] = predict(self, calls, longest, line, extra)
        return predicted[calls]

    def spy_fit(self, todo, room_s):  # type: ignore[no-untyped-def]
        predicted.clear()
        n = fit(self, todo, room_s)
        decisions.append((room_s, len(todo), n, dict(predicted)))
        return n

    monkeypatch.setattr(BatchedEngine, "_predict_s", spy_predict)
    monkeypatch.setattr(BatchedEngine, "_calls_that_fit", spy_fit)
    return decisions


def test_a_measured_cost_table_fills_passes_with_the_calls_that_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the room after a tick: 80 - 45 - 8 (margin) = 27 ms. A pass of one call with its copies
    # and load takes 18.4 ms: fitted to such passes alone (half fixed, half per call), a pass
    # of 2 is predicted at 27.6 and never tried, one call per gap (12.5/s) is fewer than the
    # 20/s joining. With the table, 9.0 ms beyond it: 2 calls 23.4 (fit), 3 calls 29.8 (not)
    decisions = spy_on_pacing(monkeypatch)
    clock = Clock()
    model = TimedPromptEcho(clock)
    engine, driver = storm(model, clock, rate=20.0, burst=4)
    stats = engine.stats()
    assert driver.refused == 0
    assert stats.late_ticks == 0 and stats.call_prompt_forced == 0
    sizes = [n for _, n in model.passes]
    assert max(sizes) == 2 and sizes.count(2) > len(sizes) / 2
    # none was predicted past its room, and each took as many as were predicted to fit
    assert any(len(p) > 1 for *_, p in decisions)
    for room, waiting, taken, predictions in decisions:
        if taken and taken in predictions:
            assert predictions[taken] <= room
        if taken < waiting and taken + 1 in predictions:
            assert predictions[taken + 1] > room
    # no pass (its loads included) ran into the next tick
    for start, _, due, loaded in model.timed:
        assert start < loaded <= due
    # the calls of a pass of several were loaded together, one ``reset_slots`` each
    assert any(len(rows) > 1 for rows in model.batched_loads)
    assert len(driver.waits) >= driver.n - 4
    assert max(driver.waits) < MAX_CALL_PROMPT_WAIT_S


def test_without_a_cost_table_the_pacing_is_fitted_to_the_passes_alone() -> None:
    # the same costs, no table (today's behaviour): the first pass (one call) waits for half a
    # tick of room, never there, so it is forced; the line fitted to one-call passes then
    # predicts a pass of 2 past the room, and the passes stay at one call (none late)
    clock = Clock()
    model = TimedPromptEcho(clock, has_table=False)
    engine, driver = storm(model, clock, rate=20.0, burst=4)
    stats = engine.stats()
    assert stats.late_ticks == 0 and stats.call_prompt_forced == 1
    assert {n for _, n in model.passes} == {1} and len(model.passes) > 20


def test_a_failed_load_of_several_is_retried_one_by_one() -> None:
    """``reset_slots`` raising: the calls are loaded one by one, and only the one whose own
    load fails is refused (its slot freed)."""
    from voicegate.engine import TickMode

    class Failing(PromptEcho):
        def reset_slots(self, items):  # type: ignore[no-untyped-def]
            raise RuntimeError("together")

        def reset_slot(self, index, persona_state, sampling, seed):  # type: ignore[no-untyped-def]
            if index == 1:
                raise RuntimeError("this one")
            super().reset_slot(index, persona_state, sampling, seed)

    clock = Clock()
    model = Failing(clock, tick=0.0, prompt=0.0)
    engine = BatchedEngine(model, mode=TickMode.MANUAL, clock=clock)
    engine.start()
    try:
        engine.load_persona(PERSONA)
        slots = [engine.join("p", First(clock), text_prompt=f"Caller {i}.") for i in range(3)]
        engine.tick()  # one pass of the 3, then their loads
        assert [n for _, n in model.passes] == [3]
        assert [s.is_active for s in slots] == [True, False, True]
        assert sorted(model.loaded) == [0, 2]
        assert engine.stats().tick_errors == 1
    finally:
        engine.close()
