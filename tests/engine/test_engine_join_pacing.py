"""Per-call prompts in serving mode (an injected clock, a model whose costs are set): they are
computed between ticks when they fit before the next one, so no tick is late because of
them; one that does not fit waits for room, at most ``MAX_CALL_PROMPT_WAIT_S``."""

from __future__ import annotations

import threading

from voicegate.engine import EchoModel, PersonaPrompt, TickOutput
from voicegate.engine.runtime import MAX_CALL_PROMPT_WAIT_S, TICK_S, BatchedEngine

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

    def __init__(self, clock: Clock, tick: float, prompt: float) -> None:
        super().__init__(4)
        self.clock, self.tick_cost, self.prompt_cost = clock, tick, prompt
        self.loaded: dict[int, object] = {}
        self.passes: list[tuple[float, int]] = []  # (clock, calls in the pass)

    def prepare_calls(self, requests: list[tuple[object, str]]) -> list[object]:
        self.passes.append((self.clock.now, len(requests)))
        self.clock.now += self.prompt_cost * TICK_S
        return [("own", text) for _, text in requests]

    def reset_slot(self, index, persona_state, sampling, seed):  # type: ignore[no-untyped-def]
        self.loaded[index] = persona_state
        super().reset_slot(index, persona_state, sampling, seed)

    def step(self, pcm_in, active, n_rows):  # type: ignore[no-untyped-def]
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
    # the first pass had no measurement yet; after it, each call waited its longest (not
    # forever), then its prompt ran and it started
    assert len(model.passes) == 3
    waits = [at - s.joined for (at, _), s in zip(model.passes, sinks, strict=True)]  # type: ignore[attr-defined]
    assert waits[0] < TICK_S
    assert all(MAX_CALL_PROMPT_WAIT_S <= w < MAX_CALL_PROMPT_WAIT_S + 2 * TICK_S for w in waits[1:])
    assert all(s.at is not None for s in sinks)


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
