"""Parity of our LM step with moshi 0.2.13's LMGen (random weights, float32, CPU).

Both load the same 16-step release-layout checkpoint (moshi with all 16 steps; ours slices 8)
for the temporal part, and an 8-step moshi model drives ``LMGen.step`` exactly as a live call
does. Logits are compared per step to 1e-4 relative; greedy sampling keeps the tokens equal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import LM, LMConfig, write_random_checkpoint

GREEDY = SamplingParams(text_temperature=0.0, audio_temperature=0.0)
STEPS = 40  # > context (16): the KV ring wraps several times


def _moshi_gen_run(
    model: Any, user: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
    """Step moshi's LMGen over user codes [B, 8, T]: per step text logits, depformer logits, out."""
    from moshi.models.lm import LMGen
    from moshi.utils.compile import no_compile

    text_logits: list[torch.Tensor] = []
    dep_logits: list[torch.Tensor] = []
    outs: list[torch.Tensor | None] = []
    original = model.forward_depformer

    def capture(cb: int, seq: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = original(cb, seq, out)
        dep_logits.append(logits[:, 0, 0].clone())
        return logits

    model.forward_depformer = capture
    gen = LMGen(
        model,
        use_sampling=False,
        on_text_logits_hook=lambda t: text_logits.append(t[:, 0, 0].clone()),
    )
    with no_compile(), torch.no_grad(), gen.streaming(user.shape[0]):
        for t in range(user.shape[-1]):
            outs.append(gen.step(user[:, :, t : t + 1]))
    del model.forward_depformer
    dep_q = len(dep_logits) // user.shape[-1]
    per_step = [
        torch.stack(dep_logits[i * dep_q : (i + 1) * dep_q], 1) for i in range(user.shape[-1])
    ]
    return text_logits, per_step, outs


def test_step_matches_moshi_lmgen(
    parity_config: LMConfig,
    tmp_path: Path,
    moshi_lm: Callable[[LMConfig, int, Path], Any],
    rel_close: Callable[..., None],
) -> None:
    path = tmp_path / "moshi_layout.safetensors"
    write_random_checkpoint(path, parity_config, dep_steps=8, seed=3, dtype=torch.float32)
    reference = moshi_lm(parity_config, 8, path)
    lm = LM.from_checkpoint(path, parity_config, "cpu", torch.float32)
    batch = 2
    user = torch.randint(
        0, parity_config.audio_card, (batch, 8, STEPS), generator=torch.Generator().manual_seed(1)
    )
    ref_text, ref_audio, ref_out = _moshi_gen_run(reference, user)

    state = lm.new_state(batch)
    for slot in range(batch):
        lm.reset_slot(state, slot, GREEDY)
    for t in range(STEPS):
        out = lm.step(state, user[:, :, t], np.ones(batch, bool), return_logits=True)
        assert out.text_logits is not None and out.audio_logits is not None
        rel_close(out.text_logits, ref_text[t])
        rel_close(out.audio_logits, ref_audio[t])
        expected = ref_out[t]
        if expected is None:
            assert not out.is_valid.any()
        else:
            assert out.is_valid.all()
            assert torch.equal(out.text_tokens, expected[:, 0, 0])
            assert torch.equal(out.agent_codes, expected[:, 1:, 0])


def test_release_layout_depformer_steps_match_moshi_16_step_model(
    parity_config: LMConfig,
    release_checkpoint: Path,
    moshi_lm: Callable[[LMConfig, int, Path], Any],
    rel_close: Callable[..., None],
) -> None:
    """Our 8 served steps equal the first 8 steps of the released 16-step depformer."""
    from moshi.utils.compile import no_compile

    reference = moshi_lm(parity_config, 16, release_checkpoint)
    lm = LM.from_checkpoint(release_checkpoint, parity_config, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(
        0, parity_config.audio_card, (3, parity_config.num_codebooks, 6), generator=gen
    )
    codes[:, 0] = torch.randint(0, parity_config.text_card, (3, 6), generator=gen)
    with no_compile(), torch.no_grad():
        ref_hidden, ref_text = reference.forward_text(codes)
        hidden, _ = lm.model.temporal_prefill(lm.model.embed_tokens(codes[:1]))
        rel_close(hidden, ref_hidden[:1])
        rel_close(lm.model.text_logits(hidden), ref_text[:1, 0])
        last = ref_hidden[:, -1:]
        tokens = torch.randint(0, parity_config.audio_card, (3, 8), generator=gen)
        tokens[:, 0] = codes[:, 0, -1]
        dep_kv = torch.zeros(
            parity_config.dep_num_layers,
            2,
            3,
            parity_config.dep_num_heads,
            8,
            parity_config.dep_head_dim,
        )
        with reference.depformer.streaming(3):
            for step in range(8):
                expected = reference.forward_depformer(step, tokens[:, step, None, None], last)[
                    :, 0, 0
                ]
                rel_close(lm.model.depformer_step(step, last, tokens[:, step], dep_kv), expected)


@pytest.mark.parametrize("slot", [0, 2])
def test_each_slot_matches_a_batch_of_one_reference(
    parity_config: LMConfig,
    release_checkpoint: Path,
    moshi_lm: Callable[[LMConfig, int, Path], Any],
    rel_close: Callable[..., None],
    slot: int,
) -> None:
    """A slot that joins late (own positions) steps exactly like a fresh reference of batch 1."""
    path = release_checkpoint.parent / "eight.safetensors"
    if not path.exists():
        write_random_checkpoint(path, parity_config, dep_steps=8, seed=11, dtype=torch.float32)
    reference = moshi_lm(parity_config, 8, path)
    lm = LM.from_checkpoint(path, parity_config, "cpu", torch.float32)
    steps, late = 24, 7
    user = torch.randint(
        0,
        parity_config.audio_card,
        (3, 8, steps + late),
        generator=torch.Generator().manual_seed(2),
    )
    ref_text, _, ref_out = _moshi_gen_run(reference, user[slot : slot + 1, :, late:])
    state = lm.new_state(3)
    for s in range(3):
        lm.reset_slot(state, s, GREEDY)
    active = np.ones(3, bool)
    for t in range(steps + late):
        if t == late:
            lm.reset_slot(state, slot, GREEDY)
        out = lm.step(state, user[:, :, t], active, return_logits=True)
        if t >= late:
            assert out.text_logits is not None
            rel_close(out.text_logits[slot : slot + 1], ref_text[t - late])
            expected = ref_out[t - late]
            assert bool(out.is_valid[slot]) == (expected is not None)
            if expected is not None:
                assert torch.equal(out.agent_codes[slot], expected[0, 1:, 0])
