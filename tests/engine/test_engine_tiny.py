"""The tiny backend under the real BatchedEngine: several calls, joins/leaves, slot isolation."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import BANK, SUPPORT, Collect, noise_frames, tiny_engine

from voicegate.engine import FRAME_SAMPLES, TickMode
from voicegate.errors import NoFreeSlot, PersonaError, UnknownPersona


def run_two_calls(other_seed: int, *, churn: bool) -> tuple[Collect, Collect]:
    """Slot 0: a fixed call. Slot 1: a call whose input varies; with ``churn`` it leaves at
    tick 4 and a third call joins in its place (a reset of that row mid-run)."""
    engine = tiny_engine(slots=3)
    engine.load_persona(BANK)
    engine.load_persona(SUPPORT)
    mine, other = Collect(), Collect()
    a = engine.join("bank", mine, seed=11)
    b = engine.join("support", other, seed=22)
    frames_a = noise_frames(1, 10)
    frames_b = noise_frames(other_seed, 10, level=0.3)
    for t in range(10):
        if churn and t == 4:
            b.leave()
            b = engine.join("bank", Collect(), seed=33)
        a.push(frames_a[t])
        b.push(frames_b[t])
        engine.tick()
    engine.close()
    return mine, other


def test_one_calls_input_never_changes_another_calls_output() -> None:
    base_mine, base_other = run_two_calls(other_seed=2, churn=False)
    mine, other = run_two_calls(other_seed=3, churn=False)
    churned, _ = run_two_calls(other_seed=4, churn=True)
    assert len(base_mine.pcm) == 10
    # the other slot's input does change the other slot's output (the check has teeth) ...
    assert not np.array_equal(base_other.audio(), other.audio())
    # ... and never this slot's, bit for bit, also when the other row is reset mid-run
    for run in (mine, churned):
        np.testing.assert_array_equal(run.audio(), base_mine.audio())
        assert run.tokens == base_mine.tokens
        assert run.texts == base_mine.texts


def test_same_seed_same_output_and_text_is_detokenised() -> None:
    first, _ = run_two_calls(other_seed=2, churn=False)
    second, _ = run_two_calls(other_seed=2, churn=False)
    np.testing.assert_array_equal(first.audio(), second.audio())
    assert first.indices == list(range(10))
    audio = first.audio()
    assert audio.shape == (10 * FRAME_SAMPLES,) and np.isfinite(audio).all()
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.0
    assert all(t == "" for tok, t in zip(first.tokens, first.texts, strict=True) if tok in (0, 3))


def test_several_calls_join_and_leave_mid_run_offline() -> None:
    engine = tiny_engine(slots=3, mode=TickMode.OFFLINE)
    try:
        engine.load_persona(BANK)
        sinks = [Collect(want=6), Collect(want=3), Collect(want=6)]
        first = engine.join("bank", sinks[0])
        second = engine.join("bank", sinks[1])
        frames = noise_frames(5, 6)
        for t in range(3):
            first.push(frames[t])
            second.push(frames[t])
        assert sinks[1].done.wait(60)
        second.leave()
        third = engine.join("bank", sinks[2])
        assert third.index == second.index
        for t in range(3, 6):
            first.push(frames[t])
        for t in range(6):
            third.push(frames[t])
        assert sinks[0].done.wait(60)
        first.leave()  # offline ticks wait for every active call: the third now runs alone
        assert sinks[2].done.wait(60)
        assert sinks[0].indices == list(range(6))
        assert sinks[1].indices == [0, 1, 2]
        assert sinks[2].indices == list(range(6))
        assert all(np.isfinite(p).all() for s in sinks for p in s.pcm)
        stats = engine.stats()
        assert stats.underruns == 0 and stats.active_slots == 1 and stats.ticks == 9
    finally:
        engine.close()


def test_full_engine_and_unknown_persona() -> None:
    engine = tiny_engine(slots=2)
    engine.load_persona(BANK)
    with pytest.raises(UnknownPersona):
        engine.join("nobody", Collect())
    engine.join("bank", Collect())
    engine.join("bank", Collect())
    with pytest.raises(NoFreeSlot):
        engine.join("bank", Collect())
    engine.close()


def test_prompt_too_long_for_the_context_is_a_persona_error() -> None:
    engine = tiny_engine(slots=1)
    from voicegate.engine import PersonaPrompt

    with pytest.raises(PersonaError, match="does not fit"):
        engine.load_persona(PersonaPrompt("long", "word " * 2000, "NATF0"))
    engine.close()


def test_count_tokens_matches_the_tokenizer() -> None:
    engine = tiny_engine(slots=1)
    from voicegate.engine.tokenizer import load_text_tokenizer

    tok = load_text_tokenizer(None)
    assert engine.count_tokens("Hello there") == len(tok.encode("<system> Hello there <system>"))
    engine.close()
