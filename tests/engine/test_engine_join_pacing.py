"""Per-call prompts in serving mode (an injected clock, a model whose costs are set): they are
computed between ticks when they fit before the next one, so no tick is late because of
them; one that does not fit waits for room, at most ``MAX_CALL_PROMPT_WAIT_S``. A pass takes
as many calls as fit (its cost grows with its calls), and one slow pass does not hold back the
joins after it."""

from __future__ import annotations

import threading

from voicegate.engine import EchoModel, PersonaPrompt, TickOutput
from voicegate.engine.runtime import MAX_CALL_PROMPT_WAIT_S, TICK_S, BatchedEngine
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
