"""The model's constants, pinned to the literal values of shared/reference/personaplex.md.

The parity tests hand the project's own config to the oracle, so a wrong constant there passes
them (both sides use it). These tests write every value out by hand, as the reference page
states it, and check the engine's config, prompt builder and sampling defaults against it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from voicegate.engine.base import FRAME_MS, FRAME_SAMPLES, MODEL_RATE_HZ, SamplingParams
from voicegate.engine.lm import LMConfig, VoicePrompt, system_prompt_text
from voicegate.engine.lm.config import PERSONAPLEX_DELAYS
from voicegate.engine.lm.prompt import (
    SILENCE_CODES,
    SILENCE_FRAMES,
    SINE_CODES,
    build_prompt_frames,
    delayed_layout,
)
from voicegate.engine.lm.state import LMState
from voicegate.engine.mimi import MimiConfig
from voicegate.engine.tokenizer import EPAD_ID, PAD_ID
from voicegate.personas.schema import Sampling

# personaplex.md, "Architecture": rows text, agent semantic + 7 acoustic, user semantic + 7
REF_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
# personaplex.md, "The hybrid prompt"
REF_SINE = (430, 1268, 381, 1611, 1095, 1495, 56, 472)
REF_SILENCE = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)
REF_PAD, REF_EPAD = 3, 0
REF_TEXT_INITIAL, REF_AUDIO_INITIAL = 32000, 2048


def test_stream_delays() -> None:
    assert PERSONAPLEX_DELAYS == REF_DELAYS
    for config in (LMConfig.personaplex_7b(), LMConfig.tiny()):
        assert config.delays == REF_DELAYS
        assert config.num_codebooks == 17
        assert config.max_delay == 1
    assert REF_DELAYS[0] == 0 and REF_DELAYS[1] == 0 and REF_DELAYS[9] == 0  # semantic rows


def test_delayed_layout_puts_each_row_delay_frames_late() -> None:
    config = LMConfig.tiny()
    n = 5
    frames = torch.arange(17 * n, dtype=torch.long).view(17, n)
    grid = delayed_layout(config, frames)
    for row, delay in enumerate(REF_DELAYS):
        initial = config.text_card if row == 0 else config.audio_card  # tiny: own cards
        for p in range(n + 1):
            if p <= delay:
                assert grid[row, p] == initial, (row, p)
            elif p - delay < n:
                assert grid[row, p] == frames[row, p - delay], (row, p)


def test_special_tokens_and_7b_shapes() -> None:
    c = LMConfig.personaplex_7b()
    assert (c.text_padding_id, c.text_end_padding_id) == (REF_PAD, REF_EPAD)
    assert (PAD_ID, EPAD_ID) == (REF_PAD, REF_EPAD)
    assert (c.text_initial_id, c.audio_initial_id) == (REF_TEXT_INITIAL, REF_AUDIO_INITIAL)
    assert (c.text_card, c.audio_card, c.n_q, c.dep_q, c.dep_q_release) == (32000, 2048, 16, 8, 16)
    assert (c.dim, c.num_layers, c.num_heads, c.head_dim, c.ffn_inner) == (4096, 32, 32, 128, 11264)
    assert (c.dep_dim, c.dep_num_layers, c.dep_num_heads, c.dep_ffn_inner) == (1024, 6, 16, 2816)
    assert c.context == 3000 and c.max_period == 10000.0
    assert SINE_CODES == REF_SINE
    assert SILENCE_CODES == REF_SILENCE


def test_mimi_and_frame_constants() -> None:
    m = MimiConfig.release()
    assert (m.sample_rate_hz, m.frame_rate_hz, m.frame_samples) == (24000, 12.5, 1920)
    assert (m.transformer_context, m.n_q, m.n_q_semantic, m.n_q_served) == (250, 32, 1, 8)
    assert (m.codebook_size, m.hop_samples, m.latent_steps_per_frame) == (2048, 960, 2)
    assert (MODEL_RATE_HZ, FRAME_SAMPLES, FRAME_MS) == (24000, 1920, 80)


def test_system_wrapping() -> None:
    assert system_prompt_text("  You are a teller.  ") == "<system> You are a teller. <system>"
    assert system_prompt_text("") == ""
    assert system_prompt_text("   ") == ""
    assert system_prompt_text("<system> kept <system>") == "<system> kept <system>"


@pytest.mark.parametrize("n_text", [0, 4])
def test_prompt_phases(n_text: int) -> None:
    config = LMConfig.tiny()
    n_voice = 3
    voice_codes = torch.arange(n_voice * 8, dtype=torch.long).view(n_voice, 8) + 100
    text = list(range(500, 500 + n_text))
    frames = build_prompt_frames(config, VoicePrompt.from_codes(voice_codes), text)
    assert SILENCE_FRAMES == 6
    assert frames.shape == (17, n_voice + 6 + n_text + 6)
    sine = torch.tensor(REF_SINE)[:, None]
    silence = torch.tensor(REF_SILENCE)[:, None]
    assert (frames[9:] == sine).all()  # the caller's rows hear the sine in every phase
    # 1. voice: text PAD, agent = the voice's codes
    assert (frames[0, :n_voice] == REF_PAD).all()
    assert torch.equal(frames[1:9, :n_voice], voice_codes.T)
    # 2. 6 frames of silence
    assert (frames[0, n_voice : n_voice + 6] == REF_PAD).all()
    assert (frames[1:9, n_voice : n_voice + 6] == silence).all()
    # 3. the text prompt, one frame per token, agent silent
    start = n_voice + 6
    assert frames[0, start : start + n_text].tolist() == text
    assert (frames[1:9, start : start + n_text] == silence).all()
    # 4. 6 more frames of silence
    assert (frames[0, start + n_text :] == REF_PAD).all()
    assert (frames[1:9, start + n_text :] == silence).all()


def test_sampling_defaults() -> None:
    ref = (0.7, 25, 0.8, 250)  # text temperature, text top-k, audio temperature, audio top-k
    assert dataclasses.astuple(SamplingParams()) == ref
    spec = Sampling()
    assert (
        spec.text_temperature,
        spec.text_top_k,
        spec.audio_temperature,
        spec.audio_top_k,
    ) == ref
    state = LMState.allocate(LMConfig.tiny(), 2, torch.device("cpu"), torch.float32)
    for slot in range(2):
        got = (
            round(float(state.text_temperature[slot]), 6),
            int(state.text_top_k[slot]),
            round(float(state.audio_temperature[slot]), 6),
            int(state.audio_top_k[slot]),
        )
        assert got == ref
