"""The echo backend under the real BatchedEngine: one tick of delay, slots, counters."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from voicegate.engine import (
    FRAME_SAMPLES,
    BatchedEngine,
    EchoModel,
    PersonaPrompt,
    TickMode,
    TickOutput,
    create_engine,
)
from voicegate.errors import InvalidStateError, NoFreeSlot, UnknownPersona


class Collect:
    def __init__(self, want: int = 0) -> None:
        self.frames: list[np.ndarray] = []
        self.texts: list[str] = []
        self.indices: list[int] = []
        self.want = want
        self.done = threading.Event()

    def on_tick(self, out: TickOutput) -> None:
        self.frames.append(out.pcm.copy())
        self.texts.append(out.text)
        self.indices.append(out.frame_index)
        if self.want and len(self.frames) >= self.want:
            self.done.set()


def frame(value: float) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.float32)


def manual_engine(slots: int = 3, queue: int = 4) -> BatchedEngine:
    engine = BatchedEngine(EchoModel(slots), mode=TickMode.MANUAL, input_queue_frames=queue)
    engine.start()
    engine.load_persona(PersonaPrompt("p", "", "NATF0"))
    return engine


def test_echo_returns_each_frame_one_tick_later_offline() -> None:
    engine = create_engine(types.SimpleNamespace(engine="echo", max_calls=2), offline=True)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "", "NATF0"))
        sink = Collect(want=5)
        slot = engine.join("p", sink)
        for k in range(5):
            slot.push(frame(0.1 * (k + 1)))
        assert sink.done.wait(10)
        assert sink.indices == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(sink.frames[0], frame(0.0))
        for k in range(1, 5):
            np.testing.assert_array_equal(sink.frames[k], frame(0.1 * k))
        assert sink.texts == [""] * 5
        assert slot.stats.frames == 5 and slot.stats.underruns == 0
    finally:
        engine.close()


def test_slots_are_independent_and_rejoin_starts_clean() -> None:
    engine = manual_engine()
    a, b = Collect(), Collect()
    slot_a = engine.join("p", a)
    slot_b = engine.join("p", b)
    slot_a.push(frame(1.0))
    slot_b.push(frame(2.0))
    engine.tick()
    slot_a.push(frame(3.0))
    slot_b.push(frame(4.0))
    engine.tick()
    assert [f[0] for f in a.frames] == [0.0, 1.0]
    assert [f[0] for f in b.frames] == [0.0, 2.0]
    slot_b.leave()
    slot_b.leave()  # idempotent
    slot_b.push(frame(9.0))  # inert after leave
    c = Collect()
    slot_c = engine.join("p", c)
    assert slot_c.index == slot_b.index
    slot_a.push(frame(5.0))
    slot_c.push(frame(6.0))
    engine.tick()
    # the new call does not hear the previous call's last frame
    assert c.frames[0][0] == 0.0 and c.indices == [0]
    assert [f[0] for f in a.frames] == [0.0, 1.0, 3.0]
    assert len(b.frames) == 2


def test_underrun_and_overrun_are_counted() -> None:
    engine = manual_engine(queue=2)
    sink = Collect()
    slot = engine.join("p", sink)
    engine.tick()  # nothing queued
    assert slot.stats.underruns == 1
    for k in range(3):  # one more than the ring holds: the oldest (1.0) is dropped
        slot.push(frame(float(k + 1)))
    assert slot.stats.overruns == 1
    engine.tick()
    engine.tick()
    engine.tick()
    assert [f[0] for f in sink.frames] == [0.0, 0.0, 2.0, 3.0]
    stats = engine.stats()
    assert (stats.underruns, stats.overruns, stats.ticks) == (2, 1, 4)
    slot.leave()
    assert engine.stats().underruns == 2  # counters survive the call


def test_no_free_slot_unknown_persona_and_not_started() -> None:
    engine = BatchedEngine(EchoModel(2), mode=TickMode.MANUAL)
    with pytest.raises(InvalidStateError):
        engine.join("p", Collect())
    engine.start()
    engine.load_persona(PersonaPrompt("p", "", "NATF0"))
    with pytest.raises(UnknownPersona):
        engine.join("nobody", Collect())
    first = engine.join("p", Collect())
    engine.join("p", Collect())
    with pytest.raises(NoFreeSlot):
        engine.join("p", Collect())
    first.leave()
    assert engine.join("p", Collect()).index == first.index


def test_max_calls_caps_slots() -> None:
    engine = BatchedEngine(EchoModel(8), mode=TickMode.MANUAL, max_calls=1)
    assert engine.max_slots == 1


def test_sink_error_does_not_stop_other_slots() -> None:
    class Broken:
        def on_tick(self, out: TickOutput) -> None:
            raise RuntimeError("boom")

    engine = manual_engine()
    engine.join("p", Broken())
    good = Collect()
    slot = engine.join("p", good)
    slot.push(frame(1.0))
    engine.tick()
    assert len(good.frames) == 1
    assert engine.stats().sink_errors == 1


def test_wrong_frame_shape_is_refused() -> None:
    engine = manual_engine()
    slot = engine.join("p", Collect())
    with pytest.raises(ValueError):
        slot.push(np.zeros(160, dtype=np.float32))


def test_serving_mode_ticks_on_its_own() -> None:
    engine = create_engine(types.SimpleNamespace(engine="echo", max_calls=1))
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "", "NATF0"))
        sink = Collect(want=2)
        engine.join("p", sink)
        assert sink.done.wait(10)
        assert sink.indices[:2] == [0, 1]
    finally:
        engine.close()


class CountingModel(EchoModel):
    def __init__(self) -> None:
        super().__init__(2)
        self.prepared: list[str] = []

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        self.prepared.append(prompt.key)
        return prompt.text_prompt


def test_prompt_states_are_computed_once_per_voice_and_text() -> None:
    model = CountingModel()
    engine = BatchedEngine(model, mode=TickMode.MANUAL)
    engine.start()
    engine.load_persona(PersonaPrompt("a", "hello", "NATF0"))
    engine.load_persona(PersonaPrompt("b", "hello", "NATF0"))  # same voice and text: cached
    engine.load_persona(PersonaPrompt("a", "hello", "NATF0"))  # reload, unchanged: cached
    assert model.prepared == ["a"]
    engine.load_persona(PersonaPrompt("a", "edited", "NATF0"))  # an edit is recomputed
    assert model.prepared == ["a", "a"]
    engine.unload_persona("b")
    assert not engine.has_persona("b") and engine.has_persona("a")
    with pytest.raises(UnknownPersona):
        engine.join("b", Collect())
    engine.load_persona(PersonaPrompt("b", "hello", "NATF0"))  # its state was dropped
    assert model.prepared == ["a", "a", "b"]


class FailingJoin(EchoModel):
    def reset_slot(self, index: int, persona_state: object, sampling: object, seed: int) -> None:
        if persona_state == "broken":
            raise RuntimeError("cannot load this prompt")
        super().reset_slot(index, persona_state, sampling, seed)  # type: ignore[arg-type]

    def prepare_persona(self, prompt: PersonaPrompt) -> object:
        return prompt.text_prompt


def test_a_failing_join_frees_its_slot_and_others_carry_on() -> None:
    engine = BatchedEngine(FailingJoin(2), mode=TickMode.MANUAL)
    assert engine.health() is not None  # not started
    engine.start()
    assert engine.health() is None
    engine.load_persona(PersonaPrompt("good", "fine", "NATF0"))
    engine.load_persona(PersonaPrompt("bad", "broken", "NATF0"))
    sink = Collect()
    good = engine.join("good", sink)
    bad = engine.join("bad", Collect())
    good.push(frame(1.0))
    engine.tick()
    assert not bad.is_active and good.is_active
    assert len(sink.frames) == 1 and engine.stats().tick_errors == 1
    assert engine.join("good", Collect()).index == bad.index  # the slot is free again
    engine.close()
    assert engine.health() is not None
