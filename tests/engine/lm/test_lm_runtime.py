"""Per-slot stepping: isolation, masks, resets, joins, the KV window and sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, LMState, VoicePrompt, masked_sdpa
from voicegate.engine.lm.sampling import gumbel_noise, sample_top_k, uniform_noise

SAMPLED = SamplingParams()  # the reference defaults: 0.7 / 25 text, 0.8 / 250 audio


@pytest.fixture(scope="module")
def lm() -> LM:
    return LM.random(dataclasses.replace(LMConfig.tiny(), context=32), "cpu", torch.float32, seed=5)


def _codes(lm: LM, seed: int, steps: int, slots: int) -> torch.Tensor:
    return torch.randint(
        0, lm.config.audio_card, (steps, slots, 8), generator=torch.Generator().manual_seed(seed)
    )


def _run(
    lm: LM, state: LMState, codes: torch.Tensor, active: np.ndarray
) -> list[tuple[torch.Tensor, ...]]:
    outs: list[tuple[torch.Tensor, ...]] = []
    for frame in codes:
        out = lm.step(state, frame, active)
        outs.append((out.text_tokens.clone(), out.agent_codes.clone(), out.is_valid.clone()))
    return outs


def _prompted_state(lm: LM, slots: int) -> LMState:
    prompt = lm.prefill(VoicePrompt.from_codes(torch.arange(24).view(3, 8)), [11, 12])
    state = lm.new_state(slots)
    for s in range(slots):
        lm.load_slot(state, s, prompt, SAMPLED, seed=100 + s)
    return state


def test_one_slots_input_never_changes_another_slots_output(lm: LM) -> None:
    codes = _codes(lm, 1, 40, 3)  # 40 > context 32: the ring wraps
    other = codes.clone()
    other[:, 1] = _codes(lm, 2, 40, 1)[:, 0]
    a = _run(lm, _prompted_state(lm, 3), codes, np.ones(3, bool))
    b = _run(lm, _prompted_state(lm, 3), other, np.ones(3, bool))
    for (ta, ca, _), (tb, cb, _) in zip(a, b, strict=True):
        for s in (0, 2):
            assert ta[s] == tb[s] and torch.equal(ca[s], cb[s])
    assert any(not torch.equal(ca[1], cb[1]) for (_, ca, _), (_, cb, _) in zip(a, b, strict=True))


def test_inactive_and_reset_slots_leave_the_others_bit_identical(lm: LM) -> None:
    codes = _codes(lm, 3, 12, 3)
    state = _prompted_state(lm, 3)
    baseline = _run(lm, state, codes, np.ones(3, bool))
    state = _prompted_state(lm, 3)
    active = np.ones(3, bool)
    outs = []
    for t, frame in enumerate(codes):
        if t == 4:
            active[1] = False
            frozen = (
                state.kv[:, :, 1, :, :-1].clone(),
                state.tokens[1].clone(),
                int(state.positions[1]),
            )
        if t == 8:
            assert torch.equal(state.kv[:, :, 1, :, :-1], frozen[0]) and torch.equal(
                state.tokens[1], frozen[1]
            )
            assert int(state.positions[1]) == frozen[2] == state.positions_host[1]
            lm.reset_slot(state, 1)
            active[1] = True
        out = lm.step(state, frame, active)
        if not active[1]:
            assert not bool(out.is_valid[1])
        outs.append((out.text_tokens.clone(), out.agent_codes.clone()))
    for (ta, ca, _), (tb, cb) in zip(baseline, outs, strict=True):
        for s in (0, 2):
            assert ta[s] == tb[s] and torch.equal(ca[s], cb[s])


def test_a_slot_replays_from_its_seed_whatever_the_batch(lm: LM) -> None:
    """Sampling noise is per slot: the same call in a batch of 1 or in row 2 of 3 is identical."""
    codes = _codes(lm, 4, 15, 3)
    alone = _run(lm, _prompted_state(lm, 3), codes, np.array([False, False, True]))
    crowd = _run(lm, _prompted_state(lm, 3), codes, np.ones(3, bool))
    for (ta, ca, va), (tb, cb, vb) in zip(alone, crowd, strict=True):
        assert ta[2] == tb[2] and torch.equal(ca[2], cb[2]) and bool(va[2]) and bool(vb[2])
        assert not va[0] and not va[1]


def test_empty_slot_output_is_valid_from_its_second_step_prompted_from_its_first(lm: LM) -> None:
    state = _prompted_state(lm, 2)
    lm.reset_slot(state, 1, SAMPLED, seed=1)
    codes = _codes(lm, 5, 3, 2)
    valid = [lm.step(state, frame, np.ones(2, bool)).is_valid.tolist() for frame in codes]
    assert valid == [[True, False], [True, True], [True, True]]
    prompt_length = 3 + 12 + 2  # voice frames, silences, text tokens
    assert state.positions.tolist() == [prompt_length + 3, 3]
    assert state.positions_host.tolist() == [prompt_length + 3, 3]


def test_kv_len_bucket_reads_only_filled_columns_and_matches_full_reads(lm: LM) -> None:
    codes = _codes(lm, 6, 8, 2)  # positions 0..7: 8 columns filled at most
    state_a, state_b = lm.new_state(2), lm.new_state(2)
    for st in (state_a, state_b):
        for s in range(2):
            lm.reset_slot(st, s, SamplingParams(0.0, 25, 0.0, 250))
    active = np.ones(2, bool)
    assert lm.kv_len_for(state_a, active) == min(lm.kv_block, lm.config.context)
    for frame in codes:
        a = lm.step(state_a, frame, active, kv_len=8, return_logits=True)
        b = lm.step(state_b, frame, active, kv_len=lm.config.context, return_logits=True)
        assert a.text_logits is not None and b.text_logits is not None
        torch.testing.assert_close(a.text_logits, b.text_logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.agent_codes, b.agent_codes)


def test_kv_len_for_rounds_up_to_the_block_and_caps_at_the_context() -> None:
    lm = LM.random(LMConfig.tiny(), "cpu", torch.float32)
    lm.kv_block = 16
    state = lm.new_state(3)
    state.positions_host[:] = [5, 40, 300]
    assert lm.kv_len_for(state, np.array([True, False, False])) == 16
    assert lm.kv_len_for(state, np.array([True, True, False])) == 48
    assert lm.kv_len_for(state, np.array([True, True, True])) == lm.config.context
    assert lm.kv_len_for(state, np.zeros(3, bool)) == 16


def test_kv_bytes_per_slot_of_the_7b_shapes() -> None:
    config = LMConfig.personaplex_7b()
    state = LMState.allocate(config, 1, torch.device("meta"), torch.bfloat16)
    assert state.kv_bytes_per_slot == 32 * 2 * 32 * 3001 * 128 * 2  # ~1.47 GiB, + 1 scratch column
    assert (
        state.kv_bytes_per_slot
        < LMState.bytes_per_slot(config, torch.bfloat16)
        < 1.01 * state.kv_bytes_per_slot
    )


def _noise(n: int, counter: int, k: int) -> torch.Tensor:
    return gumbel_noise(torch.arange(n), torch.full((n,), counter), 1, k)[:, 0]


def test_sampling_greedy_top1_and_within_top_k() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=gen)
    noise = _noise(4, 0, 16)
    greedy = sample_top_k(logits, torch.zeros(4), torch.full((4,), 5), noise, 16)
    assert torch.equal(greedy, logits.argmax(-1))
    top1 = sample_top_k(logits, torch.ones(4), torch.ones(4, dtype=torch.long), noise, 16)
    assert torch.equal(top1, logits.argmax(-1))
    allowed = logits.topk(3, -1).indices
    seen = set()
    for c in range(50):
        tok = sample_top_k(logits, torch.ones(4), torch.full((4,), 3), _noise(4, c, 16), 16)
        assert (allowed == tok[:, None]).any(-1).all()
        seen.update(tok.tolist())
    assert seen == set(allowed.flatten().tolist())  # every allowed candidate comes up


def test_sampling_follows_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    n = logits.shape[0]
    tok = sample_top_k(
        logits, torch.full((n,), 0.5), torch.zeros(n, dtype=torch.long), _noise(n, 0, 4), 4
    )
    freq = torch.bincount(tok, minlength=4).float() / n
    expected = torch.softmax(logits[0] / 0.5, -1)
    assert (freq - expected).abs().max() < 0.03
    top2 = sample_top_k(logits, torch.full((n,), 0.5), torch.full((n,), 2), _noise(n, 1, 4), 4)
    freq2 = torch.bincount(top2, minlength=4).float() / n
    assert (
        freq2[2:].sum() == 0
        and abs(freq2[0].item() - torch.softmax(torch.tensor([4.0, 2.0]), 0)[0].item()) < 0.03
    )


def test_uniform_noise_is_in_range_and_differs_per_seed_counter_stream() -> None:
    u = uniform_noise(torch.tensor([0, 1]), torch.tensor([0, 0]), 2, 1000)
    assert u.shape == (2, 2, 1000)
    assert bool(((u > 0) & (u < 1)).all()) and abs(u.mean().item() - 0.5) < 0.03
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[:, 0], u[:, 1])
    assert not torch.equal(u, uniform_noise(torch.tensor([0, 1]), torch.tensor([1, 1]), 2, 1000))
    # A slot's noise does not depend on the rest of the batch.
    alone = uniform_noise(torch.tensor([1]), torch.tensor([0]), 2, 1000)
    assert torch.equal(alone[0], u[1])


def test_kv_len_too_short_changes_the_result(lm: LM) -> None:
    """Guards the test above: the key columns read really are limited by ``kv_len``."""
    state_a, state_b = lm.new_state(1), lm.new_state(1)
    for st in (state_a, state_b):
        lm.reset_slot(st, 0, SamplingParams(0.0, 25, 0.0, 250))
    for frame in _codes(lm, 7, 6, 1):
        a = lm.step(state_a, frame, np.ones(1, bool), kv_len=2, return_logits=True)
        b = lm.step(state_b, frame, np.ones(1, bool), kv_len=8, return_logits=True)
    assert a.text_logits is not None and b.text_logits is not None
    assert not torch.allclose(a.text_logits, b.text_logits)


def test_bfloat16_prefill_load_and_step() -> None:
    lm = LM.random(LMConfig.tiny(), "cpu", torch.bfloat16, seed=3)
    prompt = lm.prefill(VoicePrompt.from_codes(torch.arange(16).view(2, 8)), [1, 2, 3])
    assert prompt.kv.dtype == torch.bfloat16
    state = lm.new_state(2)
    lm.load_slot(state, 0, prompt, SAMPLED, seed=1)
    lm.reset_slot(state, 1)
    out = lm.step(state, _codes(lm, 8, 1, 2)[0], np.ones(2, bool))
    assert out.is_valid.tolist() == [True, False]
    assert 0 <= int(out.text_tokens[0]) < lm.config.text_card
    assert bool(((out.agent_codes[0] >= 0) & (out.agent_codes[0] < lm.config.audio_card)).all())


def test_a_reused_slot_forgets_its_previous_call(lm: LM) -> None:
    """Loading a prompt into a slot that served a long call equals loading it into a fresh one."""
    prompt = lm.prefill(VoicePrompt.from_codes(torch.arange(24).view(3, 8)), [11, 12])
    used, fresh = lm.new_state(2), lm.new_state(2)
    for st in (used, fresh):
        for s in range(2):
            lm.load_slot(st, s, prompt, SAMPLED, seed=s)
    _run(lm, used, _codes(lm, 9, 50, 2), np.ones(2, bool))  # slot 0 wraps its ring
    lm.load_slot(used, 0, prompt, SAMPLED, seed=42)
    lm.load_slot(fresh, 0, prompt, SAMPLED, seed=42)
    codes = _codes(lm, 10, 10, 2)
    a = _run(lm, used, codes, np.array([True, False]))
    b = _run(lm, fresh, codes, np.array([True, False]))
    for (ta, ca, va), (tb, cb, vb) in zip(a, b, strict=True):
        assert ta[0] == tb[0] and torch.equal(ca[0], cb[0]) and bool(va[0]) and bool(vb[0])


def test_custom_attention_and_kv_dtype_seams() -> None:
    """``LM.attention`` gets each slot's filled length; ``kv_dtype`` stores the cache apart."""
    lm = LM.random(LMConfig.tiny(), "cpu", torch.float32, seed=3)
    prompt = lm.prefill(VoicePrompt.from_codes(torch.arange(16).view(2, 8)), [1, 2, 3])
    greedy = SamplingParams(0.0, 25, 0.0, 250)
    seen: list[list[int]] = []

    def attention(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, filled: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        seen.append(filled.tolist())
        return masked_sdpa(q, k, v, filled, mask)

    outs = []
    for attend, kv_dtype in ((None, None), (attention, None), (None, torch.bfloat16)):
        lm.attention = attend
        state = lm.new_state(2, kv_dtype=kv_dtype)
        lm.load_slot(state, 0, prompt, greedy)
        lm.reset_slot(state, 1, greedy)
        frame = torch.randint(
            0, lm.config.audio_card, (2, 8), generator=torch.Generator().manual_seed(0)
        )
        outs.append(lm.step(state, frame, np.ones(2, bool), return_logits=True))
    lm.attention = None
    assert seen == [[prompt.length + 1, 1]] * lm.config.num_layers
    assert (
        outs[0].text_logits is not None
        and outs[1].text_logits is not None
        and outs[2].text_logits is not None
    )
    assert torch.equal(outs[0].text_logits, outs[1].text_logits)
    assert state.kv.dtype == torch.bfloat16
    err = (outs[2].text_logits - outs[0].text_logits).abs().max() / outs[0].text_logits.abs().max()
    assert 0 < err.item() < 1e-2


def _slot_state(state: LMState, slot: int) -> dict[str, torch.Tensor]:
    """Everything ``load_slot`` writes of a slot (and the first tokens it samples, in
    ``tokens``)."""
    out = {
        name: getattr(state, name)[slot]
        for name in (
            "tokens",
            "positions",
            "counters",
            "seeds",
            "text_temperature",
            "text_top_k",
            "audio_temperature",
            "audio_top_k",
        )
    }
    out["kv"] = state.kv[:, :, slot]
    if state.kv_scales is not None:
        out["kv_scales"] = state.kv_scales[:, :, slot]
    out["positions_host"] = torch.tensor(int(state.positions_host[slot]))
    return out


@pytest.mark.parametrize("kv_dtype", [None, torch.float8_e4m3fn])
def test_loading_slots_together_equals_loading_them_one_by_one(
    lm: LM, kv_dtype: torch.dtype | None
) -> None:
    """``load_slots`` of 3 calls (prompts of different lengths, own settings and seeds) gives
    each row bit for bit what ``load_slot`` gives it, first sampled tokens included; the row
    of a call in progress is untouched."""
    prompts = [
        lm.prefill(VoicePrompt.from_codes(torch.arange(8 * n).view(n, 8)), ids)
        for n, ids in ((3, [11, 12]), (2, [5, 6, 7, 8, 10]), (4, [9, 10]))
    ]
    assert len({p.length for p in prompts}) == 3
    settings = [SAMPLED, SamplingParams(0.0, 5, 0.0, 7), SamplingParams(1.3, 3, 0.5, 40)]
    loads = [
        (slot, prompt, sampling, 100 + slot)
        for slot, prompt, sampling in zip((3, 0, 2), prompts, settings, strict=True)
    ]
    apart, together = lm.new_state(5, kv_dtype), lm.new_state(5, kv_dtype)
    for st in (apart, together):  # row 1: a call in progress
        lm.load_slot(st, 1, prompts[0], SAMPLED, seed=7)
        _run(lm, st, _codes(lm, 11, 3, 5), np.array([False, True, False, False, False]))
    before = {k: v.clone() for k, v in _slot_state(together, 1).items()}
    for slot, prompt, sampling, seed in loads:
        lm.load_slot(apart, slot, prompt, sampling, seed)
    lm.load_slots(together, loads)
    for slot in range(5):
        a, b = _slot_state(apart, slot), _slot_state(together, slot)
        for name in a:
            assert torch.equal(a[name], b[name]), (slot, name)
    for name, value in _slot_state(together, 1).items():
        assert torch.equal(value, before[name]), name
    for slot, prompt, _, _ in loads:  # the first tokens were sampled: not 'ungenerated'
        assert int(together.tokens[slot, 0, prompt.length % lm.config.token_cache_size]) >= 0
    with pytest.raises(ValueError, match="repeat"):
        lm.load_slots(together, loads[:1] * 2)
