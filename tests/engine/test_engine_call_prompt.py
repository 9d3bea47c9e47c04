"""Per-call prompts through the engine (tiny model, CPU): a join with the call's own text gets
exactly a fresh prefill of that text on the persona's voice, its neighbour keeps the persona's
prompt, a failure falls back to the persona's prompt, and re-anchoring rebuilds the call's own
prompt, not the persona's."""

from __future__ import annotations

import numpy as np
import torch

from tests.engine.engine_helpers import BANK, Collect, noise_frames
from tests.engine.test_engine_reanchor import CONTEXT, KEEP, MARGIN, tiny_model
from voicegate.engine import BatchedEngine, TickMode
from voicegate.engine.lm import PromptState, system_prompt_text
from voicegate.engine.torch_model import TorchTickModel

ALICE = BANK.text_prompt + " The caller is Alice, a gold customer."
BOB = BANK.text_prompt + " The caller is Bob."


def fresh(model: TorchTickModel, text: str) -> PromptState:
    """An offline prefill of the persona's voice with ``text``: what the slot must hold."""
    voice = model.voices.resolve(BANK)
    return model.lm.prefill(voice, model.tokenizer.encode(system_prompt_text(text)))


def slot_kv(model: TorchTickModel, slot: int, n: int) -> torch.Tensor:
    return model.state.kv[:, :, slot, :, :n]


def test_a_per_call_join_equals_a_fresh_prefill_and_leaves_its_neighbour_alone() -> None:
    model = tiny_model(0, slots=3)
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=7)
    engine.start()
    try:
        engine.load_persona(BANK)
        sinks = [Collect() for _ in range(3)]
        slots = [
            engine.join(BANK.key, sinks[0], seed=1, text_prompt=ALICE),
            engine.join(BANK.key, sinks[1], seed=2),  # the persona's own prompt
            engine.join(BANK.key, sinks[2], seed=3, text_prompt=BOB),
        ]
        for slot, frame in zip(slots, noise_frames(1, 3), strict=True):
            slot.push(frame)
        assert engine.tick()
        assert [len(s.pcm) for s in sinks] == [1, 1, 1]  # all three joined at the first tick
        persona, alice, bob = fresh(model, BANK.text_prompt), fresh(model, ALICE), fresh(model, BOB)
        assert alice.length != persona.length and bob.length != alice.length
        for index, want in ((0, alice), (1, persona), (2, bob)):
            got = slot_kv(model, index, want.length)
            torch.testing.assert_close(got, want.kv, atol=1e-5, rtol=1e-5)
        # the voice phases are shared; the text phases are each call's own
        shared = persona.voice_positions
        torch.testing.assert_close(slot_kv(model, 0, shared), slot_kv(model, 1, shared))
        assert not torch.allclose(slot_kv(model, 0, alice.length), slot_kv(model, 2, alice.length))
        stats = engine.stats()
        assert stats.call_prompts == 2 and stats.call_prompt_errors == 0
        assert stats.join_ms_p99 > 0.0
    finally:
        engine.close()


def test_a_per_call_prompt_steps_as_a_persona_with_that_prompt() -> None:
    """The same call (seed, audio) with its own text, and with a persona whose prompt is that
    text: the same text tokens out (greedy text, so float noise cannot flip a sample)."""
    from dataclasses import replace

    from voicegate.engine.base import SamplingParams

    greedy = SamplingParams(text_temperature=0.0, audio_temperature=0.0)
    bank = replace(BANK, sampling=greedy)
    alice_persona = replace(BANK, key="alice", text_prompt=ALICE, sampling=greedy)
    frames = noise_frames(4, 12)

    def run(persona_key: str, text: str | None) -> list[int]:
        engine = BatchedEngine(tiny_model(0, slots=1), mode=TickMode.MANUAL, seed=7)
        engine.start()
        try:
            engine.load_persona(bank)
            engine.load_persona(alice_persona)
            sink = Collect()
            slot = engine.join(persona_key, sink, seed=5, text_prompt=text)
            for frame in frames:
                slot.push(frame)
                engine.tick()
            return sink.tokens
        finally:
            engine.close()

    assert run(BANK.key, ALICE) == run("alice", None)


def test_a_prompt_too_long_starts_on_the_persona_prompt_and_spares_its_batch() -> None:
    model = tiny_model(0, slots=2)
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=7)
    engine.start()
    try:
        engine.load_persona(BANK)
        too_long = BANK.text_prompt + " word" * CONTEXT  # does not fit the window
        slots = [
            engine.join(BANK.key, Collect(), seed=1, text_prompt=too_long),
            engine.join(BANK.key, Collect(), seed=2, text_prompt=ALICE),  # same pass
        ]
        for slot, frame in zip(slots, noise_frames(2, 2), strict=True):
            slot.push(frame)
        assert engine.tick() and all(s.is_active for s in slots)
        persona, alice = fresh(model, BANK.text_prompt), fresh(model, ALICE)
        torch.testing.assert_close(slot_kv(model, 0, persona.length), persona.kv)
        torch.testing.assert_close(slot_kv(model, 1, alice.length), alice.kv, atol=1e-5, rtol=1e-5)
        assert engine.stats().call_prompt_errors == 1
    finally:
        engine.close()


def test_reanchoring_rebuilds_the_calls_own_prompt() -> None:
    model = tiny_model(KEEP, slots=1)
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=7)
    engine.start()
    try:
        engine.load_persona(BANK)
        sink = Collect()
        slot = engine.join(BANK.key, sink, seed=3, text_prompt=ALICE)
        alice = fresh(model, ALICE)
        for frame in noise_frames(1, CONTEXT):
            slot.push(frame)
            assert engine.tick()
            if engine.stats().reanchors:
                break
        assert engine.stats().reanchors == 1
        assert int(model.state.positions_host[0]) < CONTEXT - MARGIN
        # after the rebuild the window starts with the call's own prompt again
        torch.testing.assert_close(slot_kv(model, 0, alice.length), alice.kv, atol=1e-5, rtol=1e-5)
    finally:
        engine.close()


