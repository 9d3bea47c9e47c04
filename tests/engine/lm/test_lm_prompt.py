"""The persona prompt: layout of the four phases, and one parallel prefill == frame-by-frame.

The frame-by-frame reference is moshi 0.2.13's LMGen stepped one prompt frame at a time with
every token teacher-forced (as the public PersonaPlex generator steps its prompt phases): the
KV entries it leaves, the first live tokens and the next steps' logits must equal ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from voicegate.engine.base import SamplingParams
from voicegate.engine.lm import (
    LM,
    SILENCE_CODES,
    SINE_CODES,
    LMConfig,
    VoicePrompt,
    system_prompt_text,
    write_random_checkpoint,
)
from voicegate.engine.lm.prompt import SILENCE_FRAMES, build_prompt_frames, delayed_layout

GREEDY = SamplingParams(text_temperature=0.0, audio_temperature=0.0)


def test_system_prompt_text_wraps_in_tags_and_skips_empty() -> None:
    assert (
        system_prompt_text("  You are a bank teller. ")
        == "<system> You are a bank teller. <system>"
    )
    assert system_prompt_text("   ") == ""
    assert system_prompt_text(" <system> Hi. <system> ") == "<system> Hi. <system>"


def test_prompt_frames_follow_the_four_phases() -> None:
    config = LMConfig.tiny()
    voice = torch.arange(3 * 8).view(3, 8) + 100
    frames = build_prompt_frames(config, VoicePrompt.from_codes(voice), [7, 8])
    assert frames.shape == (17, 3 + 2 * SILENCE_FRAMES + 2)
    assert (frames[0, :9] == 3).all() and frames[0, 9:11].tolist() == [7, 8]
    assert (frames[0, 11:] == 3).all()
    assert torch.equal(frames[1:9, :3], voice.T)
    assert (frames[1:9, 3:] == torch.tensor(SILENCE_CODES)[:, None]).all()
    assert (frames[9:, :] == torch.tensor(SINE_CODES)[:, None]).all()


def test_delayed_layout_puts_frame_p_minus_delay_at_position_p() -> None:
    config = LMConfig.tiny()
    frames = torch.arange(17 * 5).view(17, 5)
    grid = delayed_layout(config, frames)
    assert grid.shape == (17, 6)
    for row, delay in enumerate(config.delays):
        initial = config.text_initial_id if row == 0 else config.audio_initial_id
        for p in range(6):
            if p <= delay:
                assert grid[row, p] == initial
            elif p - delay < 5:
                assert grid[row, p] == frames[row, p - delay]
            else:
                assert grid[row, p] == -2  # position N, undelayed rows: decided live


def _teacher_forced_reference(
    model: Any, grid: torch.Tensor, frames: torch.Tensor, live: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """moshi LMGen over the prompt frames (tokens forced), then live user frames [8, T]."""
    from moshi.models.lm import LMGen
    from moshi.utils.compile import no_compile

    n = frames.shape[1]
    text_logits: list[torch.Tensor] = []
    gen = LMGen(
        model,
        use_sampling=False,
        on_text_logits_hook=lambda t: text_logits.append(t[0, 0, 0].clone()),
    )
    outs = []
    with no_compile(), torch.no_grad(), gen.streaming(1):
        state = gen._streaming_state
        assert state is not None
        ct = state.cache.shape[-1]
        for t in range(n):
            gen.step(frames[9:, t].view(1, 8, 1))
            forced = grid[:9, t + 1]
            known = forced >= 0  # position N: text and semantic stay as sampled
            state.cache[0, :9, (t + 1) % ct] = torch.where(
                known, forced, state.cache[0, :9, (t + 1) % ct]
            )
        kv = torch.stack(
            [
                layer.self_attn._streaming_state.kv_cache.cache[:, 0, :, :n].clone()
                for layer in model.transformer.layers
            ]
        )
        first = state.cache[0, :2, n % ct].clone()
        for t in range(live.shape[1]):
            out = gen.step(live[:, t].view(1, 8, 1))
            assert out is not None  # every live frame is valid after the prompt
            outs.append(out[0, :, 0])
    return kv, text_logits[n:], outs, first


@pytest.mark.parametrize("text_tokens", [[5, 17, 250, 9], []])
def test_parallel_prefill_equals_frame_by_frame_prompt(
    parity_config: LMConfig,
    tmp_path: Path,
    moshi_lm: Callable[[LMConfig, int, Path], Any],
    rel_close: Callable[..., None],
    text_tokens: list[int],
) -> None:
    config = dataclasses.replace(parity_config, context=64)
    path = tmp_path / "eight.safetensors"
    write_random_checkpoint(path, config, dep_steps=8, seed=4, dtype=torch.float32)
    reference = moshi_lm(config, 8, path)
    lm = LM.from_checkpoint(path, config, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(9)
    voice = VoicePrompt.from_codes(torch.randint(0, config.audio_card, (5, 8), generator=gen))
    frames = build_prompt_frames(config, voice, text_tokens)
    grid = delayed_layout(config, frames)
    live = torch.randint(0, config.audio_card, (8, 6), generator=gen)
    ref_kv, ref_text, ref_out, ref_first = _teacher_forced_reference(reference, grid, frames, live)

    prompt = lm.prefill(voice, text_tokens)
    n = frames.shape[1]
    assert prompt.length == n
    rel_close(prompt.kv, ref_kv)
    # Loaded into one slot of three, beside slots doing something else.
    state = lm.new_state(3)
    for s in range(3):
        lm.reset_slot(state, s, GREEDY)
    lm.load_slot(state, 1, prompt, GREEDY)
    rel_close(state.kv[:, :, 1, :, :n], ref_kv)
    assert state.tokens[1, :2, n % config.token_cache_size].tolist() == ref_first.tolist()
    for t in range(live.shape[1]):
        user = torch.randint(0, config.audio_card, (3, 8), generator=gen)
        user[1] = live[:, t]
        out = lm.step(state, user, np.ones(3, bool), return_logits=True)
        assert out.text_logits is not None
        rel_close(out.text_logits[1], ref_text[t])
        assert bool(out.is_valid[1])
        assert out.text_tokens[1] == ref_out[t][0]
        assert torch.equal(out.agent_codes[1], ref_out[t][1:])


def test_preset_embeddings_give_the_same_state_as_codes(parity_config: LMConfig) -> None:
    """A .pt preset (embeddings of the first N-1 positions + the generator's cache) == its codes."""
    config = dataclasses.replace(parity_config, context=64)
    lm = LM.random(config, "cpu", torch.float32, seed=2)
    codes = torch.randint(0, config.audio_card, (6, 8), generator=torch.Generator().manual_seed(3))
    voice = VoicePrompt.from_codes(codes)
    grid = delayed_layout(config, build_prompt_frames(config, voice, [4, 5]))
    n_voice = codes.shape[0]
    with torch.inference_mode():
        embeddings = lm.model.embed_tokens(grid[None, :, : n_voice - 1])[0]
    cache = torch.full((1, 17, 4), -2, dtype=torch.long)  # the public generator's width
    for p in (n_voice - 1, n_voice):
        cache[0, :, p % 4] = grid[:, p]
    preset = VoicePrompt.from_preset(embeddings.reshape(n_voice - 1, 1, 1, -1), cache)
    assert preset.n_frames == n_voice
    a, b = lm.prefill(voice, [4, 5]), lm.prefill(preset, [4, 5])
    assert a.length == b.length
    torch.testing.assert_close(b.kv, a.kv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.hidden, a.hidden, rtol=1e-6, atol=1e-6)
    assert torch.equal(a.tokens, b.tokens)


def test_preset_file_round_trip(tmp_path: Path, parity_config: LMConfig) -> None:
    path = tmp_path / "NATF0.pt"
    torch.save(
        {
            "embeddings": torch.randn(4, 1, 1, parity_config.dim),
            "cache": torch.zeros(1, 17, 4, dtype=torch.long),
        },
        path,
    )
    assert VoicePrompt.load_preset(path).n_frames == 5
    torch.save({"wrong": 1}, path)
    from voicegate.errors import CheckpointError

    with pytest.raises(CheckpointError, match="NATF0.pt"):
        VoicePrompt.load_preset(path)


def test_prefill_longer_than_the_context_is_refused(parity_config: LMConfig) -> None:
    lm = LM.random(parity_config, "cpu", torch.float32)
    voice = VoicePrompt.from_codes(torch.zeros(parity_config.context, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        lm.prefill(voice, [])
