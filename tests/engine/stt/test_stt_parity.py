"""Parity of our STT step with moshi 0.2.13's ``LMGen`` on an STT model (float32, CPU).

Both load the same random checkpoint in the release layout (tiny dims, the real tensor names,
32 codebooks, 4 end-of-turn heads). moshi steps it as Kyutai's runners do (greedy,
``step_with_extra_heads``); ours steps it batched. Text logits and head probabilities agree to
1e-4 (relative to the largest value) at every step of a stream three times the context, and
the text tokens are equal; a slot that joins late equals a fresh reference run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from voicegate.engine.stt import Stt, SttConfig, write_random_stt

STEPS = 50  # > 3 x the parity context (16): the KV ring wraps


def _rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3e} > {rel} x {scale:.3e}"


def _moshi_run(
    config: SttConfig, path: Path, codes: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """moshi's LMGen over codes [B, n_q, T]: per step text logits, text tokens, head probs."""
    from moshi.models.lm import LMGen
    from moshi.utils.compile import no_compile
    from moshi_ref import moshi_stt

    model = moshi_stt(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    logits: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    heads: list[torch.Tensor] = []
    gen = LMGen(
        model, temp=0.0, temp_text=0.0, on_text_logits_hook=lambda t: logits.append(t[:, 0, 0])
    )
    with no_compile(), torch.no_grad(), gen.streaming(codes.shape[0]):
        for t in range(codes.shape[-1]):
            result = gen.step_with_extra_heads(codes[:, :, t : t + 1])
            assert result is not None  # max delay 0: every step has an output
            out, extra = result
            tokens.append(out[:, 0, 0].clone())
            heads.append(torch.stack([h[:, 0] for h in extra], 1))
    return logits, tokens, heads


def _codes(config: SttConfig, batch: int, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.audio_card, (batch, config.n_q, steps), generator=gen)


def test_step_matches_moshi_lmgen_over_a_long_stream(
    parity_stt_config: SttConfig, tmp_path: Path
) -> None:
    config = parity_stt_config
    path = tmp_path / "model.safetensors"
    write_random_stt(path, config, seed=3, dtype=torch.float32)
    codes = _codes(config, 2, STEPS, seed=1)
    ref_logits, ref_tokens, ref_heads = _moshi_run(config, path, codes)

    stt = Stt.from_checkpoint(path, config, "cpu", torch.float32)
    state = stt.new_state(2)
    for slot in range(2):
        stt.reset_slot(state, slot)
    changed = 0
    for t in range(STEPS):
        out = stt.step(state, codes[:, :, t], np.ones(2, bool), return_logits=True)
        assert out.text_logits is not None and out.head_probs is not None
        _rel_close(out.text_logits, ref_logits[t])
        _rel_close(out.head_probs, ref_heads[t])
        _rel_close(out.end_of_turn, ref_heads[t][:, config.end_of_turn_head, 0])
        assert torch.equal(out.text_tokens, ref_tokens[t])
        changed += int(t > 0 and not torch.equal(ref_tokens[t], ref_tokens[t - 1]))
    assert changed > STEPS // 4  # the tokens vary: the comparison is not of constants


def test_a_slot_joining_late_matches_a_fresh_run(
    parity_stt_config: SttConfig, tmp_path: Path
) -> None:
    """Slot 1 streams other audio, idles, then a new call joins at tick ``JOIN``: from then on
    it equals moshi's fresh batch-1 run on that call's audio; slot 0 never notices."""
    config = parity_stt_config
    path = tmp_path / "model.safetensors"
    write_random_stt(path, config, seed=4, dtype=torch.float32)
    join, steps = 23, 60
    codes = _codes(config, 1, steps, seed=2)
    before = _codes(config, 1, join, seed=5)
    late = _codes(config, 1, steps - join, seed=6)
    _, ref0, _ = _moshi_run(config, path, codes)
    ref_logits, ref1, ref_heads = _moshi_run(config, path, late)

    stt = Stt.from_checkpoint(path, config, "cpu", torch.float32)
    state = stt.new_state(2)
    stt.reset_slot(state, 0)
    stt.reset_slot(state, 1)
    for t in range(steps):
        active = np.array([True, t < join - 5 or t >= join])
        if t == join:
            stt.reset_slot(state, 1)
        other = before[:, :, t] if t < join else late[:, :, t - join]
        batch = torch.cat([codes[:, :, t], other], 0)
        out = stt.step(state, batch, active, return_logits=True)
        assert out.text_logits is not None and out.head_probs is not None
        assert int(out.text_tokens[0]) == int(ref0[t][0])
        if t >= join:
            _rel_close(out.text_logits[1:], ref_logits[t - join])
            _rel_close(out.head_probs[1:], ref_heads[t - join])
            assert int(out.text_tokens[1]) == int(ref1[t - join][0])