def test_rebuilding_a_calls_own_prompt_takes_a_window_of_its_own() -> None:
    # the rebuild is a prefill pass like a chunk: a window after a tick does one or the other
    model = tiny_model(KEEP, slots=1)
    anchor = model._reanchor  # noqa: SLF001
    assert anchor is not None
    work: list[str] = []
    windows: list[list[str]] = []
    prefill, advance, between = model.lm.prefill_text_phases, anchor.advance, model.between_ticks

    def counted_prefill(*args, **kwargs):  # type: ignore[no-untyped-def]
        work.append("prompt")
        return prefill(*args, **kwargs)

    def counted_advance(*args, **kwargs):  # type: ignore[no-untyped-def]
        work.append("chunk")
        return advance(*args, **kwargs)

    def window(active):  # type: ignore[no-untyped-def]
        work.clear()
        done = between(active)
        windows.append(list(work))
        return done

    model.lm.prefill_text_phases = counted_prefill  # type: ignore[method-assign]
    anchor.advance = counted_advance  # type: ignore[method-assign]
    model.between_ticks = window  # type: ignore[method-assign]
    engine = BatchedEngine(model, mode=TickMode.MANUAL, seed=7)
    engine.start()
    try:
        engine.load_persona(BANK)
        slot = engine.join(BANK.key, Collect(), seed=3, text_prompt=ALICE)
        for frame in noise_frames(1, CONTEXT):
            slot.push(frame)
            assert engine.tick()
            if engine.stats().reanchors:
                break
        assert engine.stats().reanchors == 1
        rebuilt = [w for w in windows if "prompt" in w]
        assert rebuilt == [["prompt"]]
        assert any("chunk" in w for w in windows)
    finally:
        engine.close()


def test_the_pacing_unit_is_the_padded_shape_of_the_passes() -> None:
    from voicegate.engine.lm.prompt import SILENCE_FRAMES

    model = tiny_model(0, slots=1)
    text = model.text_pass
    most, top = text.rows[-1], text.steps[-1]
    steps = text.steps[0]
    # a call of steps[0] - 6 tokens fills the smallest shape; 1 call pads to rows[0] rows
    assert model.call_prompt_size(1, steps - SILENCE_FRAMES) == text.rows[0] * steps
    assert model.call_prompt_size(most, steps - SILENCE_FRAMES + 1) == most * text.steps[1]
    # more calls than rows: several passes
    assert model.call_prompt_size(most + 1, 1) == (most + text.rows[0]) * steps
    # too long for any shape: the eager pass, padded to the longest only
    assert model.call_prompt_size(2, top) == 2 * (top + SILENCE_FRAMES)


def test_a_pass_of_calls_loaded_together_steps_as_if_loaded_one_by_one() -> None:
    """``reset_slots`` of 3 calls (own prompts and the persona's) into rows that served calls
    (their LM, Mimi and text streams start over) on the tick model: the same audio and text
    out of every row as ``reset_slot`` of each, and the call in row 1 carries on alike."""
    from voicegate.engine.base import SamplingParams

    frames = noise_frames(5, 4 * 6)

    def run(together: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        model = tiny_model(0, slots=4)
        model.warmup()
        persona = model.prepare_persona(BANK)
        states = model.prepare_calls([(persona, ALICE), (persona, BOB)])
        sampled = SamplingParams()
        for i in range(4):  # calls in progress; rows 0, 2 and 3 are then taken over
            model.reset_slot(i, persona, sampled, 10 + i)
        active = np.ones(4, dtype=bool)
        outs = []
        for t in range(2):
            pcm, tokens = model.step(np.stack(frames[4 * t : 4 * t + 4]), active, 4)
            outs.append((pcm.copy(), tokens.copy()))
        items = [(3, states[0], sampled, 1), (0, persona, sampled, 2), (2, states[1], sampled, 3)]
        if together:
            model.reset_slots(items)
        else:
            for item in items:
                model.reset_slot(*item)
        active[:] = True
        for t in range(2, 6):
            pcm, tokens = model.step(np.stack(frames[4 * t : 4 * t + 4]), active, 4)
            outs.append((pcm.copy(), tokens.copy()))
        return outs

    apart, together = run(False), run(True)
    for (pa, ta), (pb, tb) in zip(apart, together, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(ta, tb)


def test_the_cost_table_sums_the_timed_shapes_of_a_pass() -> None:
    from voicegate.engine.lm.prompt import SILENCE_FRAMES

    model = tiny_model(0, slots=1)
    text = model.text_pass
    assert model.call_prompt_cost_s(1, 10) is None  # not timed (CPU: no captured passes)
    text.pass_ms.update({(r, s): 10.0 * r + s / 100 for r in text.rows for s in text.steps})
    most, steps = text.rows[-1], text.steps[0]
    tokens = steps - SILENCE_FRAMES
    assert model.call_prompt_cost_s(1, tokens) == (10.0 * text.rows[0] + steps / 100) / 1000
    # more calls than rows: one pass of every row, then the rest
    want = 10.0 * most + steps / 100 + 10.0 * text.rows[0] + steps / 100
    assert abs(model.call_prompt_cost_s(most + 1, tokens) - want / 1000) < 1e-12  # type: ignore[operator]
    assert model.call_prompt_cost_s(1, text.steps[-1]) is None  # fits no shape: not in the table
