"""Per-call prompts: the voice phases cached per persona, the text phases prefilled per call in
one batched pass, equal to a fresh prefill of the same voice and text (tiny model, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, VoicePrompt
from voicegate.engine.lm.prompt import SILENCE_FRAMES, text_phase_layout

GREEDY = SamplingParams(text_temperature=0.0, audio_temperature=0.0)


@pytest.fixture(scope="module")
def lm() -> LM:
    torch.set_num_threads(1)
    config = dataclasses.replace(LMConfig.tiny(text_card=300), context=96)
    return LM.random(config, "cpu", torch.float32, seed=3)


def _voice(frames: int, seed: int) -> VoicePrompt:
    g = torch.Generator().manual_seed(seed)
    return VoicePrompt.from_codes(torch.randint(0, 2048, (frames, 8), generator=g))


def test_text_phase_layout_is_the_tail_of_the_whole_layout(lm: LM) -> None:
    from voicegate.engine.lm.prompt import build_prompt_frames, delayed_layout

    voice = _voice(5, 1)
    whole = delayed_layout(lm.config, build_prompt_frames(lm.config, voice, [11, 12, 13]))
    tail = text_phase_layout(lm.config, 5, [11, 12, 13])
    assert torch.equal(whole[:, 5 + SILENCE_FRAMES :], tail)


def test_batched_text_phases_equal_fresh_prefills(lm: LM) -> None:
    """Two personas (voices of different lengths), three calls with texts of different
    lengths in one pass: every call's state equals a fresh prefill of its own tokens."""
    voices = [_voice(5, 1), _voice(8, 2)]
    personas = [lm.prefill(v, [20, 21]) for v in voices]
    calls = [(0, [30, 31, 32, 33, 34]), (1, [40]), (0, list(range(50, 70)))]
    got = lm.prefill_text_phases([personas[p] for p, _ in calls], [ids for _, ids in calls])
    for (p, ids), state in zip(calls, got, strict=True):
        fresh = lm.prefill(voices[p], ids)
        assert state.length == fresh.length
        assert torch.equal(state.tokens, fresh.tokens)
        torch.testing.assert_close(state.kv, fresh.kv, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)


def test_one_personas_calls_in_one_pass_equal_fresh_prefills(lm: LM) -> None:
    """Every row starts at the same position (keys/values written as slices, not scattered):
    texts of different lengths still equal fresh prefills."""
    voice = _voice(7, 5)
    persona = lm.prefill(voice, [20, 21])
    texts = [[30, 31, 32], list(range(40, 52)), [60]]
    got = lm.prefill_text_phases([persona] * len(texts), texts)
    for ids, state in zip(texts, got, strict=True):
        fresh = lm.prefill(voice, ids)
        assert state.length == fresh.length
        assert torch.equal(state.tokens, fresh.tokens)
        torch.testing.assert_close(state.kv, fresh.kv, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)


def test_a_call_prompt_loaded_into_a_slot_steps_like_a_fresh_prefill(lm: LM) -> None:
    voice = _voice(6, 4)
    persona = lm.prefill(voice, [20, 21, 22])
    ids = [60, 61, 62, 63]
    (mine,) = lm.prefill_text_phases([persona], [ids])
    fresh = lm.prefill(voice, ids)
    a, b = lm.new_state(2), lm.new_state(2)
    lm.load_slot(a, 1, mine, GREEDY, seed=5)
    lm.load_slot(b, 1, fresh, GREEDY, seed=5)
    codes = torch.zeros(2, 8, dtype=torch.long)
    for _ in range(6):
        out_a = lm.step(a, codes, [False, True], return_logits=True)
        out_b = lm.step(b, codes, [False, True], return_logits=True)
        assert out_a.text_logits is not None and out_b.text_logits is not None
        torch.testing.assert_close(out_a.text_logits[1], out_b.text_logits[1], atol=1e-4, rtol=1e-4)
        assert torch.equal(out_a.text_tokens[1], out_b.text_tokens[1])


def test_a_text_that_overflows_the_context_is_refused(lm: LM) -> None:
    persona = lm.prefill(_voice(5, 1), [20])
    with pytest.raises(ValueError, match="does not fit"):
        lm.prefill_text_phases([persona], [list(range(100))])


def test_fixed_shape_text_passes_equal_the_variable_pass(lm: LM) -> None:
    """The padded fixed-shape pass (what CUDA replays from a graph; eager here): five calls of
    two personas take two passes (4 rows, then 1), padded to their shapes' steps; each call's
    state equals the variable pass's and a fresh prefill's, also in a pass with a padding row
    and in passes over the junk earlier ones left in the workspace."""
    from voicegate.engine.lm.textpass import TextPhasePass

    text = TextPhasePass(lm, rows=(1, 2, 4), steps=(8, 16, 32), columns=64)
    voices = [_voice(5, 1), _voice(8, 2)]
    personas = [lm.prefill(v, [20, 21]) for v in voices]
    calls = [
        (0, [30, 31, 32, 33, 34]),
        (1, [40]),
        (0, list(range(50, 70))),
        (1, list(range(71, 80))),
        (1, [90, 91]),
    ]
    prompts, texts = [personas[p] for p, _ in calls], [ids for _, ids in calls]
    for _ in range(2):
        got = text.prefill(prompts, texts)
        variable = lm.prefill_text_phases(prompts, texts)
        for (p, ids), state, other in zip(calls, got, variable, strict=True):
            fresh = lm.prefill(voices[p], ids)
            assert state.length == other.length == fresh.length
            assert torch.equal(state.tokens, other.tokens)
            torch.testing.assert_close(state.kv, other.kv, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.hidden, other.hidden, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.kv, fresh.kv, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)
        # three calls: a pass of 4 rows, one of them padding
        for state, other in zip(text.prefill(prompts[:3], texts[:3]), got, strict=False):
            torch.testing.assert_close(state.kv, other.kv, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state.hidden, other.hidden, atol=1e-5, rtol=1e-5)
        assert text.eager_passes == 0
        calls.reverse()
        prompts.reverse()
        texts.reverse()


def test_a_call_that_fits_no_shape_takes_the_variable_pass(lm: LM) -> None:
    from voicegate.engine.lm.textpass import TextPhasePass

    text = TextPhasePass(lm, rows=(1, 2), steps=(8,), columns=64)
    voice = _voice(5, 1)
    persona = lm.prefill(voice, [20])
    ids = list(range(30, 45))  # 15 tokens + 6 silence frames: more than 8 steps
    (state,) = text.prefill([persona], [ids])
    assert text.eager_passes == 1
    torch.testing.assert_close(state.kv, lm.prefill(voice, ids).kv, atol=1e-5, rtol=1e-5)
    assert text.shape_for(1, 8) == (1, 8) and text.shape_for(2, 3) == (2, 8)
    assert text.shape_for(3, 3) is None and text.shape_for(1, 9) is None


def test_the_text_pass_memory_estimate_covers_its_buffers(lm: LM) -> None:
    # what the slot budget sets aside: at least the workspace and hidden states it allocates
    from voicegate.engine.lm.textpass import TextPhasePass, text_pass_bytes

    text = TextPhasePass(lm, rows=(1, 3), steps=(8, 16), columns=64)
    allocated = sum(t.numel() * t.element_size() for t in (text.workspace, text._hidden))  # noqa: SLF001
    estimate = text_pass_bytes(lm.config, lm.dtype, rows=(1, 3), steps=(8, 16), columns=64)
    assert allocated < estimate
